"""Demo Stage-2 data for the quick start: correction trajectories and an open evaluation round
on the demo scenes, made from the scenes' own boxes and imported through the real importers
(``import_trajectories`` and ``eval_round``), so the editor and the rating pages have work in
them on a fresh machine. Safe to run again: nothing is imported twice.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from training.geometry import INVERSE, spatial_relation
from webapp.catalog.models import Dataset
from webapp.evaluation.models import Round
from webapp.regions.models import Region

ROUND = "Demo round"


def _pairs(dataset: Dataset, limit: int):
    """(image sha256, phrase a, phrase b, true relation of a to b) for the first images with
    two regions of different phrases whose relation is a left/right/above/below one."""
    found = 0
    for image in dataset.images.order_by("pk"):
        regions = list(Region.objects.filter(image=image).order_by("pk"))
        for i, a in enumerate(regions):
            for b in regions[i + 1 :]:
                if a.phrase == b.phrase:
                    continue
                relation = spatial_relation(tuple(a.box), tuple(b.box))
                if relation in ("left of", "right of", "above", "below"):
                    yield image.sha256, a.phrase, b.phrase, relation
                    found += 1
                    break
            else:
                continue
            break
        if found >= limit:
            return


class Command(BaseCommand):
    help = "Import demo correction trajectories and open a demo evaluation round."

    def add_arguments(self, parser):
        parser.add_argument("--dataset", default="demo-scenes")
        parser.add_argument("--items", type=int, default=12)

    def handle(self, *args, dataset: str, items: int, **options):
        found = Dataset.objects.filter(name=dataset).first()
        if found is None:
            raise CommandError(f"no dataset {dataset!r}: run make_demo first")
        pairs = list(_pairs(found, items))
        if not pairs:
            raise CommandError(f"dataset {dataset!r} has no image with two separate regions")
        out = Path(settings.VAR_DIR) / "demo"
        out.mkdir(parents=True, exist_ok=True)
        self._trajectories(found, pairs, out / "trajectories.jsonl")
        self._round(pairs, out)

    def _trajectories(self, dataset: Dataset, pairs, path: Path) -> None:
        with path.open("w", encoding="utf-8") as handle:
            for n, (sha, a, b, relation) in enumerate(pairs):
                wrong = INVERSE[relation]
                row = {
                    "id": f"demo-{n}-0",
                    "trajectory": f"demo-{n}",
                    "step": 0,
                    "image": sha,
                    "question": f"Where is the {a} relative to the {b}?",
                    "response": f"The {a} is {wrong} the {b}.",
                    "feedback": f"The {a} is {relation} the {b}, not {wrong} it.",
                    "target": f"The {a} is {relation} the {b}.",
                    "error_types": ["spatial"],
                }
                handle.write(json.dumps(row) + "\n")
        call_command("import_trajectories", str(path), dataset=dataset.name, stdout=self.stdout)

    def _round(self, pairs, out: Path) -> None:
        if Round.objects.filter(name=ROUND).exists():
            self.stdout.write(f"{ROUND!r} exists; left as it is")
            return
        items, baseline, fgam = out / "items.jsonl", out / "baseline.jsonl", out / "fgam.jsonl"
        with items.open("w") as i, baseline.open("w") as b, fgam.open("w") as f:
            for n, (sha, a, other, relation) in enumerate(pairs):
                key = f"demo-item-{n}"
                question = f"Where is the {a} relative to the {other}?"
                i.write(json.dumps({"id": key, "image": sha, "question": question}) + "\n")
                wrong = INVERSE[relation]
                b.write(json.dumps({"id": key, "response": f"The {a} is {wrong} the {other}."}))
                b.write("\n")
                f.write(json.dumps({"id": key, "response": f"The {a} is {relation} the {other}."}))
                f.write("\n")
        run = [("create", "--name", ROUND, "--raters-per-item", "1")]
        run.append(("items", ROUND, "--file", str(items)))
        run.append(("system", ROUND, "--name", "Baseline", "--responses", str(baseline)))
        run.append(("system", ROUND, "--name", "Rectified", "--responses", str(fgam)))
        run.append(("baseline", ROUND, "--system", "Baseline"))
        run.append(("open", ROUND))
        for arguments in run:
            call_command("eval_round", *arguments, stdout=self.stdout)
