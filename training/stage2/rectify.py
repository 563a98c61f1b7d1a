"""``python -m training rectify``: the iterative rectification loop over a JSONL of items.

    python -m training rectify --model SPEC --rm SPEC --k K --data FILE --out FILE
        [--version VERSION_DIR] [--concurrency N] [--max-new-tokens N] [--rm-vision]

Each of ``--model`` (M) and ``--rm`` is a spec (``training.stage2.generators``): ``URL#MODEL``
for an OpenAI-compatible endpoint, anything else a local folder or hub id.

Input rows: ``{"id", "question", image, "evidence"?}`` where the image is ``"image_path"`` (a
file; relative paths are tried against the data file's folder, then the working directory), or
``"uri"`` (a ``file://`` URL or path), or ``"image"`` (a sha256 resolved under ``--version``'s
``images/`` or its reference ``uri``). Rows without an image run text-only. ``"regions"`` (a
list of ``{phrase, box, caption}``) is turned into evidence text when ``"evidence"`` is absent.

Output: one JSON line per input row, in input order::

    {"id", "question", "final", "outcome": "accepted" | "max_steps", "revisions",
     "steps": [{"k", "response", "feedback", "m_latency_s", "rm_latency_s", "written_by"}],
     "model", "rm", "prompt_versions"}

A row that fails (bad JSON, missing image, a model call that fails for good) becomes
``{"id", "error": "..."}`` and the run goes on. Progress goes to stderr; the summary (items,
accepted, failed, mean revisions, mean M and RM milliseconds per call) to stdout as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.models_available import check_model
from training.stage2.generation import Generator
from training.stage2.generators import close_all, make_generator
from training.stage2.loop import Rectification, rectify
from training.stage2.prompts import evidence_text


class ItemError(ValueError):
    """An input row that cannot be run; the message says which field is wrong."""


@dataclass
class BadLine:
    """An input line that is not a row object; it still gets its output line, in order."""

    item_id: str
    message: str


@dataclass
class ImageResolver:
    """Finds the bytes of a row's image (see the module docstring for the three ways)."""

    data_dir: Path
    version: Any = None  # a DatasetVersion when --version is given

    def __call__(self, row: dict[str, Any]) -> bytes | None:
        if row.get("image_path"):
            path = Path(str(row["image_path"]))
            for candidate in [path] if path.is_absolute() else [self.data_dir / path, path]:
                if candidate.is_file():
                    return candidate.read_bytes()
            raise ItemError(f"image_path {str(path)!r} is not a readable file")
        if row.get("uri"):
            from training.data.layout import uri_path

            local = uri_path(str(row["uri"]), Path())  # relative: to the working directory
            if not local.is_file():
                raise ItemError(f"uri {row['uri']!r} is not a readable local file")
            return local.read_bytes()
        if row.get("image"):
            if self.version is None:
                raise ItemError('"image" is a sha256: pass --version VERSION_DIR to resolve it')
            try:
                return self.version.image_file(row, where=f"image {row['image']!r}").read_bytes()
            except ValueError as err:
                raise ItemError(str(err)) from err
        return None


def row_evidence(row: dict[str, Any]) -> str:
    """The RM's evidence text: ``evidence`` as given, else built from ``regions``."""
    if isinstance(row.get("evidence"), str):
        return str(row["evidence"])
    regions = row.get("regions")
    if isinstance(regions, list) and regions:
        try:
            return evidence_text(regions)
        except (KeyError, TypeError, ValueError) as err:
            raise ItemError(f"regions: {err!r} (each needs phrase, box, caption)") from err
    return ""


def result_row(item_id: Any, question: str, result: Rectification) -> dict[str, Any]:
    """The output line of one rectified item (the contract in the module docstring)."""
    out = result.as_dict()
    return {
        "id": item_id,
        "question": question,
        "final": out["final"],
        "outcome": out["outcome"],
        "revisions": result.revisions,
        "steps": out["steps"],
        "model": out["model"],
        "rm": out["rm"],
        "prompt_versions": out["prompt_versions"],
    }


@dataclass
class Summary:
    """Running totals for the progress lines and the final summary."""

    total: int
    done: int = 0
    accepted: int = 0
    failed: int = 0
    revisions: int = 0
    m_seconds: list[float] = field(default_factory=list)
    rm_seconds: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def add(self, row: dict[str, Any]) -> None:
        self.done += 1
        if "error" in row:
            self.failed += 1
            return
        self.accepted += row["outcome"] == "accepted"
        self.revisions += row["revisions"]
        for step in row["steps"]:
            if step["m_latency_s"] is not None:
                self.m_seconds.append(step["m_latency_s"])
            if step["rm_latency_s"] is not None:
                self.rm_seconds.append(step["rm_latency_s"])

    def as_dict(self) -> dict[str, Any]:
        succeeded = self.done - self.failed

        def mean_ms(values: list[float]) -> float | None:
            return round(1000 * sum(values) / len(values), 2) if values else None

        return {
            "items": self.done,
            "accepted": self.accepted,
            "max_steps": succeeded - self.accepted,
            "failed": self.failed,
            "mean_revisions": round(self.revisions / succeeded, 3) if succeeded else None,
            "mean_m_ms": mean_ms(self.m_seconds),
            "mean_rm_ms": mean_ms(self.rm_seconds),
            "m_calls": len(self.m_seconds),
            "rm_calls": len(self.rm_seconds),
            "seconds": round(time.perf_counter() - self.started, 3),
        }


def parse_rows(path: Path) -> list[dict[str, Any] | BadLine]:
    """Every line of the input: a row object, or the error that line has (kept in order)."""
    rows: list[dict[str, Any] | BadLine] = []
    with path.open(encoding="utf-8") as handle:
        for n, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                rows.append(BadLine(f"line-{n}", f"line {n}: not JSON ({err.msg})"))
                continue
            if not isinstance(row, dict):
                rows.append(BadLine(f"line-{n}", f"line {n}: expected an object"))
                continue
            row.setdefault("id", f"line-{n}")
            rows.append(row)
    return rows


async def rectify_rows(
    rows: list[dict[str, Any] | BadLine],
    *,
    m: Generator,
    rm: Generator,
    k: int,
    images: ImageResolver,
    out: Path,
    concurrency: int = 4,
    progress: Any = None,
) -> dict[str, Any]:
    """Rectify every row with at most ``concurrency`` items in flight; write the output lines
    in input order as soon as each prefix is complete. Returns the summary."""
    progress = progress or sys.stderr
    summary = Summary(total=len(rows))
    gate = asyncio.Semaphore(max(1, concurrency))
    finished: dict[int, dict[str, Any]] = {}
    next_to_write = 0

    async def one(index: int, row: dict[str, Any] | BadLine) -> None:
        if isinstance(row, BadLine):
            finished[index] = {"id": row.item_id, "error": row.message}
            return
        item_id = row.get("id")
        async with gate:
            try:
                question = row.get("question")
                if not isinstance(question, str) or not question.strip():
                    raise ItemError('"question" is missing or empty')
                image = await asyncio.to_thread(images, row)
                result = await rectify(
                    question=question, m=m, rm=rm, k=k, image=image, evidence=row_evidence(row)
                )
                finished[index] = result_row(item_id, question, result)
            except Exception as err:  # one bad item never stops the run
                finished[index] = {"id": item_id, "error": f"{type(err).__name__}: {err}"}

    with out.open("w", encoding="utf-8") as handle:

        def flush() -> None:
            nonlocal next_to_write
            while next_to_write in finished:
                line = finished.pop(next_to_write)
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                summary.add(line)
                next_to_write += 1
                status = line.get("outcome") or f"error: {line['error']}"
                print(
                    f"[{summary.done}/{summary.total}] {line['id']}: {status}",
                    file=progress,
                    flush=True,
                )
            handle.flush()

        tasks = [asyncio.create_task(one(i, row)) for i, row in enumerate(rows)]
        for task in asyncio.as_completed(tasks):
            await task
            flush()
        flush()
    return summary.as_dict()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training rectify",
        description="Run A_0 -> F_0 -> A_1 -> ... until the RM accepts or K revisions are done.",
        epilog=__doc__.split("\n\n", 3)[3] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="M: URL#MODEL endpoint, folder or hub id")
    p.add_argument("--rm", required=True, help="the RM: URL#MODEL endpoint, folder or hub id")
    p.add_argument("--k", type=int, required=True, help="most revisions per item (K)")
    p.add_argument("--data", required=True, help="input JSONL of items")
    p.add_argument("--out", required=True, help="output JSONL, one line per input row")
    p.add_argument("--version", help="dataset version folder that resolves 'image' sha256s")
    p.add_argument("--concurrency", type=int, default=4, help="items in flight at once")
    p.add_argument("--max-new-tokens", type=int, default=256, help="per M or RM call")
    p.add_argument("--rm-vision", action="store_true", help="also give the RM the image")
    p.add_argument("--device", default="auto", help="local models: auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="auto", help="local models: auto, bf16, fp16, fp32")
    p.add_argument(
        "--local-batch",
        type=int,
        default=1,
        help="local models: answer up to N concurrent calls in one batched generate "
        "(with --concurrency N; 1 keeps every call alone, bit-for-bit repeatable)",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="endpoints: seconds per call")
    return p


def make_pair(args: argparse.Namespace) -> tuple[Generator, Generator]:
    """M and the RM from the command line (each a local model or an endpoint)."""
    from training.stage2.generators import is_endpoint_spec

    def options(spec: str, vision: bool | None) -> dict[str, Any]:
        common: dict[str, Any] = {"max_new_tokens": args.max_new_tokens}
        if is_endpoint_spec(spec):
            return common | {"vision": bool(vision), "timeout": args.timeout}
        return common | {
            "vision": vision,
            "device": args.device,
            "dtype": args.dtype,
            "max_batch": args.local_batch,
        }

    # M is multimodal: endpoints get the image; local models decide from their config.
    m = make_generator(
        args.model, **options(args.model, True if is_endpoint_spec(args.model) else None)
    )
    rm = make_generator(args.rm, **options(args.rm, args.rm_vision))
    return m, rm


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    data = Path(args.data)
    if args.k < 0:
        print("error: --k must be 0 or more", file=sys.stderr)
        return 2
    if not data.is_file():
        print(f"error: --data {str(data)!r} is not a file", file=sys.stderr)
        return 2
    version = None
    if args.version:
        from training.data.version import DatasetVersion, DatasetVersionError

        try:
            version = DatasetVersion.open(args.version)
        except DatasetVersionError as err:
            print(f"error: --version: {err}", file=sys.stderr)
            return 2
    check_model(args.model, role="M (--model)")
    check_model(args.rm, role="the RM (--rm)")
    rows = parse_rows(data)
    m, rm = make_pair(args)

    async def run() -> dict[str, Any]:
        try:
            return await rectify_rows(
                rows,
                m=m,
                rm=rm,
                k=args.k,
                images=ImageResolver(data.resolve().parent, version),
                out=Path(args.out),
                concurrency=args.concurrency,
            )
        finally:
            await close_all(m, rm)

    summary = asyncio.run(run())
    print(
        f"{summary['items']} items: {summary['accepted']} accepted, {summary['max_steps']} at K, "
        f"{summary['failed']} failed; mean revisions {summary['mean_revisions']}, "
        f"M {summary['mean_m_ms']} ms/call, RM {summary['mean_rm_ms']} ms/call",
        file=sys.stderr,
    )
    print(json.dumps(summary))
    return 0
