"""The lmms-eval task folder of a probe set, ``<set>/lmms_eval/``: what lets the standard harness
score any model on the studio's probes, offline, in an environment without FGAM Studio.

    lmms_eval/
      task.yaml        the task: ``dataset_path: parquet`` over the file beside it
      probes.parquet   one row per probe, in probes.jsonl's order, the image bytes embedded
      utils.py         doc_to_visual / doc_to_text / process_results / aggregations
                       (a verbatim copy of ``training/probes/lmms_export_utils.py``)

Run it with ``lmms-eval --include_path <set>/lmms_eval --tasks <task name> --model ...``
(training/README.md, "Probe sets in lmms-eval").

Decisions:

- **The task name comes from the content, not the set id.** The folder is inside
  ``content_sha256``, and the same questions over the same images must hash the same whatever
  the set is called (``training.probes.layout``); a set id ("<UTC time>-<6 hex>") in the YAML
  would break that. The name is ``fgam_<kind>[_<split>]_<12 hex of probes.jsonl's sha256>``,
  safe for lmms-eval (``[a-z0-9_]``), unique per content, readable in its tables; the set id is
  in ``manifest.json`` next to it, and ``lmms_task_name(root)`` reads the name back.
- **Relative paths only.** ``data_files`` names ``probes.parquet`` relative to the YAML, which
  lmms-eval (0.7+) resolves against the YAML's folder at load time, so the folder can move.
  The images' ``path`` in the parquet is ``<sha256>.<ext>``, a format hint, never a location.
- **Deterministic bytes**: rows in probes.jsonl's order, a fixed Arrow schema with the
  ``datasets`` feature metadata (so ``image`` decodes to a PIL image), no compression (images
  are already compressed), fixed row groups, no timestamps anywhere. The same probes give the
  same bytes with the same pyarrow version (parquet records its writer's version string).
- **Images embedded per row**, as lmms-lab's POPE on the Hub does: an image asked about six
  times is stored six times. That costs space, but any ``datasets`` reader loads the parquet
  alone, with nothing to resolve. A reference-mode set embeds the bytes of its local ``uri``
  files; one whose images are remote cannot be exported (``finish(lmms_eval=False)``).
- **The prompt** is lmms-eval's POPE one ("\\nAnswer the question using a single word or
  phrase." after the question), greedy, 128 new tokens, so figures compare with lmms-eval's
  POPE tables.
- **Metrics**: ``strict_*`` are FORMATS.md's ``strict`` parser and ``binary_metrics`` (they
  equal ``python -m training bench``'s strict figures); ``pope_*`` are lmms-eval's own POPE
  figures computed by its ``lmms_eval.tasks.pope.utils`` functions (see lmms_export_utils.py).
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from training.probes.layout import Probe, ProbeSet, ProbeSetError

FOLDER = "lmms_eval"
TASK_FILE = "task.yaml"
PARQUET_FILE = "probes.parquet"
UTILS_FILE = "utils.py"
UTILS_SOURCE = "lmms_export_utils.py"  # in this package, copied as utils.py
ROW_GROUP_SIZE = 64  # rows per parquet row group: bounded memory for large images
POST_PROMPT = "\nAnswer the question using a single word or phrase."  # lmms-eval's POPE prompt

# Arrow schema and the `datasets` features it stands for (read from the schema metadata).
_STRING_COLUMNS = (
    "question_id",
    "question",
    "answer",
    "image_sha256",
    "kind",
    "split",
    "object",
    "subject",
    "relation",
)
SCHEMA = pa.schema(
    [
        *(pa.field(name, pa.string()) for name in _STRING_COLUMNS[:3]),
        pa.field("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        *(pa.field(name, pa.string()) for name in _STRING_COLUMNS[3:]),
    ]
)
_FEATURES = {
    **{name: {"dtype": "string", "_type": "Value"} for name in _STRING_COLUMNS},
    "image": {"_type": "Image"},
}
SCHEMA = SCHEMA.with_metadata(
    {"huggingface": json.dumps({"info": {"features": _FEATURES}}, sort_keys=True)}
)

_METRICS = (
    # (metric, aggregation in utils.py, higher_is_better)
    ("strict_accuracy", True),
    ("strict_precision", True),
    ("strict_recall", True),
    ("strict_f1", True),
    ("strict_yes_ratio", False),
    ("strict_unparsed", False),
    ("pope_accuracy", True),
    ("pope_precision", True),
    ("pope_recall", True),
    ("pope_f1_score", True),
    ("pope_yes_ratio", False),
)


def task_name(probes: list[Probe], probes_sha256: str) -> str:
    """``fgam_<kind>[_<split>]_<12 hex>``: the split is left out when it repeats the kind
    ("spatial") and is ``mixed`` when the set holds several.

    >>> p = Probe(id="0", image="a" * 64, question="Is there a dog?", answer="yes",
    ...           kind="pope", split="popular", object="dog")
    >>> task_name([p], "0123456789abcdef")
    'fgam_pope_popular_0123456789ab'
    >>> task_name([], "0123456789abcdef")
    'fgam_probes_0123456789ab'
    """
    kinds = sorted({p.kind for p in probes})
    splits = sorted({p.split for p in probes})
    kind = kinds[0] if len(kinds) == 1 else "probes"
    split = splits[0] if len(splits) == 1 else "mixed"
    parts = ["fgam", kind] + ([] if split == kind or not probes else [split])
    return "_".join([*parts, probes_sha256[:12]])


def write_lmms_task(root: str | Path, set_id: str) -> str:
    """Write ``root/lmms_eval/`` from ``root/probes.jsonl`` and the images; return the task name.

    ``set_id`` is only used in error messages: the folder's bytes must not depend on it (see
    the module docstring)."""
    root = Path(root)
    source = ProbeSet(root, {"id": set_id})
    probes = list(source.probes())
    if not probes:
        raise ProbeSetError(f"probe set {set_id}: no probes, so no lmms-eval task")
    probes_sha256 = hashlib.sha256((root / "probes.jsonl").read_bytes()).hexdigest()
    name = task_name(probes, probes_sha256)
    folder = root / FOLDER
    folder.mkdir(exist_ok=True)
    _write_parquet(source, probes, folder / PARQUET_FILE, set_id)
    (folder / UTILS_FILE).write_bytes(
        resources.files("training.probes").joinpath(UTILS_SOURCE).read_bytes()
    )
    (folder / TASK_FILE).write_text(task_yaml(name), encoding="utf-8", newline="\n")
    return name


def lmms_task_name(root: str | Path) -> str:
    """The task name a probe set's ``lmms_eval/task.yaml`` declares (what ``--tasks`` takes)."""
    for line in (Path(root) / FOLDER / TASK_FILE).read_text(encoding="utf-8").splitlines():
        if line.startswith("task: "):
            return line.removeprefix("task: ").strip()
    raise ProbeSetError(f"{root}: {FOLDER}/{TASK_FILE} names no task")


def _write_parquet(source: ProbeSet, probes: list[Probe], path: Path, set_id: str) -> None:
    columns: dict[str, list[object]] = {field.name: [] for field in SCHEMA}
    cache: dict[str, dict[str, object]] = {}
    for probe in probes:
        if probe.image not in cache:
            try:
                image_path = source.image_path(probe)
                data = image_path.read_bytes()
            except OSError as err:
                raise ProbeSetError(
                    f"probe set {set_id}, probe {probe.id}: the lmms-eval task embeds the image "
                    f"bytes, and {probe.uri or probe.image[:12]} cannot be read ({err}); "
                    "build a set with remote images with finish(lmms_eval=False)"
                ) from err
            cache[probe.image] = {"bytes": data, "path": f"{probe.image}{image_path.suffix}"}
        row = {
            "question_id": probe.id,
            "question": probe.question,
            "answer": probe.answer,
            "image": cache[probe.image],
            "image_sha256": probe.image,
            "kind": probe.kind,
            "split": probe.split,
            "object": probe.object,
            "subject": probe.subject,
            "relation": probe.relation,
        }
        for key, value in row.items():
            columns[key].append(value)
    table = pa.Table.from_pydict(columns, schema=SCHEMA)
    pq.write_table(
        table,
        path,
        row_group_size=ROW_GROUP_SIZE,
        compression="none",
        use_dictionary=False,
        write_statistics=False,
    )


def task_yaml(name: str) -> str:
    """The task YAML, as fixed text (no YAML library: the web app does not depend on one)."""
    metrics = "".join(
        f"  - metric: {metric}\n"
        f"    aggregation: !function utils.{metric}\n"
        f"    higher_is_better: {str(higher).lower()}\n"
        for metric, higher in _METRICS
    )
    return (
        "# lmms-eval task of an FGAM Studio probe set (written by training.probes.lmms_task).\n"
        f"# lmms-eval --include_path <this folder> --tasks {name} --model ... --model_args ...\n"
        f"task: {name}\n"
        "dataset_path: parquet\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"    test: {PARQUET_FILE}\n"
        "test_split: test\n"
        "output_type: generate_until\n"
        "doc_to_visual: !function utils.doc_to_visual\n"
        "doc_to_text: !function utils.doc_to_text\n"
        "doc_to_target: answer\n"
        "generation_kwargs:\n"
        "  max_new_tokens: 128\n"
        "  temperature: 0\n"
        "  top_p: 1.0\n"
        "  num_beams: 1\n"
        "  do_sample: false\n"
        "process_results: !function utils.process_results\n"
        "metric_list:\n"
        f"{metrics}"
        "lmms_eval_specific_kwargs:\n"
        "  default:\n"
        '    pre_prompt: ""\n'
        f"    post_prompt: {json.dumps(POST_PROMPT)}\n"
        "metadata:\n"
        "  version: 1\n"
    )
