"""The Grounding DINO adapter, run on a tiny random model saved and loaded like real weights."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
from PIL import Image

from workers import detection
from workers.detection import Detection, DetectorError, DetectorParams, nms_per_phrase
from workers.detection_prompts import normalise_vocabulary, phrases_from_caption
from workers.grounding_dino import load_detector, pad_and_stack
from workers.tiny_models import build_tiny_grounding_dino

EVERYTHING = DetectorParams(box_threshold=0.0, text_threshold=0.0, nms_iou=1.0)
VOCABULARY = normalise_vocabulary(
    f"{colour} {thing}"
    for colour in ("red", "blue", "green", "white", "black", "brown")
    for thing in ("dog", "cat", "car", "bus", "tree", "house", "chair", "table", "cup", "kite")
)


@pytest.fixture(scope="session")
def tiny_gdino_dir(tmp_path_factory):
    return build_tiny_grounding_dino(tmp_path_factory.mktemp("tiny-grounding-dino"))


@pytest.fixture(scope="session")
def detector(tiny_gdino_dir):
    return load_detector(str(tiny_gdino_dir), device="cpu")


def noise_image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def assert_same_detections(got: list[Detection], expected: list[Detection], tol=1e-4) -> None:
    def key(d):
        return (d.phrase, round(d.box[0], 1), round(d.box[1], 1))

    got, expected = sorted(got, key=key), sorted(expected, key=key)
    assert [d.phrase for d in got] == [d.phrase for d in expected]
    for g, e in zip(got, expected, strict=True):
        assert g.score == pytest.approx(e.score, abs=tol)
        assert g.box == pytest.approx(e.box, abs=1e-2)


def reference_boxes(detector, image: Image.Image, phrases: list[str]) -> torch.Tensor:
    """Boxes of every query the way the transformers docs do it: processor + post-process."""
    processor, model = detector.processor, detector.model
    inputs = processor(images=[image], text=[phrases], return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    (result,) = processor.post_process_grounded_object_detection(
        outputs,
        inputs["input_ids"],
        threshold=0.0,
        text_threshold=0.0,
        target_sizes=[(image.height, image.width)],
    )
    boxes = result["boxes"]
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image.width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image.height)
    return boxes


def test_doctests_pass():
    assert doctest.testmod(detection).failed == 0


def test_it_loads_a_saved_folder_once_per_process(tiny_gdino_dir, detector):
    assert type(detector.model).__name__ == "GroundingDinoForObjectDetection"
    assert type(detector.processor).__name__ == "GroundingDinoProcessor"
    assert (detector.model_id, detector.device, detector.dtype) == (
        str(tiny_gdino_dir),
        "cpu",
        "float32",
    )
    assert load_detector(str(tiny_gdino_dir), device="cpu", dtype="auto") is detector


def test_a_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DetectorError, match="cannot load detector"):
        load_detector(str(tmp_path / "nothing-here"), device="cpu")


def test_an_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown detector backend"):
        load_detector("x", backend="yolo")


def test_the_groundingdino_py_backend_says_what_to_install(tmp_path):
    try:
        import groundingdino  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("groundingdino is installed here")
    with pytest.raises(DetectorError, match=r"requirements/groundingdino\.txt"):
        load_detector(str(tmp_path), device="cpu", backend="groundingdino-py")


def test_its_prompt_is_the_one_the_processor_builds(detector):
    phrases = ["a cat", "Red car", "the tree on the left"]
    (chunk,) = detector.prompt_chunks(phrases)
    expected = detector.processor(text=[phrases], return_tensors="pt")["input_ids"][0].tolist()
    assert list(chunk.input_ids) == expected
    assert chunk.phrases == tuple(phrases)
    assert [expected[s:e] for s, e in chunk.spans] == [
        detector.processor.tokenizer(p.lower(), add_special_tokens=False)["input_ids"]
        for p in phrases
    ]


def test_it_returns_one_list_per_image_with_pixel_boxes_inside_each_image(detector):
    images = [noise_image(200, 150, 1), noise_image(160, 240, 2), noise_image(90, 300, 3)]
    phrases = [["dog", "cat"], ["red car"], ["kite", "sky"]]
    found = detector.detect(images, phrases, EVERYTHING)
    assert len(found) == 3
    for image, image_phrases, detections in zip(images, phrases, found, strict=True):
        assert 40 <= len(detections) <= 50  # one per query (50), less boxes fully outside
        for d in detections:
            x0, y0, x1, y1 = d.box
            assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
            assert 0.0 <= d.score <= 1.0
            assert d.phrase in image_phrases
        assert [d.score for d in detections] == sorted((d.score for d in detections), reverse=True)


def test_boxes_match_the_transformers_post_processing_in_pixels(detector):
    for image in (noise_image(200, 150, 4), noise_image(160, 240, 5)):
        (found,) = detector.detect([image], [["dog", "red car"]], EVERYTHING)
        expected = reference_boxes(detector, image, ["dog", "red car"])
        expected = expected[(expected[:, 2] > expected[:, 0]) & (expected[:, 3] > expected[:, 1])]
        got = torch.tensor(sorted(d.box for d in found))
        assert got.shape == expected.shape
        assert torch.allclose(got, torch.tensor(sorted(expected.tolist())), atol=1e-3)


def test_an_image_without_phrases_gets_no_detections(detector):
    found = detector.detect([noise_image(64, 64, 6), noise_image(64, 64, 7)], [[], ["dog"]])
    assert found[0] == []
    assert detector.detect([], []) == []


def test_thresholds_filter_detections(detector):
    image, phrases = noise_image(200, 150, 8), [["dog", "red car", "tree"]]
    everything = detector.detect([image], phrases, EVERYTHING)[0]
    default = detector.detect([image], phrases)[0]
    strict = detector.detect([image], phrases, DetectorParams(box_threshold=0.6))[0]
    nothing = detector.detect([image], phrases, DetectorParams(box_threshold=1.01))[0]
    assert len(everything) >= 40
    assert len(everything) > len(default) > len(strict) > 0
    assert nothing == []
    assert all(d.score > 0.6 for d in strict)
    no_phrase = DetectorParams(box_threshold=0.0, text_threshold=0.999)
    assert detector.detect([image], phrases, no_phrase)[0] == []


def test_per_phrase_nms_removes_overlapping_boxes_of_one_phrase():
    a = Detection((0.0, 0.0, 10.0, 10.0), 0.9, "dog")
    b = Detection((1.0, 0.0, 11.0, 10.0), 0.8, "dog")
    c = Detection((1.0, 0.0, 11.0, 10.0), 0.7, "cat")
    d = Detection((50.0, 50.0, 60.0, 60.0), 0.6, "dog")
    assert nms_per_phrase([d, c, b, a], 0.5) == [a, c, d]
    assert nms_per_phrase([d, c, b, a], 0.9) == [a, b, c, d]


def test_a_long_vocabulary_is_split_into_chunks_that_fit(detector):
    params = DetectorParams(max_prompt_tokens=32)
    chunks = detector.prompt_chunks(VOCABULARY, params)
    assert len(chunks) > 3
    assert all(len(c.input_ids) <= 32 for c in chunks)
    assert [p for c in chunks for p in c.phrases] == VOCABULARY
    assert len(detector.prompt_chunks(VOCABULARY)) == 1  # 60 phrases fit in 256 tokens


def test_chunked_results_equal_running_the_chunks_separately(detector):
    params = DetectorParams(box_threshold=0.3, max_prompt_tokens=32)
    images = [noise_image(200, 150, 9), noise_image(120, 160, 10)]
    merged = detector.detect(images, [VOCABULARY, VOCABULARY[:20]], params)
    for image, vocabulary, got in zip(images, [VOCABULARY, VOCABULARY[:20]], merged, strict=True):
        separate = []
        for chunk in detector.prompt_chunks(vocabulary, params):
            separate += detector.detect([image], [list(chunk.phrases)], params)[0]
        assert len({d.phrase for d in got}) > 5  # phrases from several chunks
        assert_same_detections(got, nms_per_phrase(separate, params.nms_iou))


def test_batched_detections_equal_one_image_at_a_time(detector):
    images = [
        noise_image(200, 150, 11),
        noise_image(160, 240, 12),
        noise_image(200, 150, 13),
        noise_image(400, 300, 14),  # same processed shape as the 200x150 ones
        noise_image(100, 100, 15),
    ]
    phrases = [["dog", "cat"], ["red car"], VOCABULARY[:30], ["tree", "kite"], ["cup"]]
    batched = detector.detect(images, phrases)
    by_two = detector.detect(images, phrases, DetectorParams(batch_size=2))
    for i, image in enumerate(images):
        (single,) = detector.detect([image], [phrases[i]])
        assert single, "the test needs detections to compare"
        assert_same_detections(batched[i], single)
        assert_same_detections(by_two[i], single)


def test_mixed_sizes_are_padded_like_the_processor_pads_them(detector):
    images = [noise_image(200, 150, 16), noise_image(160, 240, 17)]
    expected = detector.processor.image_processor(images=images, return_tensors="pt")
    pixels, mask = pad_and_stack(detector._preprocess(images))
    assert torch.equal(pixels, expected["pixel_values"])
    assert torch.equal(mask, expected["pixel_mask"])

    padded = detector.detect(
        images,
        [["dog"], ["dog"]],
        DetectorParams(box_threshold=0.0, text_threshold=0.0, nms_iou=1.0, pad_mixed_sizes=True),
    )
    inputs = detector.processor(images=images, text=[["dog"], ["dog"]], return_tensors="pt")
    with torch.no_grad():
        outputs = detector.model(**inputs)
    reference = detector.processor.post_process_grounded_object_detection(
        outputs,
        inputs["input_ids"],
        threshold=0.0,
        text_threshold=0.0,
        target_sizes=[(im.height, im.width) for im in images],
    )
    for image, got, ref in zip(images, padded, reference, strict=True):
        boxes = ref["boxes"]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image.width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image.height)
        boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
        assert torch.allclose(
            torch.tensor(sorted(d.box for d in got)),
            torch.tensor(sorted(boxes.tolist())),
            atol=1e-3,
        )


@pytest.mark.parametrize(
    ("caption", "phrases"),
    [
        ("A cat sleeping on a laptop.", ["cat", "laptop"]),
        ("Three red apples and a green pear in a bowl", ["red apples", "green pear", "bowl"]),
        ("Man riding a surfboard; waves behind him", ["man", "surfboard", "waves"]),
        ("The dog, the dog and THE DOG", ["dog"]),
        ("is on the of", []),
    ],
)
def test_noun_phrases_come_from_a_caption(caption, phrases):
    assert phrases_from_caption(caption) == phrases
