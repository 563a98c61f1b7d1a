"""Which questions a probe set asks: pure functions over plain values (no Django, no I/O).

The builder (``webapp.probes.building``) reads the images and their accepted regions, already
mapped to vocabulary names, into ``ImageObjects`` and hands them here; everything below is
deterministic given the seed: inputs are sorted before any draw and one ``random.Random(seed)``
makes every draw, so the same seed over the same data asks the same questions in the same order.

POPE (Li et al., 2023, "Evaluating Object Hallucination in Large Vision-Language Models"):

- candidates are exhaustively reviewed images with at least ``max(3, per_image)`` distinct
  names (only there does a name without a box mean the object is absent);
- ``images`` of them are drawn; per image ``per_image`` positives are drawn from its names, then
  one negative per positive, a name absent from the image and not already asked on it:
  ``random`` draws uniformly over the vocabulary; ``popular`` takes the names in falling order
  of how many *sampled* images hold them; ``adversarial`` takes, for each positive, the names in
  falling order of how many sampled images hold both. Ties go alphabetically. When an
  adversarial list runs dry (every co-occurring name is in the image) the popular order fills
  in, and after it the random draw, so every image still has as many "no" as "yes" (POPE's own
  code would silently ask fewer negatives). Negatives are chosen for the positives taken in
  alphabetical order, so the pairing does not depend on the order the positives were drawn in;
- per image the questions are the positives then the negatives, in draw order.

Spatial probes: pairs of accepted boxes of a reviewed image whose names differ and are each
*unique* in the image (with two dogs, "the dog" names no box), related by
``training.geometry.spatial_relation``; ``overlaps`` / ``contains`` / ``inside`` pairs are left
out (only the four direction words have a template). Which box is the subject is drawn; the
"yes" probe asks the relation that holds, the "no" one its opposite (``INVERSE``: if the dog is
left of the cat it is surely not right of it, while "above" might half hold). The answers are
half "yes" and half "no" in a drawn order (an odd last pair is dropped), so exactly balanced.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations

from training.geometry import INVERSE, Box, spatial_relation

MIN_OBJECTS = 3
POPE_SPLITS = ("random", "popular", "adversarial")
POPE_TEMPLATE = "Is there {article} {object} in the image?"
SPATIAL_TEMPLATES = {
    "left of": "Is the {subject} to the left of the {object}?",
    "right of": "Is the {subject} to the right of the {object}?",
    "above": "Is the {subject} above the {object}?",
    "below": "Is the {subject} below the {object}?",
}
DIRECTIONS = tuple(SPATIAL_TEMPLATES)

# "an" goes before a vowel *sound*, which the first letter gets right except for these first
# words or word starts: a silent h takes "an"; a vowel letter sounding "you"/"w" takes "a".
AN_BEFORE_LETTER_H = ("hour", "honest", "honor", "honour", "heir", "herb")
A_BEFORE_VOWEL_LETTER = (
    "uni", "use", "usu", "uten", "ure", "uro", "ufo", "eu", "ewe", "one", "once",
)  # fmt: skip


class SamplingError(ValueError):
    """The data cannot give the probe set asked for (too few images, too small a vocabulary)."""


def article(name: str) -> str:
    """The indefinite article for ``name``, by its first word.

    >>> [article(n) for n in ("apple", "dog", "hour glass", "unicorn", "umbrella", "one-way sign")]
    ['an', 'a', 'an', 'a', 'an', 'a']
    >>> [article(n) for n in ("uniform", "european car", "honest man", "orange", "")]
    ['a', 'a', 'an', 'an', 'a']
    """
    word = name.strip().lower()
    if not word:
        return "a"
    if word.startswith(AN_BEFORE_LETTER_H):
        return "an"
    if word.startswith(A_BEFORE_VOWEL_LETTER):
        return "a"
    return "an" if word[0] in "aeiou" else "a"


def pope_question(name: str) -> str:
    """POPE's question, with the article.

    >>> pope_question("apple")
    'Is there an apple in the image?'
    """
    return POPE_TEMPLATE.format(article=article(name), object=name)


def spatial_question(subject: str, relation: str, obj: str) -> str:
    """The question for one relation word.

    >>> spatial_question("dog", "left of", "cat")
    'Is the dog to the left of the cat?'
    """
    return SPATIAL_TEMPLATES[relation].format(subject=subject, object=obj)


@dataclass(frozen=True)
class ImageObjects:
    """One image (by sha256): the vocabulary names of its accepted regions and, when loaded,
    the regions themselves as (name, box) in region-id order.

    POPE needs only the names to draw (the builder loads boxes for the drawn images alone);
    spatial probes need the regions. ``of_regions`` makes one from regions.
    """

    sha256: str
    names: frozenset[str]
    regions: tuple[tuple[str, Box], ...] = ()
    reviewed: bool = True

    @classmethod
    def of_regions(
        cls, sha256: str, regions: Iterable[tuple[str, Box]], reviewed: bool = True
    ) -> ImageObjects:
        kept = tuple((name, tuple(box)) for name, box in regions if name)
        return cls(sha256, frozenset(n for n, _ in kept), kept, reviewed)  # type: ignore[arg-type]

    def first_box(self, name: str) -> Box | None:
        return next((box for n, box in self.regions if n == name), None)


@dataclass(frozen=True)
class PlannedProbe:
    """A question before it has an id: what ``training.probes.layout.Probe`` is made from."""

    image: str
    question: str
    answer: str
    split: str
    object: str
    subject: str | None = None
    relation: str | None = None
    boxes: tuple[Box, ...] | None = None


@dataclass
class Plan:
    probes: list[PlannedProbe] = field(default_factory=list)
    candidates: int = 0  # images that could have been drawn
    fallbacks: int = 0  # adversarial negatives taken from the popular order or drawn at random


def pope_candidates(images: Iterable[ImageObjects], per_image: int) -> list[ImageObjects]:
    """Reviewed images with enough distinct names, sorted by sha256."""
    need = max(MIN_OBJECTS, per_image)
    found = [im for im in images if im.reviewed and len(im.names) >= need]
    return sorted(found, key=lambda im: im.sha256)


def draw_images(
    candidates: Sequence[ImageObjects], count: int, rng: random.Random, what: str
) -> list[ImageObjects]:
    if count < 1:
        raise SamplingError("ask for at least one image")
    if len(candidates) < count:
        raise SamplingError(
            f"only {len(candidates)} exhaustively reviewed image(s) {what}, {count} asked: "
            "mark more images reviewed or ask for fewer images"
        )
    return rng.sample(list(candidates), count)


def frequency_order(images: Iterable[ImageObjects]) -> list[str]:
    """Names by how many of ``images`` hold them, most first, ties alphabetically."""
    counts = Counter(name for im in images for name in im.names)
    return sorted(counts, key=lambda n: (-counts[n], n))


def co_occurrence_orders(images: Iterable[ImageObjects]) -> dict[str, list[str]]:
    """Per name, the other names by how many of ``images`` hold both, most first."""
    pairs: Counter[tuple[str, str]] = Counter()
    for im in images:
        for a, b in combinations(sorted(im.names), 2):
            pairs[(a, b)] += 1
            pairs[(b, a)] += 1
    per: dict[str, Counter[str]] = {}
    for (a, b), n in pairs.items():
        per.setdefault(a, Counter())[b] = n
    return {a: sorted(c, key=lambda b: (-c[b], b)) for a, c in per.items()}


def plan_pope(
    images: Iterable[ImageObjects],
    *,
    vocabulary: Iterable[str],
    split: str,
    count: int,
    per_image: int,
    seed: int,
) -> Plan:
    """The POPE questions of one split (module docstring has the rules)."""
    if split not in POPE_SPLITS:
        raise SamplingError(f"POPE split is one of {', '.join(POPE_SPLITS)}, not {split!r}")
    if per_image < 1:
        raise SamplingError("ask for at least one positive per image")
    rng = random.Random(seed)
    vocab = sorted(set(vocabulary))
    candidates = pope_candidates(images, per_image)
    sampled = draw_images(
        candidates, count, rng, f"with at least {max(MIN_OBJECTS, per_image)} objects"
    )
    popular = frequency_order(sampled)
    co_occurring = co_occurrence_orders(sampled) if split == "adversarial" else {}
    plan = Plan(candidates=len(candidates))
    for im in sampled:
        names = im.names
        if len(vocab) - len(names) < per_image:
            raise SamplingError(
                f"the vocabulary has {len(vocab)} names; image {im.sha256[:12]} holds "
                f"{len(names)}, which leaves fewer than {per_image} absent names to ask about"
            )
        positives = rng.sample(sorted(names), per_image)
        asked: set[str] = set(names)
        negatives: list[str] = []
        # Negatives are chosen for the positives in alphabetical order: which negative goes with
        # which positive then depends on which positives were drawn, not on their draw order.
        for positive in sorted(positives):
            order = co_occurring.get(positive, []) if split == "adversarial" else popular
            chosen = next((n for n in order if n not in asked), None) if split != "random" else None
            if chosen is None and split == "adversarial":
                plan.fallbacks += 1
                chosen = next((n for n in popular if n not in asked), None)
            while chosen is None or chosen in asked:  # POPE's own draw: retry until absent
                chosen = rng.choice(vocab)
            asked.add(chosen)
            negatives.append(chosen)
        for name in positives:
            box = im.first_box(name)
            plan.probes.append(
                PlannedProbe(im.sha256, pope_question(name), "yes", split, name,
                             boxes=(box,) if box is not None else None)
            )  # fmt: skip
        for name in negatives:
            plan.probes.append(PlannedProbe(im.sha256, pope_question(name), "no", split, name))
    return plan


def spatial_pairs(im: ImageObjects) -> list[tuple[int, int, str]]:
    """(subject index, object index, relation) of every usable pair of the image's regions,
    i < j by region order; the relation is one of the four direction words."""
    counts = Counter(name for name, _ in im.regions)
    pairs = []
    for i, j in combinations(range(len(im.regions)), 2):
        (name_i, box_i), (name_j, box_j) = im.regions[i], im.regions[j]
        if name_i == name_j or counts[name_i] > 1 or counts[name_j] > 1:
            continue
        relation = spatial_relation(box_i, box_j)
        if relation in SPATIAL_TEMPLATES:
            pairs.append((i, j, relation))
    return pairs


def plan_spatial(images: Iterable[ImageObjects], *, count: int, per_image: int, seed: int) -> Plan:
    """Spatial questions: up to ``per_image`` pairs from each of ``count`` drawn images."""
    if per_image < 1:
        raise SamplingError("ask for at least one pair per image")
    rng = random.Random(seed)
    if count < 1:
        raise SamplingError("ask for at least one image")
    # Pairs are costly (every pair of boxes), so the images are visited in a drawn order and
    # only until ``count`` of them have a usable pair.
    order = sorted(
        (im for im in images if im.reviewed and len(im.names) >= 2), key=lambda im: im.sha256
    )
    rng.shuffle(order)
    chosen: list[tuple[ImageObjects, int, int, str]] = []
    drawn = 0
    plan = Plan()
    for im in order:
        plan.candidates += 1
        pairs = spatial_pairs(im)
        if not pairs:
            continue
        for i, j, relation in rng.sample(pairs, min(per_image, len(pairs))):
            if rng.random() < 0.5:  # the subject is drawn: as many "left of" as "right of"
                i, j, relation = j, i, INVERSE[relation]
            chosen.append((im, i, j, relation))
        drawn += 1
        if drawn == count:
            break
    if drawn < count:
        raise SamplingError(
            f"only {drawn} exhaustively reviewed image(s) with a usable pair of boxes (two "
            f"names, each once in the image, not overlapping), {count} asked: mark more "
            "images reviewed or ask for fewer images"
        )
    if len(chosen) % 2:
        chosen.pop()
    answers = ["yes", "no"] * (len(chosen) // 2)
    rng.shuffle(answers)
    for (im, i, j, holds), answer in zip(chosen, answers, strict=True):
        (subject, box_s), (obj, box_o) = im.regions[i], im.regions[j]
        asked = holds if answer == "yes" else INVERSE[holds]
        plan.probes.append(
            PlannedProbe(im.sha256, spatial_question(subject, asked, obj), answer, "spatial",
                         obj, subject=subject, relation=asked, boxes=(box_s, box_o))
        )  # fmt: skip
    return plan
