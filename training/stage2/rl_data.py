"""The RL prompts of a dataset version, as the ``datasets.Dataset`` TRL's ``GRPOTrainer`` reads.

One row per prompt: ``prompt`` (one user turn: ``prompts.revision_prompt(Q, A_k, F_k)`` for a
``stage2/sft.jsonl`` row, ``prompts.answer_prompt(Q)`` for a ``stage2/rl_prompts.jsonl`` row),
``image`` (decoded lazily from its local path) and the columns the rewards read: ``question``,
``evidence`` (the RM's evidence text for the image) and ``image_path`` (for a vision RM).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from training.config import ConfigError
from training.stage2.prompts import answer_prompt, revision_prompt

if TYPE_CHECKING:
    from training.stage2.config import RLConfig


def image_paths(version: Any, shas: set[str]) -> dict[str, str]:
    """Local paths of the images ``shas`` (``DatasetVersion.image_file``): ``images/`` of the
    version, else the ``uri`` of their Stage-1 records (reference mode: the web export's RL
    prompt rows carry no uri of their own). Images found neither way are left out."""
    from contextlib import suppress

    from training.data.version import DatasetVersionError

    found: dict[str, str] = {}
    for sha in shas:
        with suppress(DatasetVersionError):  # not under images/: its uri may be, below
            found[sha] = str(version.image_file({"image": sha}))
    missing = shas - found.keys()
    if missing:
        for record in version.stage1_records():
            if record.record.get("image") in missing and record.uri:
                with suppress(DatasetVersionError):  # remote: build_dataset names what is missing
                    found[record.record["image"]] = str(version.image_file(record.record))
    return found


def evidence_by_image(version: Any, shas: set[str]) -> dict[str, str]:
    """The RM's evidence text per image: as written in ``stage2/rm.jsonl`` (what the RM was
    trained on), else built from the image's Stage-1 regions with ``prompts.evidence_text``."""
    from training.data.version import DatasetVersionError
    from training.stage2.prompts import evidence_text

    evidence: dict[str, str] = {}
    try:
        for row in version.stage2("rm"):
            sha = row.get("image")
            if sha in shas and sha not in evidence and row.get("evidence"):
                evidence[sha] = str(row["evidence"])
    except DatasetVersionError:
        pass  # no rm.jsonl: every image takes the Stage-1 route below
    missing = shas - evidence.keys()
    if missing:
        regions: dict[str, list[dict[str, Any]]] = {}
        for record in version.stage1_records():
            sha = record.record.get("image")
            if sha in missing:
                regions[sha] = sorted(record.record.get("regions", []), key=lambda r: r["id"])
        evidence |= {sha: evidence_text(rs) for sha, rs in regions.items()}
    return evidence


def rl_rows(version: Any, source: str) -> list[dict[str, Any]]:
    """``{"row", "image", "question", "text"}`` per RL prompt, in file order; a row missing a
    field the prompt needs is a ``DatasetVersionError`` naming the file and row."""
    from training.data.version import DatasetVersionError

    rows: list[dict[str, Any]] = []
    files = ["sft", "rl_prompts"] if source == "both" else [source]
    for name in files:
        needed = (
            ("image", "question", "response", "feedback")
            if name == "sft"
            else ("image", "question")
        )
        for number, row in enumerate(version.stage2(name), start=1):
            absent = [key for key in needed if not isinstance(row.get(key), str)]
            if absent:
                raise DatasetVersionError(
                    f"{version.root}/stage2/{name}.jsonl row {number}: missing or not text: "
                    f"{', '.join(absent)}"
                )
            text = (
                revision_prompt(row["question"], row["response"], row["feedback"])
                if name == "sft"
                else answer_prompt(row["question"])
            )
            rows.append(
                {
                    "row": f"{name}:{number}",
                    "image": row["image"],
                    "question": row["question"],
                    "text": text,
                }
            )
    return rows


def build_dataset(version: Any, config: RLConfig) -> Any:
    """A ``datasets.Dataset`` in TRL's conversational vision shape: ``prompt`` (one user turn),
    ``image`` (decoded lazily from its path) and the reward columns ``question``, ``evidence``,
    ``image_path``."""
    from datasets import Dataset
    from datasets import Image as ImageFeature

    rows = rl_rows(version, config.prompts)
    if config.max_samples:
        rows = rows[: config.max_samples]
    if not rows:
        raise ConfigError(f"{version.root}: no RL prompts in stage2/ for prompts={config.prompts}")
    shas = {r["image"] for r in rows}
    paths = image_paths(version, shas)
    absent = sorted(shas - paths.keys())
    if absent:
        first = next(r for r in rows if r["image"] == absent[0])
        raise ConfigError(
            f"{version.root}: {len(absent)} image(s) not found locally, e.g. {absent[0]} "
            f"({first['row']}); fetch reference-mode images before training"
        )
    evidence = evidence_by_image(version, shas) if config.rm_weight > 0 else {}
    dataset = Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": r["text"]}] for r in rows],
            "image": [paths[r["image"]] for r in rows],
            "image_path": [paths[r["image"]] for r in rows],
            "question": [r["question"] for r in rows],
            "evidence": [evidence.get(r["image"], "") for r in rows],
        }
    )
    return dataset.cast_column("image", ImageFeature())


def prompt_lengths(dataset: Any, processor: Any) -> list[int]:
    """Tokens of each prompt as M sees it: its chat template, with the image token expanded
    to the image's features (measured once on the first row; LLaVA resizes every image to the
    same size, so the expansion is the same for all)."""
    texts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": c}]}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for c in (p[0]["content"] for p in dataset["prompt"])
    ]
    tokenizer = getattr(processor, "tokenizer", processor)
    plain = tokenizer(texts, add_special_tokens=False)["input_ids"]
    first = processor(images=[dataset[0]["image"]], text=[texts[0]], add_special_tokens=False)
    expansion = len(first["input_ids"][0]) - len(plain[0])
    return [len(ids) + expansion for ids in plain]


def drop_long_prompts(dataset: Any, processor: Any, config: RLConfig) -> tuple[Any, int]:
    """``(dataset, rows dropped)``: rows whose prompt plus ``max_new_tokens`` exceeds
    ``max_length`` are left out (TRL does not truncate prompts, and cutting one would cut the
    image tokens or the feedback it must act on)."""
    budget = config.max_length - config.max_new_tokens
    keep = [i for i, n in enumerate(prompt_lengths(dataset, processor)) if n <= budget]
    if not keep:
        raise ConfigError(
            f"max_length={config.max_length}: no prompt fits with max_new_tokens="
            f"{config.max_new_tokens}; raise max_length"
        )
    return dataset.select(keep), len(dataset) - len(keep)
