"""The lmms-eval bridge: a probe set's ``lmms_eval/`` folder, loaded and scored by the real
lmms-eval from PyPI in its own environment (``make lmms-env`` builds ``.venv-lmms``).

The scripted answers below cover every way an answer is read: "Yes." (strict yes, but wrong for
lmms-eval's stock POPE exact match), "There is no dog." and garbage (unparsed), " NO ". The
figures are worked out by hand in ``HAND``; lmms-eval's ``strict_*`` figures must equal them and
``binary_metrics`` with the ``strict`` parser.

Without ``.venv-lmms`` the lmms-eval test skips, unless ``FGAM_REQUIRE_LMMS=1`` or
``FGAM_REQUIRE_SERVICES=1`` (CI), where it fails.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import io
import json
import math
import os
import random
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow.parquet as pq
import pytest
from PIL import Image

from training.probes.layout import Probe, ProbeSet, ProbeSetError, ProbeSetWriter
from training.probes.lmms_task import lmms_task_name, write_lmms_task
from training.probes.metrics import binary_metrics
from training.probes.parsers import PARSERS

ROOT = Path(__file__).resolve().parents[3]
REPLAY = Path(__file__).with_name("lmms_replay.py")
LMMS_PYTHON = Path(os.environ.get("FGAM_LMMS_PYTHON", ROOT / ".venv-lmms" / "bin" / "python"))
REQUIRE_LMMS = "1" in (os.environ.get("FGAM_REQUIRE_LMMS"), os.environ.get("FGAM_REQUIRE_SERVICES"))

# Three images told apart by size and colour, so the test sees which one lmms-eval handed over.
IMAGES = [((8, 6), (255, 0, 0)), ((5, 7), (0, 128, 0)), ((4, 4), (0, 0, 255))]
# (gold, scripted answer); probe n asks about image n % 3.
SCRIPT = [
    ("yes", "Yes."),  # strict yes: TP          lmms-eval POPE: "yes." matches nothing
    ("yes", "yes"),  # TP                       POPE: TP
    ("yes", "There is no dog."),  # unparsed, a miss  POPE: neither yes nor no
    ("yes", "no"),  # FN                        POPE: FN
    ("no", "no"),  # TN                         POPE: correct
    ("no", "No."),  # TN                        POPE: "no." wrong, not a positive
    ("no", "Yes"),  # FP                        POPE: FP
    ("no", "%$#@ garbage"),  # unparsed         POPE: wrong
    ("no", " NO "),  # TN                       POPE: correct
]
# strict: TP 2, FP 1, TN 3, FN 2 (one of them unparsed), 2 unparsed, 7 parsed of which 3 yes.
# POPE (exact match on lower().strip()): correct 1, 4, 8; TP 1, FP 1 (6), FN 1 (3, said "no").
HAND = {
    "strict_accuracy": 5 / 9,
    "strict_precision": 2 / 3,
    "strict_recall": 2 / 4,
    "strict_f1": 2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2),  # 4/7
    "strict_yes_ratio": 3 / 7,
    "strict_unparsed": 2,
    "pope_accuracy": 3 / 9,
    "pope_precision": 1 / 2,
    "pope_recall": 1 / 2,
    "pope_f1_score": 1 / 2,
    "pope_yes_ratio": 4 / 9,  # lmms-eval's POPE yes-ratio is the share of *gold* yes
}


def _png(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def build_set(folder: Path, set_id: str = "20261203T000000Z-abcdef") -> dict[str, Any]:
    with ProbeSetWriter(folder) as out:
        shas = []
        for size, colour in IMAGES:
            data = _png(size, colour)
            shas.append(hashlib.sha256(data).hexdigest())
            out.add_image(shas[-1], data, "png")
        for n, (gold, _) in enumerate(SCRIPT):
            out.add(
                Probe(
                    id=str(n),
                    image=shas[n % len(shas)],
                    question=f"Is there a thing{n} in the image?",
                    answer=gold,
                    kind="pope",
                    split="random",
                    object=f"thing{n}",
                )
            )
        return out.finish({"id": set_id, "kind": "pope", "split": "random", "seed": 0})


def load_utils(folder: Path) -> ModuleType:
    """The exported ``utils.py``, imported from the probe set as lmms-eval imports it."""
    spec = importlib.util.spec_from_file_location("exported_utils", folder / "lmms_eval/utils.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_task_folder_is_written_with_a_safe_name(tmp_path):
    build_set(tmp_path / "set")
    files = sorted(p.name for p in (tmp_path / "set" / "lmms_eval").iterdir())
    assert files == ["probes.parquet", "task.yaml", "utils.py"]
    name = lmms_task_name(tmp_path / "set")
    assert name.startswith("fgam_pope_random_") and len(name) == len("fgam_pope_random_") + 12
    assert name.replace("_", "").isalnum() and name == name.lower()


def test_the_folder_has_the_same_bytes_wherever_and_whatever_it_is_called(tmp_path):
    a = build_set(tmp_path / "a", set_id="20261203T000000Z-a1b2c3")
    b = build_set(tmp_path / "elsewhere" / "b", set_id="20261204T101010Z-bbbbbb")
    assert a["content_sha256"] == b["content_sha256"]
    for path in sorted((tmp_path / "a" / "lmms_eval").iterdir()):
        data = path.read_bytes()
        assert data == (tmp_path / "elsewhere" / "b" / "lmms_eval" / path.name).read_bytes()
        # No path of the machine that built it, and not the set id either.
        assert str(tmp_path).encode() not in data and b"a1b2c3" not in data, path.name


def test_the_parquet_holds_every_probe_in_order_with_its_image_bytes(tmp_path):
    build_set(tmp_path / "set")
    probe_set = ProbeSet.open(tmp_path / "set", verify=True)
    table = pq.read_table(tmp_path / "set" / "lmms_eval" / "probes.parquet")
    rows = table.to_pylist()
    probes = list(probe_set.probes())
    assert [r["question_id"] for r in rows] == [p.id for p in probes]
    assert [(r["question"], r["answer"], r["object"]) for r in rows] == [
        (p.question, p.answer, p.object) for p in probes
    ]
    for row, probe in zip(rows, probes, strict=True):
        assert row["image"]["bytes"] == probe_set.image_bytes(probe)
        assert hashlib.sha256(row["image"]["bytes"]).hexdigest() == probe.image
        assert row["image"]["path"] == f"{probe.image}.png"
    features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert features["image"] == {"_type": "Image"}


def test_a_reference_set_embeds_its_local_files_and_refuses_remote_ones(tmp_path):
    image = tmp_path / "pictures" / "red.png"
    image.parent.mkdir()
    image.write_bytes(_png((3, 3), (255, 0, 0)))
    sha = hashlib.sha256(image.read_bytes()).hexdigest()
    probe = Probe(id="0", image=sha, question="Is there a dog in the image?", answer="no",
                  kind="pope", split="random", object="dog", uri=image.as_uri())  # fmt: skip
    with ProbeSetWriter(tmp_path / "ref", reference=True) as out:
        out.add(probe)
        out.finish({"id": "ref", "kind": "pope", "split": "random", "seed": 0})
    rows = pq.read_table(tmp_path / "ref" / "lmms_eval" / "probes.parquet").to_pylist()
    assert rows[0]["image"]["bytes"] == image.read_bytes()

    remote = Probe(**{**probe.record(), "uri": "s3://bucket/red.png"})
    with ProbeSetWriter(tmp_path / "remote", reference=True) as out:
        out.add(remote)
        with pytest.raises(ProbeSetError, match="embeds the image bytes"):
            out.finish({"id": "remote", "kind": "pope", "split": "random", "seed": 0})


def test_an_empty_set_has_no_task(tmp_path):
    (tmp_path / "probes.jsonl").write_text("")
    with pytest.raises(ProbeSetError, match="no probes"):
        write_lmms_task(tmp_path, "empty")


def test_the_exported_utils_import_nothing_from_the_project(tmp_path):
    build_set(tmp_path / "set")
    tree = ast.parse((tmp_path / "set" / "lmms_eval" / "utils.py").read_text())
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__", "collections", "typing", "lmms_eval"}, imported


def test_the_exported_strict_rule_is_the_projects(tmp_path):
    build_set(tmp_path / "set")
    utils = load_utils(tmp_path / "set")
    texts = ["Yes", "yes", " no ", "Yes.", "NO.", "yes..", "yes!", "Yes, it is", " yes . ",
             "", ".", "no\n", "\tYES.\t", "No. ", "n o", "yes.no", "\uff39es", "nO .", "maybe",
             "There is no dog.", "not", "yes\n.", "..no"]  # fmt: skip
    for text in texts:
        assert utils.parse_strict(text) == PARSERS["strict"](text), repr(text)
    rng = random.Random(0)
    for n in [0, 1, 2, 5, 40, 40, 40, 200]:
        gold = [rng.choice(["yes", "no"]) for _ in range(n)]
        parsed = [rng.choice(["yes", "no", None]) for _ in range(n)]
        ours = binary_metrics(gold, parsed)
        exported = utils.strict_metrics(
            [{"gold": g, "parsed": p} for g, p in zip(gold, parsed, strict=True)]
        )
        for key in ("accuracy", "precision", "recall", "f1", "unparsed"):
            assert exported[key] == pytest.approx(ours[key]), (n, key)
        if ours["yes_ratio"] is None:
            assert math.isnan(exported["yes_ratio"])
        else:
            assert exported["yes_ratio"] == pytest.approx(ours["yes_ratio"])


def test_the_hand_figures_are_binary_metrics_with_the_strict_parser():
    gold = [g for g, _ in SCRIPT]
    parsed = [PARSERS["strict"](text) for _, text in SCRIPT]
    ours = binary_metrics(gold, parsed)
    for key in ("accuracy", "precision", "recall", "f1", "yes_ratio", "unparsed"):
        assert ours[key] == pytest.approx(HAND[f"strict_{key}"]), key


def _lmms_python() -> Path:
    if LMMS_PYTHON.is_file():
        return LMMS_PYTHON
    reason = f"lmms-eval's environment is missing ({LMMS_PYTHON}): run `make lmms-env`"
    if REQUIRE_LMMS:
        pytest.fail(f"FGAM_REQUIRE_LMMS=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def run_lmms(args: list[str], tmp_path: Path) -> None:
    """Run lmms-eval's Python offline, isolated (``-I``: it sees neither this checkout nor
    PYTHONPATH, as on another machine), with its caches under ``tmp_path``."""
    python = _lmms_python()
    work = tmp_path / "cwd"
    work.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "TOKENIZERS_PARALLELISM": "false",
    }
    done = subprocess.run(
        [str(python), "-I", *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]


def moved_set(tmp_path: Path) -> ProbeSet:
    """A probe set built in one folder and then moved, as a set is renamed into place or
    copied to a GPU machine: its task must load from where it is now."""
    build_set(tmp_path / "built")
    shutil.move(tmp_path / "built", tmp_path / "moved")
    return ProbeSet.open(tmp_path / "moved", verify=True)


def test_lmms_eval_scores_the_exported_task_like_the_scorer(tmp_path):
    _lmms_python()
    probe_set = moved_set(tmp_path)
    name = lmms_task_name(probe_set.root)
    job = {
        "include_path": str(probe_set.root / "lmms_eval"),
        "task": name,
        "answers": {str(n): text for n, (_, text) in enumerate(SCRIPT)},
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    run_lmms([str(REPLAY), str(tmp_path / "job.json"), str(tmp_path / "out.json")], tmp_path)
    out = json.loads((tmp_path / "out.json").read_text())

    results = {key.removesuffix(",none"): value for key, value in out["results"].items()}
    for metric, expected in HAND.items():
        assert results[metric] == pytest.approx(expected), metric
    gold = [g for g, _ in SCRIPT]
    ours = binary_metrics(gold, [PARSERS["strict"](text) for _, text in SCRIPT])
    assert results["strict_accuracy"] == pytest.approx(ours["accuracy"])
    assert results["strict_f1"] == pytest.approx(ours["f1"])
    assert out["n"]["effective"] == len(SCRIPT)

    # Every probe reached the model with its own question and its own image.
    probes = {p.id: p for p in probe_set.probes()}
    assert sorted(out["seen"], key=int) == sorted(probes, key=int)
    for qid, seen in out["seen"].items():
        size, colour = IMAGES[int(qid) % len(IMAGES)]
        assert seen["prompt"].startswith(probes[qid].question)
        assert seen["prompt"].endswith("Answer the question using a single word or phrase.")
        assert (tuple(seen["size"]), tuple(seen["pixel"]), seen["mode"]) == (size, colour, "RGB")


def test_the_documented_command_line_scores_the_task(tmp_path):
    """training/README.md's command, with lmms-eval's own ``dummy`` model answering "yes"."""
    _lmms_python()
    probe_set = moved_set(tmp_path)
    name = lmms_task_name(probe_set.root)
    folder = probe_set.root / "lmms_eval"
    run_lmms(
        ["-m", "lmms_eval", "--model", "dummy", "--model_args", "response=yes",
         "--tasks", name, "--include_path", str(folder), "--batch_size", "1",
         "--output_path", str(tmp_path / "lmms-out")],
        tmp_path,
    )  # fmt: skip
    (path,) = (tmp_path / "lmms-out").rglob("*_results.json")
    results = json.loads(path.read_text())["results"][name]
    gold = [g for g, _ in SCRIPT]
    ours = binary_metrics(gold, ["yes"] * len(gold))
    # All yes: accuracy = precision = 4/9 gold yes, recall 1, F1 = 2(4/9)/(1 + 4/9) = 8/13.
    assert (ours["accuracy"], ours["recall"], ours["f1"]) == pytest.approx((4 / 9, 1, 8 / 13))
    for key in ("accuracy", "precision", "recall", "f1", "yes_ratio", "unparsed"):
        assert results[f"strict_{key},none"] == pytest.approx(ours[key]), key
    assert results["pope_f1_score,none"] == pytest.approx(8 / 13)
