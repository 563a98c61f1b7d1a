"""Seeded errors: one controlled error of each type injected into a correct reference answer,
checked against what makes it an error (the word, the geometry, the image's phrases, the
sentence), and recorded as A_0 of the trajectory."""

from __future__ import annotations

import random
import re

import pytest

from tests.workers import trajectory_players as players
from tests.workers.llm_server import LLMServer
from training.geometry import spatial_relation
from training.llm import RetryPolicy
from training.stage2.generators import make_generator
from workers.seeded_errors import (
    COLOURS,
    LARGE_WORDS,
    SMALL_WORDS,
    InjectionImpossible,
    inject_error,
)
from workers.trajectories import TrajectoryItem, run_batch, seed_item

CAR, DOG, TREE = [10, 60, 70, 110], [120, 70, 150, 100], [60, 0, 100, 40]
REGIONS = (
    {"phrase": "red car", "box": CAR, "caption": ""},
    {"phrase": "dog", "box": DOG, "caption": ""},
    {"phrase": "tree", "box": TREE, "caption": ""},
)
BOXES = {r["phrase"]: tuple(r["box"]) for r in REGIONS}


def words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def changed_words(a: str, b: str) -> list[tuple[str, str]]:
    wa, wb = words(a), words(b)
    assert len(wa) == len(wb), (a, b)
    return [(x, y) for x, y in zip(wa, wb, strict=True) if x != y]


# --- attribute ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_an_attribute_injection_swaps_one_colour_size_or_material_word(seed):
    answer = "A small red car is parked next to a wooden bench."
    injected = inject_error(answer, "attribute", rng=random.Random(seed))

    [(before, after)] = changed_words(answer, injected.corrupted)
    detail = injected.detail
    assert (before, after) == (detail["from"], detail["to"])
    if detail["kind"] == "colour":
        assert before == "red" and after in COLOURS and COLOURS[after] != "red"
    elif detail["kind"] == "size":
        assert before == "small" and after in LARGE_WORDS  # the opposite size, not a synonym
    else:
        assert before == "wooden" and after != "wooden"
    assert injected.error_type == "attribute" and injected.original == answer


def test_an_attribute_swap_keeps_capitals_and_skips_an_answer_without_attributes():
    injected = inject_error("Red is the colour of the car.", "attribute", rng=random.Random(0))
    assert injected.corrupted[0].isupper() and not injected.corrupted.startswith("Red")
    with pytest.raises(InjectionImpossible, match="no colour, size or material"):
        inject_error("A dog sits next to a car.", "attribute")


def test_grey_never_becomes_its_own_spelling_variant():
    for seed in range(40):
        injected = inject_error("A grey cat.", "attribute", rng=random.Random(seed))
        assert injected.detail["to"] not in ("grey", "gray")


# --- spatial -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        "The dog is to the right of the red car.",
        "On the street, the red car is left of the dog. The tree stands behind them.",
        "The tree is above the red car, and the dog sleeps.",
    ],
)
def test_a_spatial_injection_states_a_relation_that_is_false_for_the_named_regions(answer):
    injected = inject_error(answer, "spatial", regions=REGIONS, rng=random.Random(3))
    detail = injected.detail
    subject, obj, new = detail["subject"], detail["object"], detail["to"]

    true = spatial_relation(BOXES[subject], BOXES[obj])
    assert detail["true"] == true
    assert new != true  # false per training.geometry for exactly these two regions
    assert detail["stated"] == true  # (these references were right to begin with)
    # The sentence now says it: "<subject> ... <new relation> ... <object>".
    pattern = rf"{subject}.*\b{new}\b.*{obj}"
    assert re.search(pattern, injected.corrupted, re.IGNORECASE), injected.corrupted
    assert not re.search(pattern, answer, re.IGNORECASE)


def test_a_spatial_injection_writes_the_inverse_of_the_true_relation():
    injected = inject_error("The dog is to the right of the red car.", "spatial", regions=REGIONS)
    assert injected.corrupted == "The dog is to the left of the red car."
    assert (injected.detail["true"], injected.detail["to"]) == ("right of", "left of")


def test_a_spatial_injection_needs_two_named_regions_and_a_stated_relation():
    with pytest.raises(InjectionImpossible, match="fewer than two regions"):
        inject_error("The dog is left of the car.", "spatial", regions=REGIONS[1:2])
    with pytest.raises(InjectionImpossible, match="no spatial relation"):
        inject_error("A dog and a red car.", "spatial", regions=REGIONS)
    # Two regions sharing one phrase cannot be told apart: not a named region.
    twins = (*REGIONS[:2], {"phrase": "dog", "box": TREE, "caption": ""})
    with pytest.raises(InjectionImpossible, match="fewer than two"):
        inject_error("The dog is right of the red car.", "spatial", regions=twins)


# --- object ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_an_object_injection_adds_a_dataset_object_the_image_does_not_contain(seed):
    answer = "A dog sits beside a red car. The tree gives shade."
    on_image = {"dog", "red car", "tree"}
    vocabulary = ["dog", "red car", "tree", "kite", "umbrella", "bicycle", "shade"]
    injected = inject_error(
        answer, "object", image_phrases=on_image, vocabulary=vocabulary, rng=random.Random(seed)
    )

    added = injected.detail["object"]
    assert added in vocabulary and added not in on_image
    assert added not in words(answer) and added != "shade"  # not already in the answer
    assert added in injected.corrupted
    # The rest of the answer is all still there, in order; one sentence was added.
    assert injected.corrupted.replace(" " + injected.detail["sentence"], "") == answer


def test_an_object_injection_needs_an_absent_phrase():
    with pytest.raises(InjectionImpossible, match="absent from this image"):
        inject_error("A dog.", "object", image_phrases={"dog"}, vocabulary=["dog", "Dog "])


# --- reasoning ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_a_reasoning_injection_breaks_exactly_one_step_of_the_explanation(seed):
    answer = (
        "The street is wet and the sky is grey. Therefore it rained recently. "
        "The man carries an umbrella because he expects more rain."
    )
    injected = inject_error(answer, "reasoning", rng=random.Random(seed))

    sentences = re.split(r"(?<=\.)\s+", answer)
    corrupted = re.split(r"(?<=\.)\s+", injected.corrupted)
    differing = [i for i, (a, b) in enumerate(zip(sentences, corrupted, strict=True)) if a != b]
    assert differing == [injected.detail["sentence"]]
    before, after = injected.detail["before"], injected.detail["after"]
    assert (sentences[differing[0]], corrupted[differing[0]]) == (before, after)
    assert injected.detail["edit"] in ("connective", "negation")
    if injected.detail["edit"] == "connective":
        assert {"however", "even though"} & set(re.findall(r"[a-z]+(?: though)?", after.lower()))
    else:
        assert " not " in after or " not " in before


def test_a_reasoning_injection_needs_more_than_one_sentence():
    with pytest.raises(InjectionImpossible, match="one sentence"):
        inject_error("The car is red because it was painted.", "reasoning")


def test_an_unknown_type_is_refused():
    with pytest.raises(ValueError, match="not one of object, attribute, spatial, reasoning"):
        inject_error("A dog.", "colour")


# --- choosing the type per item, and the loop from a seeded A_0 --------------------------------


def seeded_item(key: str, types, reference="The dog is right of the red car. It is small."):
    return TrajectoryItem(
        key=key,
        question="Describe the scene.",
        regions=REGIONS,
        reference=reference,
        seeded_types=tuple(types),
        image_phrases=frozenset({"dog", "red car", "tree"}),
        vocabulary=("kite", "dog"),
        seed=11,
    )


def test_seeding_is_deterministic_and_spreads_the_types_over_items():
    types = ("object", "attribute", "spatial", "reasoning")
    first = [seed_item(seeded_item(str(n), types)) for n in range(40)]
    again = [seed_item(seeded_item(str(n), types)) for n in range(40)]
    assert [i.corrupted for i in first] == [i.corrupted for i in again]
    assert {i.error_type for i in first} == set(types)


def test_an_item_without_a_reference_or_any_possible_type_says_why():
    with pytest.raises(InjectionImpossible, match="no reference answer"):
        seed_item(seeded_item("1", ["attribute"], reference=None))
    with pytest.raises(InjectionImpossible) as raised:
        seed_item(seeded_item("1", ["attribute", "reasoning"], reference="A dog."))
    reasons = sorted(str(raised.value).split("; "))
    assert reasons[0].startswith("attribute: the answer names no colour")
    assert reasons[1].startswith("reasoning: the answer is one sentence")


def test_the_loop_starts_from_the_seeded_answer_and_the_rm_critiques_it():
    fast = RetryPolicy(max_retries=1, backoff_base=0.01)
    item = seeded_item("7", ["attribute"], reference="The car on the left is blue.")
    with LLMServer(responder=players.play) as server:
        m = make_generator(f"{server.url}#mllm", retry=fast)
        rm = make_generator(f"{server.url}#rm", retry=fast)
        [outcome] = run_batch([item], m=m, rm=rm, k=2)

    injection, result = outcome.injection, outcome.rectification
    assert injection.error_type == "attribute" and injection.detail["from"] == "blue"
    first = result.steps[0]
    assert (first.response, first.written_by, first.m_latency_s) == (
        injection.corrupted,
        "seeded:attribute",
        None,
    )
    assert first.feedback == players.FEEDBACK  # the RM caught it
    assert result.final == players.REVISED_ANSWER and result.outcome == "accepted"


def test_an_impossible_injection_is_the_items_error_and_calls_no_model():
    item = seeded_item("8", ["reasoning"], reference="A dog.")
    with LLMServer(responder=players.play) as server:
        m = make_generator(f"{server.url}#mllm")
        [outcome] = run_batch([item], m=m, rm=m, k=2)
        assert server.total == 0
    assert outcome.rectification is None
    assert outcome.error.startswith("seeded error: reasoning: the answer is one sentence")


def test_small_words_go_to_large_ones():
    injected = inject_error("A tiny cup.", "attribute")
    assert injected.detail["to"] in LARGE_WORDS and "tiny" in SMALL_WORDS
