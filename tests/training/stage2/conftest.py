"""Stage-2 fixtures shared by the SFT/RM/rectify tests and the RL tests: a tiny random LLaVA
(M), a tiny text Llama with a chat template (RM), and a small synthetic dataset version whose
``stage2/rm.jsonl`` also teaches stopping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.data.layout import content_sha256
from training.data.synthetic import write_version
from training.formats import STOP_PHRASE
from training.stage2.tiny import build_tiny_llava, build_tiny_text_lm


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LlavaForConditionalGeneration + LlavaProcessor folder (16 image tokens)."""
    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="session")
def tiny_rm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LlamaForCausalLM + tokenizer with a chat template (a text-only RM)."""
    return build_tiny_text_lm(tmp_path_factory.mktemp("tiny-rm"))


def write_stage2_version(root: Path, *, images: int = 12, reference: bool = False) -> Path:
    """A synthetic version plus, for each trajectory, the RM row of its approved last step
    (F = the stop phrase on the corrected answer), as real exports write; the manifest's
    ``content_sha256`` is recomputed so the reader's verification still holds."""
    root = write_version(root, images=images, shard_size=images, seed=3, reference=reference)
    sft = [json.loads(line) for line in (root / "stage2" / "sft.jsonl").open()]
    rm_path = root / "stage2" / "rm.jsonl"
    rm = [json.loads(line) for line in rm_path.open()]
    evidence = {row["trajectory"]: row["evidence"] for row in rm}
    for row in sft:
        rm.append(
            {
                "id": f"{row['id']}-stop",
                "trajectory": row["trajectory"],
                "step": row["step"] + 1,
                "image": row["image"],
                "question": row["question"],
                "response": row["target"],
                "evidence": evidence[row["trajectory"]],
                "feedback": STOP_PHRASE,
            }
        )
    rm_path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rm), "utf-8")
    manifest_path = root / "manifest.json"
    manifest = json.loads(manifest_path.read_text("utf-8"))
    manifest["content_sha256"] = content_sha256(root)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
    return root


@pytest.fixture(scope="session")
def stage2_version_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 images: 9 SFT rows, 18 RM rows (9 corrections, 9 stop rows), 3 eval items."""
    return write_stage2_version(tmp_path_factory.mktemp("stage2-version") / "v1")
