"""Every ```python block of the READMEs and docs/ runs, so a recipe cannot rot.

Each block is executed in a workspace that holds what the snippets name, built offline: a tiny
Stage-1 run folder (``runs/s1/final/hf``, a tiny CLIP), a tiny LLaVA standing in for
``models/llava-1.5-7b-hf`` with a tower of the same shape, and a synthetic dataset version under
``var/media/versions/``. A block that cannot run here must say so right above its fence, e.g.
``<!-- not run: needs a GPU -->``; those are listed in ``NOT_RUN`` so that a new one is a
deliberate change, never a silent skip.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = (
    "README.md",
    "training/README.md",
    *sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("docs/*.md")),
)
FENCE = re.compile(r"^```python\s*$")
NOT_RUN_MARK = re.compile(r"^<!--\s*not run:\s*(?P<reason>.+?)\s*-->\s*$")
VERSION_ID = "20261127-230000-abcdef"

# (document, line of the fence) of every block marked "not run", with the marks' reasons.
NOT_RUN: dict[tuple[str, int], str] = {}


@dataclass(frozen=True)
class Snippet:
    document: str
    line: int  # 1-based line of the opening fence
    code: str
    not_run: str | None  # the reason given in the marker, when there is one

    @property
    def id(self) -> str:
        return f"{self.document}:{self.line}"


def snippets() -> list[Snippet]:
    found = []
    for name in DOCUMENTS:
        lines = (ROOT / name).read_text(encoding="utf-8").splitlines()
        n = 0
        while n < len(lines):
            if not FENCE.match(lines[n]):
                n += 1
                continue
            end = next(k for k in range(n + 1, len(lines)) if lines[k].startswith("```"))
            before = next((lines[k] for k in range(n - 1, -1, -1) if lines[k].strip()), "")
            mark = NOT_RUN_MARK.match(before.strip())
            code = "\n".join(lines[n + 1 : end]) + "\n"
            found.append(Snippet(name, n + 1, code, mark["reason"] if mark else None))
            n = end + 1
    return found


SNIPPETS = snippets()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.data.synthetic import write_version
    from training.stage1.tiny import make_tiny_clip
    from training.stage2.tiny import build_tiny_llava

    root = tmp_path_factory.mktemp("docs")
    make_tiny_clip(root / "runs/s1/final/hf")  # 64 px images, 8 px patches, width 64
    build_tiny_llava(root / "models/llava-1.5-7b-hf", image_size=64)  # the same tower shape
    write_version(root / "var/media/versions" / VERSION_ID, images=4, shard_size=4)
    return root


def test_the_snippets_are_found():
    documents = {s.document for s in SNIPPETS}
    assert {"README.md", "training/README.md", "docs/evaluation.md"} <= documents
    # the LLaVA recipe, whose `model.vision_tower` raised AttributeError on transformers 5
    assert any(".model.vision_tower.load_state_dict(" in s.code for s in SNIPPETS)


def test_the_snippets_not_run_are_marked_and_listed():
    marked = {(s.document, s.line): s.not_run for s in SNIPPETS if s.not_run is not None}
    print(f"{len(marked)} snippet(s) not run:", *(f"{d}:{n}: {r}" for (d, n), r in marked.items()))
    assert marked == NOT_RUN


@pytest.mark.parametrize("snippet", [s for s in SNIPPETS if s.not_run is None], ids=lambda s: s.id)
def test_the_snippet_runs(snippet: Snippet, workspace: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = compile(snippet.code, snippet.id, "exec")
    exec(code, {"__name__": "__snippet__"})
