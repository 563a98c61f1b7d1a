"""Setting up, opening and closing evaluation rounds: every write that touches several models.

Items come from a dataset version's ``eval/items.jsonl`` (a seeded, optionally stratified
sample) or from an uploaded JSONL; responses from an uploaded JSONL per system or from a
rectify job (``generation.py``). Bad input raises ``InputError`` naming the line, and nothing
is written. Items, systems and responses change only while a round is a draft.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from webapp.catalog.models import Image
from webapp.evaluation.jsonl import InputError, item_key, read_rows, text_field
from webapp.evaluation.models import (
    Assignment,
    EvalItem,
    Response,
    Round,
    System,
    default_criteria,
)
from webapp.evaluation.sampling import sample_items
from webapp.exports.models import DatasetVersion
from webapp.exports.storage import local_path

DEFAULT_SAMPLE_SIZE = 200
# Words that name a model family: a response containing one may tell raters who wrote it.
MODEL_WORDS = (
    "llava", "gpt", "chatgpt", "openai", "qwen", "fgam", "hacl", "claude", "anthropic",
    "gemini", "llama", "vicuna", "mistral", "internvl", "minigpt", "blip", "instructblip",
    "cogvlm", "deepseek", "language model", "as an ai",
)  # fmt: skip


def _require_draft(round_: Round) -> None:
    if round_.status != Round.Status.DRAFT:
        raise InputError(f"round {round_.name!r} is {round_.status}; only a draft can change")


def create_round(
    *,
    name: str,
    user=None,
    raters_per_item: int = 3,
    seed: int = 0,
    description: str = "",
    criteria: dict[str, Any] | None = None,
    lease_seconds: int | None = None,
) -> Round:
    """A new draft round with the paper's criteria unless others are given."""
    name = name.strip()
    if not name:
        raise InputError("name: required")
    if not 1 <= raters_per_item <= 20:
        raise InputError("raters_per_item: between 1 and 20")
    if Round.objects.filter(name=name).exists():
        raise InputError(f"name: a round called {name!r} exists already")
    defaults = default_criteria()
    criteria = {**defaults, **(criteria or {})}  # e.g. only "likert" given: the rest default
    validate_criteria(criteria)
    lease_seconds = lease_seconds or settings.FGAM_LEASE_SECONDS
    return Round.objects.create(
        name=name, description=description, raters_per_item=raters_per_item, seed=seed,
        criteria=criteria, lease_seconds=lease_seconds, created_by=user,
    )  # fmt: skip


def validate_criteria(criteria: dict[str, Any]) -> None:
    """Every Likert criterion needs a key, a label and anchor text for each of 1..5."""
    likert = criteria.get("likert")
    if not isinstance(likert, list) or not likert:
        raise InputError("criteria.likert: a non-empty list")
    keys = set()
    for n, criterion in enumerate(likert):
        key = criterion.get("key") if isinstance(criterion, dict) else None
        if not isinstance(key, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", key):
            raise InputError(f"criteria.likert[{n}].key: lower-case letters, digits and _")
        if key in keys:
            raise InputError(f"criteria.likert[{n}].key: {key!r} appears twice")
        keys.add(key)
        anchors = criterion.get("anchors") or {}
        missing = [p for p in "12345" if not str(anchors.get(p, "")).strip()]
        if missing:
            raise InputError(f"criteria.likert[{n}].anchors: no text for {', '.join(missing)}")
    for n, error_type in enumerate(criteria.get("error_types", [])):
        if not isinstance(error_type, dict) or not error_type.get("key"):
            raise InputError(f"criteria.error_types[{n}].key: required")


# --- Items --------------------------------------------------------------------------------------


def _images_by_sha(shas: Iterable[str]) -> dict[str, Image]:
    found: dict[str, Image] = {}
    for image in Image.objects.filter(sha256__in=set(shas)).order_by("pk"):
        found.setdefault(image.sha256, image)
    return found


def _replace_items(round_: Round, rows: list[dict[str, Any]], name: str) -> int:
    """Resolve each row's image and write the items in the rows' order."""
    images = _images_by_sha(r["image"] for r in rows if r.get("image"))
    ids = {r["image_id"] for r in rows if r.get("image_id")}
    by_id = {i.pk: i for i in Image.objects.filter(pk__in=ids)}
    items = []
    for position, row in enumerate(rows):
        where = f"{name} line {row['_line']}" if "_line" in row else f"{name} item {row['id']}"
        image = by_id.get(row["image_id"]) if row.get("image_id") else images.get(row["image"])
        if image is None:
            what = row.get("image_id") or row.get("image")
            raise InputError(f"{where}: image {what!r} is not in the catalog")
        items.append(
            EvalItem(
                round=round_, key=str(row["id"]), image=image, question=row["question"],
                reference=row.get("reference"), position=position,
                stratum=str(row.get("stratum") or image.source or "")[:64],
            )
        )  # fmt: skip
    with transaction.atomic():
        round_.items.all().delete()
        EvalItem.objects.bulk_create(items, batch_size=2000)
        round_.save(update_fields=["version", "sampling"])
    return len(items)


def sample_from_version(
    *,
    round_: Round,
    version: DatasetVersion,
    n: int = DEFAULT_SAMPLE_SIZE,
    seed: int | None = None,
    stratify: bool = False,
) -> int:
    """Replace the round's items with a seeded sample of the version's ``eval/items.jsonl``."""
    _require_draft(round_)
    if n < 1:
        raise InputError("n: at least 1")
    root = local_path(version)
    if root is None:
        raise InputError(f"version {version.name!r} is not ready on a local disk")
    # The reader module loads torch (its Stage-1 stream is a torch dataset): imported here so
    # web processes pay for it only when someone samples from a version.
    from training.data.version import DatasetVersion as VersionReader
    from training.data.version import DatasetVersionError

    try:
        reader = VersionReader.open(Path(root), verify=False)
        raw = list(reader.eval_items())
    except DatasetVersionError as error:
        raise InputError(str(error)) from None
    name = f"{version.name}/eval/items.jsonl"
    rows = _validate_item_rows(enumerate(raw, start=1), name=name)
    if stratify:
        _fill_strata(rows)
    seed = round_.seed if seed is None else seed
    picked = sample_items(rows, n=n, seed=seed, stratify=stratify)
    round_.version = version
    round_.sampling = {
        "source": "version", "version": version.name, "n": n, "seed": seed,
        "stratify": stratify, "available": len(rows),
    }  # fmt: skip
    return _replace_items(round_, picked, name)


def _fill_strata(rows: list[dict[str, Any]]) -> None:
    """Rows without a ``source`` take their image's catalog source as their stratum."""
    images = _images_by_sha(r["image"] for r in rows if r.get("image"))
    for row in rows:
        image = images.get(row.get("image") or "")
        row["stratum"] = row.get("source") or (image.source if image else "")


def _validate_item_rows(
    numbered: Iterable[tuple[int, dict[str, Any]]], *, name: str
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for line, row in numbered:
        where = f"{name} line {line}"
        key = item_key(row, where=where)
        if key in seen:
            raise InputError(f"{where}: id {key!r} repeats line {seen[key]}")
        seen[key] = line
        question = text_field(row, ("question",), where=where)
        image_id = row.get("image_id")
        if image_id is not None and (isinstance(image_id, bool) or not isinstance(image_id, int)):
            raise InputError(f'{where}: "image_id" must be a whole number')
        image = row.get("image")
        is_sha = isinstance(image, str) and re.fullmatch(r"[0-9a-f]{64}", image)
        if image_id is None and not is_sha:
            raise InputError(
                f'{where}: "image" must be a sha256 (64 hex digits), or give "image_id"'
            )
        reference = row.get("reference")
        if reference is not None and not isinstance(reference, str):
            raise InputError(f'{where}: "reference" must be a string or null')
        stratum = row.get("source") or row.get("stratum") or ""
        rows.append({
            "id": key, "image": image, "image_id": image_id, "question": question,
            "reference": reference, "stratum": str(stratum), "_line": line,
        })  # fmt: skip
    if not rows:
        raise InputError(f"{name}: no items")
    return rows


def import_items(
    *,
    round_: Round,
    lines: Iterable[str | bytes],
    name: str = "items.jsonl",
    n: int | None = None,
    stratify: bool = False,
) -> int:
    """Replace the round's items with rows ``{"id", "image": sha256 | "image_id", "question",
    "reference"?, "source"?}``; with ``n``, a seeded sample of them."""
    _require_draft(round_)
    rows = _validate_item_rows(read_rows(lines, name=name), name=name)
    if n is not None:
        if stratify:
            _fill_strata([r for r in rows if not r["stratum"]])
        rows = sample_items(rows, n=n, seed=round_.seed, stratify=stratify)
    round_.version = None
    round_.sampling = {"source": "file", "file": name, "n": n, "stratify": stratify}
    return _replace_items(round_, rows, name)


# --- Systems and responses ----------------------------------------------------------------------


def add_system(*, round_: Round, name: str, **fields: Any) -> System:
    _require_draft(round_)
    name = name.strip()
    if not name:
        raise InputError("name: required")
    if round_.systems.filter(name=name).exists():
        raise InputError(f"name: round {round_.name!r} has a system called {name!r} already")
    return System.objects.create(round=round_, name=name, **fields)


def import_responses(
    *, system: System, lines: Iterable[str | bytes], name: str = "responses.jsonl"
) -> int:
    """Replace the system's responses with rows ``{"id": item id, "response": text}`` (also
    ``"text"``, or rectify's ``"final"``). Every row must name an item of the round, once."""
    round_ = system.round
    _require_draft(round_)
    items = dict(round_.items.values_list("key", "pk"))
    if not items:
        raise InputError(f"round {round_.name!r} has no items yet; add items first")
    seen: dict[str, int] = {}
    responses = []
    for line, row in read_rows(lines, name=name):
        where = f"{name} line {line}"
        key = item_key(row, where=where)
        if key not in items:
            raise InputError(f"{where}: id {key!r} is not an item of round {round_.name!r}")
        if key in seen:
            raise InputError(f"{where}: id {key!r} repeats line {seen[key]}")
        seen[key] = line
        text = text_field(row, ("response", "text", "final"), where=where)
        responses.append(Response(item_id=items[key], system=system, text=text))
    if not responses:
        raise InputError(f"{name}: no responses")
    with transaction.atomic():
        system.responses.all().delete()
        Response.objects.bulk_create(responses, batch_size=2000)
    return len(responses)


def set_baseline(*, round_: Round, system: System | None) -> None:
    if system is not None and system.round_id != round_.pk:
        raise InputError("baseline: not a system of this round")
    round_.baseline = system
    round_.save(update_fields=["baseline"])


# --- Checks before opening ----------------------------------------------------------------------


@dataclass(frozen=True)
class Leak:
    """A response whose text names a system or a model family (curator-only)."""

    system: str
    item: str
    word: str
    excerpt: str


def _excerpt(text: str, start: int, end: int, width: int = 40) -> str:
    left = max(start - width, 0)
    tail = "…" if end + width < len(text) else ""
    return ("…" if left else "") + text[left : end + width] + tail


def leak_warnings(round_: Round, *, limit: int = 200) -> list[Leak]:
    """Responses naming a system (its display name or key) or a known model family."""
    systems = list(round_.systems.all())
    words = {w.lower() for w in MODEL_WORDS}
    for system in systems:
        # A name of one or two letters ("A", "B") would match ordinary words; keys always count.
        if len(system.name) >= 3:
            words.add(system.name.lower())
        words.add(system.key.lower())
        parts = re.split(r"[\s_\-+/]+", system.name)
        words.update(part.lower() for part in parts if len(part) >= 4)
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    pattern = re.compile(r"(?<![a-z0-9])(" + alternatives + ")", re.IGNORECASE)
    names = {s.pk: s.name for s in systems}
    found: list[Leak] = []
    rows = (
        Response.objects.filter(system__round=round_)
        .order_by("item__position", "system_id")
        .values_list("system_id", "item__key", "text")
        .iterator(chunk_size=2000)
    )
    for system_id, key, text in rows:
        match = pattern.search(text)
        if match:
            found.append(Leak(names[system_id], key, match.group(1), _excerpt(text, *match.span())))
            if len(found) >= limit:
                break
    return found


def readiness(round_: Round) -> list[str]:
    """What stops the round from opening, one sentence each (empty: it can open)."""
    problems = []
    items = round_.items.count()
    if items == 0:
        problems.append("The round has no items.")
    systems = list(round_.systems.annotate(n=Count("responses")))
    if len(systems) < 2:
        problems.append("A round needs at least two systems.")
    for system in systems:
        if system.status in (System.Status.QUEUED, System.Status.RUNNING):
            problems.append(f"{system.name}: its responses are still being generated.")
        elif system.n < items:
            problems.append(f"{system.name}: responses for {system.n} of {items} items.")
    return problems


def drop_incomplete_items(*, round_: Round) -> int:
    """Remove the items some system has no response for (e.g. after rectify failures)."""
    _require_draft(round_)
    systems = round_.systems.count()
    incomplete = round_.items.annotate(n=Count("responses")).filter(n__lt=systems)
    ids = list(incomplete.values_list("pk", flat=True))
    EvalItem.objects.filter(pk__in=ids).delete()
    return len(ids)


# --- Opening and closing ------------------------------------------------------------------------


def open_round(*, round_: Round, acknowledge_leaks: bool = False) -> Round:
    """Make the seats (raters_per_item per item) and open the round to raters.

    Refuses while something is missing (``readiness``) and, unless ``acknowledge_leaks``,
    while a response names a system or a model.
    """
    problems = readiness(round_)
    if problems:
        raise InputError(" ".join(problems))
    if not acknowledge_leaks and leak_warnings(round_, limit=1):
        raise InputError(
            "Some responses name a system or a model and would tell raters who wrote them; "
            "fix them, or acknowledge the warning to open anyway."
        )
    with transaction.atomic():
        if not Round.objects.filter(pk=round_.pk, status=Round.Status.DRAFT).update(
            status=Round.Status.OPEN, opened_at=timezone.now()
        ):
            raise InputError(f"round {round_.name!r} is not a draft")
        item_ids = list(round_.items.values_list("pk", flat=True))
        Assignment.objects.bulk_create(
            (
                Assignment(round=round_, item_id=item, seat=seat)
                for item in item_ids
                for seat in range(round_.raters_per_item)
            ),
            batch_size=5000,
        )
    round_.refresh_from_db()
    return round_


def close_round(*, round_: Round) -> Round:
    """Close the round: no more claims or revisions; the results become final."""
    if not Round.objects.filter(pk=round_.pk, status=Round.Status.OPEN).update(
        status=Round.Status.CLOSED, closed_at=timezone.now()
    ):
        raise InputError(f"round {round_.name!r} is not open")
    round_.refresh_from_db()
    from webapp.evaluation.results import freeze  # the statistics need numpy and scipy
    from webapp.evaluation.stats.ratings import RatingDataError

    # Bad ratings data: the round stays closed and the results page shows the error live.
    with contextlib.suppress(RatingDataError):
        freeze(round_)
    return round_
