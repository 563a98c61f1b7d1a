"""A tiny Table 2 study on CPU: a synthetic dataset version with Stage-1 regions and Stage-2
rows, a tiny CLIP whose vision half fits the tiny LLaVA (32 px, 8 px patches, width 64), a
tiny text RM, and the benchmarks' small probe set, all built with the project's builders."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks.fixtures import write_probe_folder
from tests.training.stage2.conftest import write_stage2_version
from webapp.exports.models import DatasetVersion
from webapp.probes.models import ProbeSet

# Settings that keep every arm to a few seconds on a CPU.
QUICK_SETTINGS = {
    "stage1": {
        "max_steps": 2, "batch_size": 4, "warmup_steps": 0, "log_every": 1,
        "save_every": 1000, "num_workers": 0, "holdout_fraction": 0.25, "eval_max_images": 4,
        "relation_hidden": 16, "max_text_tokens": 32, "device": "cpu", "lr": 1e-2,
    },
    "sft": {
        "max_steps": 2, "batch_size": 2, "grad_accum": 1, "warmup_steps": 0, "log_every": 1,
        "lora": "false", "device": "cpu", "lr": 1e-3,
    },
    "rl": {
        "max_steps": 1, "batch_size": 2, "num_generations": 2, "max_new_tokens": 6,
        "lora": "false", "rm_max_new_tokens": 6, "device": "cpu",
    },
    "bench": {"batch_size": 8, "max_new_tokens": 4},
}  # fmt: skip


@pytest.fixture(scope="session")
def study_models(tmp_path_factory) -> dict[str, Path]:
    from training.stage1.tiny import make_tiny_clip
    from training.stage2.tiny import build_tiny_llava, build_tiny_text_lm

    root = tmp_path_factory.mktemp("study-models")
    return {
        "clip": make_tiny_clip(root / "clip", image_size=32),
        "llava": build_tiny_llava(root / "llava"),
        "rm": build_tiny_text_lm(root / "rm"),
    }


@pytest.fixture(scope="session")
def study_version_dir(tmp_path_factory) -> Path:
    return write_stage2_version(tmp_path_factory.mktemp("study-version") / "v1", images=12)


@pytest.fixture
def study_version(study_version_dir) -> DatasetVersion:
    import json

    manifest = json.loads((study_version_dir / "manifest.json").read_text())
    return DatasetVersion.objects.create(
        name="study-v1", status=DatasetVersion.Status.READY,
        storage=DatasetVersion.Storage.PATH, location=str(study_version_dir),
        content_sha256=manifest["content_sha256"], manifest=manifest,
    )  # fmt: skip


@pytest.fixture
def study_probe_set(tmp_path) -> ProbeSet:
    root = tmp_path / "probes" / "study-pope"
    manifest = write_probe_folder(root, set_id="study-pope")
    return ProbeSet.objects.create(
        set_id="study-pope", kind="pope", split="random", status=ProbeSet.Status.READY,
        path=str(root), content_sha256=manifest["content_sha256"], counts=manifest["counts"],
        manifest=manifest,
    )  # fmt: skip


@pytest.fixture
def study_dirs(tmp_path, settings) -> Path:
    settings.FGAM_TRAINING_DIR = str(tmp_path / "runs")
    settings.FGAM_BENCHMARK_DIR = str(tmp_path / "benchmarks")
    return tmp_path


def study_spec(name: str, models: dict[str, Path], probe_set: ProbeSet, arms="table2") -> dict:
    return {
        "name": name, "version": "study-v1", "model": str(models["llava"]),
        "rm": str(models["rm"]), "clip": str(models["clip"]), "arms": arms,
        "probe_sets": [probe_set.set_id], "settings": QUICK_SETTINGS,
    }  # fmt: skip


# The shared fixture of the workers' tests: a real worker process on Redis.
from tests.workers.conftest import start_celery_worker  # noqa: E402, F401
