"""``python -m training swap-tower``'s one-line failures and its restart rule (the swap itself is
checked weight by weight in ``test_study_e2e``)."""

from __future__ import annotations

from pathlib import Path

from training.__main__ import main as training_main


def test_a_folder_without_a_clip_fails_in_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    argv = ["swap-tower", "--model", str(tmp_path), "--vision-tower", str(tmp_path / "empty"),
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert training_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: vision_tower=")
    assert "no CLIP config.json" in err[0] and not (tmp_path / "run" / "final").exists()


def test_a_finished_swap_is_not_redone(tmp_path: Path, capsys) -> None:
    final = tmp_path / "run" / "final"
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}", "utf-8")
    argv = ["swap-tower", "--model", "never/loaded", "--vision-tower", "never/read",
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert training_main(argv) == 0
    assert '"skipped": "final/ exists"' in capsys.readouterr().out
