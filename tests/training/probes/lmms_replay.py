"""Score an exported probe-set task with the real lmms-eval and a replay model; run by
``test_lmms_eval_bridge.py`` with lmms-eval's own Python (``.venv-lmms``), never imported by
the project's tests (that environment has no FGAM Studio, which is the point).

    python lmms_replay.py JOB.json OUT.json

JOB: ``{"include_path": DIR, "task": NAME, "answers": {question_id: text}}``. The replay model
answers each document with its scripted text and records what lmms-eval handed it (the prompt,
the image's size and its top-left pixel), so the test can check the images really travelled.
OUT: ``{"results": lmms-eval's results for the task, "seen": {question_id: ...}, "n": ...}``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from lmms_eval.api.model import lmms
from lmms_eval.evaluator import simple_evaluate
from lmms_eval.tasks import TaskManager


class ReplayModel(lmms):
    """An lmms-eval model whose answers are fixed in advance, keyed by ``question_id``."""

    def __init__(self, answers: dict[str, str]) -> None:
        super().__init__()
        self.answers = answers
        self.seen: dict[str, dict[str, Any]] = {}

    def generate_until(self, requests: list[Any]) -> list[str]:
        texts = []
        for request in requests:
            context, _gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            (image,) = doc_to_visual(doc)
            qid = doc["question_id"]
            self.seen[qid] = {
                "prompt": context,
                "size": list(image.size),
                "pixel": list(image.getpixel((0, 0))),
                "mode": image.mode,
            }
            texts.append(self.answers[qid])
        return texts

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        raise NotImplementedError("the probe tasks only generate")

    def generate_until_multi_round(self, requests: list[Any]) -> list[str]:
        raise NotImplementedError("the probe tasks are single-turn")


def main(job_path: str, out_path: str) -> None:
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    model = ReplayModel(job["answers"])
    results = simple_evaluate(
        model=model,
        tasks=[job["task"]],
        task_manager=TaskManager("WARNING", include_path=job["include_path"]),
        bootstrap_iters=0,
        log_samples=False,
        verbosity="WARNING",
    )
    assert results is not None, "simple_evaluate returned nothing"
    out = {
        "results": results["results"][job["task"]],
        "n": results.get("n-samples", {}).get(job["task"]),
        "seen": model.seen,
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2, sort_keys=True, default=str)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
