"""Grounding DINO as a plain function: images and phrase lists in, pixel boxes out.

No Django and no Celery here: the pseudo-label task reads images and settings, calls
``load_detector(...).detect(...)`` and writes the regions.

How a call runs (``Detector.detect``):

1. Each image's phrase list is deduplicated and split into *chunks* whose prompt
   ``"[CLS] p1 . p2 . ... pk . [SEP]"`` fits the text encoder (``max_prompt_tokens``, never more
   than the model's ``max_text_len``, 256 for the released checkpoints).
2. Every image is preprocessed once by the checkpoint's own image processor; each
   (image, chunk) pair is one row of a forward pass. Rows are grouped by the processed image
   size, so a batch holds only images of the same shape and nothing is padded: an image's
   detections then never depend on which images share its batch, which keeps re-run batches
   identical (``DetectorParams.pad_mixed_sizes=True`` pads mixed sizes into one forward
   instead, as the processor does for a list of images: faster on a GPU for varied shapes,
   at the price of that independence).
3. Post-processing follows ``GroundingDinoProcessor.post_process_grounded_object_detection``
   (sigmoid of the token logits, centre boxes scaled by the original image size) but maps
   tokens back to the *caller's* phrases by their token spans instead of decoding token ids:

   - a query's box score is its highest token probability over the phrase tokens
     (separators and ``[CLS]``/``[SEP]`` excluded); it must exceed ``box_threshold``;
   - its phrase is the one with the highest mean token probability, which must exceed
     ``text_threshold`` (so a two-word phrase needs both words, not just one of them);
   - boxes are clipped to the image; boxes with no area left are dropped.
4. Detections of all chunks are merged and per-phrase NMS (IoU > ``nms_iou`` suppressed)
   keeps the best of overlapping boxes.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.geometry import Box, iou

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)


# BERT ids Grounding DINO uses to split the prompt into phrases (shared/NOTES-ML.md).
CLS_ID, SEP_ID, DOT_ID, QUESTION_ID = 101, 102, 1012, 1029
DEFAULT_MODEL = "IDEA-Research/grounding-dino-tiny"
BACKENDS = ("transformers", "groundingdino-py")
TOKEN_CACHE_SIZE = 100_000  # phrases whose token ids a detector remembers


@dataclass(frozen=True)
class Detection:
    box: Box  # pixel [x0, y0, x1, y1] of the image it came from, clipped to it, x0<x1, y0<y1
    score: float  # 0..1
    phrase: str  # the matched prompt phrase, exactly as the caller gave it


@dataclass(frozen=True)
class DetectorParams:
    box_threshold: float = 0.35
    text_threshold: float = 0.25
    nms_iou: float = 0.5  # per-phrase NMS; 1.0 turns it off
    max_prompt_tokens: int = 256  # chunking limit for long vocabularies
    # Additions (optional):
    batch_size: int | None = None  # rows (image, chunk) per forward; None: len(images)
    pad_mixed_sizes: bool = False  # pad images of different shapes into one forward


class DetectorError(RuntimeError):
    """The detector cannot be loaded or run as asked (missing backend, bad model folder)."""


# --------------------------------------------------------------------------- prompts


def normalise_vocabulary(labels: Iterable[str]) -> list[str]:
    """Lowercase, collapse spaces, strip, drop empties and duplicates; keep the first order.

    >>> normalise_vocabulary(["Dog", " dog ", "Red  Car", "", "cat", "DOG"])
    ['dog', 'red car', 'cat']
    """
    seen: dict[str, None] = {}
    for label in labels:
        clean = " ".join(label.lower().split())
        if clean:
            seen.setdefault(clean, None)
    return list(seen)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that end a noun phrase or never belong to one. A small closed list on purpose: the
# chunker is a dependency-free heuristic, not a parser.
_DETERMINERS = _words(
    "a an the this that these those his her its their our my your some any each every "
    "another other several many few both"
)
_STOP = _words(
    "is are was were be been being am has have had do does did will would can could should "
    "may might must shall and or but nor so yet if then than as of in on at by for with "
    "from to into onto over under above below behind between near beside next up down off "
    "out through across along around against during while where when which who whom whose "
    "what why how there here it he she they we you i me him them us not no very too also just only"
)
_NUMBERS = _words("one two three four five six seven eight nine ten eleven twelve dozen")
# Endings that mark a word as a verb or adverb rather than part of a noun phrase.
_NON_NOUN_SUFFIXES = ("ly", "ing", "ed")
_KEEP_ING = _words("building clothing ceiling painting railing awning ring king thing")
_WORD = re.compile(r"[a-z][a-z'-]*|[0-9]+")


def _is_nounish(word: str) -> bool:
    if word in _STOP or word in _DETERMINERS:
        return False
    if word in _KEEP_ING:
        return True
    return not (len(word) > 4 and word.endswith(_NON_NOUN_SUFFIXES))


def phrases_from_caption(caption: str) -> list[str]:
    """Noun phrases from a global caption, for the "caption" prompt mode.

    A simple chunker: the caption is cut at punctuation, function words (articles,
    prepositions, conjunctions, auxiliaries, pronouns) and words that look like verbs or
    adverbs (``-ing``, ``-ed``, ``-ly``); the runs of words left are the phrases. Numbers are
    dropped from a phrase's start. Phrases come out lowercase, deduplicated, in caption order.

    >>> phrases_from_caption("A brown dog is sitting on a red sofa next to the window.")
    ['brown dog', 'red sofa', 'window']
    >>> phrases_from_caption("Two men riding horses along the beach at sunset")
    ['men', 'horses', 'beach', 'sunset']
    >>> phrases_from_caption("A man, a woman and a child in front of an old building")
    ['man', 'woman', 'child', 'front', 'old building']
    >>> phrases_from_caption("")
    []
    """
    phrases: list[str] = []
    current: list[str] = []

    def close() -> None:
        while current and (current[0] in _NUMBERS or current[0].isdigit()):
            current.pop(0)
        if current:
            phrases.append(" ".join(current))
        current.clear()

    for piece in re.split(r"[.,;:!?()\[\]\"/]+", caption.lower()):
        for word in _WORD.findall(piece):
            if _is_nounish(word):
                current.append(word)
            else:
                close()
        close()
    return normalise_vocabulary(phrases)


def chunk_by_length(lengths: Sequence[int], limit: int) -> list[list[int]]:
    """Split items with the given token ``lengths`` into runs whose prompt fits ``limit``.

    A prompt costs 2 tokens (``[CLS]``, ``[SEP]``) plus each phrase's tokens and its ``.``.
    Order is kept and each chunk is filled greedily. Returns lists of indices.

    >>> chunk_by_length([3, 3, 3, 3], limit=10)
    [[0, 1], [2, 3]]
    >>> chunk_by_length([1, 1, 1], limit=256)
    [[0, 1, 2]]
    >>> chunk_by_length([], limit=10)
    []
    """
    if limit < 4:
        raise ValueError(f"a prompt limit of {limit} tokens leaves no room for a phrase")
    chunks: list[list[int]] = []
    used = 2
    for i, length in enumerate(lengths):
        cost = length + 1
        if not chunks or used + cost > limit:
            chunks.append([])
            used = 2
        chunks[-1].append(i)
        used += cost
    return chunks


@dataclass(frozen=True)
class PromptChunk:
    """One prompt: its phrases, its token ids and each phrase's token span ``[start, end)``."""

    phrases: tuple[str, ...]
    input_ids: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]


def build_prompt(phrases: Sequence[str], token_ids: Sequence[Sequence[int]]) -> PromptChunk:
    """``[CLS] p1 . p2 . ... [SEP]`` from each phrase's WordPiece ids, with the phrase spans.

    This is what ``GroundingDinoProcessor`` makes of ``["a cat", "a dog"]`` ("a cat. a dog."),
    since BERT's tokenizer splits on "." and spaces; the tests check they agree.

    >>> build_prompt(["cat", "red car"], [[7], [8, 9]])
    PromptChunk(phrases=('cat', 'red car'), input_ids=(101, 7, 1012, 8, 9, 1012, 102), spans=((1, 2), (3, 5)))
    """  # noqa: E501
    ids = [CLS_ID]
    spans = []
    for ids_of_phrase in token_ids:
        start = len(ids)
        ids.extend(ids_of_phrase)
        spans.append((start, len(ids)))
        ids.append(DOT_ID)
    ids.append(SEP_ID)
    return PromptChunk(tuple(phrases), tuple(ids), tuple(spans))


# --------------------------------------------------------------------------- geometry


def cxcywh_to_pixels(box: Sequence[float], width: int, height: int) -> Box | None:
    """A normalised centre box to pixel ``[x0, y0, x1, y1]`` clipped to the image, or None
    when nothing of it lies inside.

    >>> cxcywh_to_pixels((0.5, 0.5, 0.5, 0.5), 200, 100)
    (50.0, 25.0, 150.0, 75.0)
    >>> cxcywh_to_pixels((0.0, 0.5, 0.5, 1.2), 200, 100)
    (0.0, 0.0, 50.0, 100.0)
    >>> cxcywh_to_pixels((1.2, 0.5, 0.1, 0.1), 200, 100) is None
    True
    """
    cx, cy, w, h = (float(v) for v in box)
    x0 = min(max((cx - w / 2) * width, 0.0), float(width))
    x1 = min(max((cx + w / 2) * width, 0.0), float(width))
    y0 = min(max((cy - h / 2) * height, 0.0), float(height))
    y1 = min(max((cy + h / 2) * height, 0.0), float(height))
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1, y1)


def _order(d: Detection) -> tuple[float, str, Box]:
    return (-d.score, d.phrase, d.box)


def nms_per_phrase(detections: Iterable[Detection], iou_threshold: float) -> list[Detection]:
    """Greedy NMS within each phrase: a box overlapping a better one of the same phrase by
    IoU > ``iou_threshold`` is dropped. Result sorted by score (best first), then phrase.

    >>> a = Detection((0, 0, 10, 10), 0.9, "dog")
    >>> b = Detection((1, 0, 11, 10), 0.8, "dog")
    >>> c = Detection((1, 0, 11, 10), 0.7, "cat")
    >>> nms_per_phrase([c, b, a], 0.5) == [a, c]
    True
    >>> len(nms_per_phrase([a, b, c], 1.0))
    3
    """
    by_phrase: dict[str, list[Detection]] = defaultdict(list)
    for d in detections:
        by_phrase[d.phrase].append(d)
    kept: list[Detection] = []
    for group in by_phrase.values():
        group.sort(key=_order)
        survivors: list[Detection] = []
        for d in group:
            if all(iou(d.box, s.box) <= iou_threshold for s in survivors):
                survivors.append(d)
        kept.extend(survivors)
    kept.sort(key=_order)
    return kept


def decode_queries(
    probs: torch.Tensor,
    boxes: torch.Tensor,
    spans: Sequence[tuple[int, int]],
    phrases: Sequence[str],
    width: int,
    height: int,
    params: DetectorParams,
) -> list[Detection]:
    """Detections of one (image, prompt) row.

    ``probs``: (queries, text_len) sigmoid token probabilities; ``boxes``: (queries, 4)
    normalised centre boxes; ``spans``: each phrase's token range in the prompt.
    """
    import torch

    if not spans:
        return []
    # (queries, phrases): best and mean token probability inside each phrase's span.
    best = torch.stack([probs[:, s:e].max(dim=1).values for s, e in spans], dim=1)
    mean = torch.stack([probs[:, s:e].mean(dim=1) for s, e in spans], dim=1)
    box_score = best.max(dim=1).values
    phrase_score, phrase_index = mean.max(dim=1)
    keep = (box_score > params.box_threshold) & (phrase_score > params.text_threshold)
    out = []
    for q in keep.nonzero(as_tuple=True)[0].tolist():
        pixel_box = cxcywh_to_pixels(boxes[q].tolist(), width, height)
        if pixel_box is not None:
            phrase = phrases[int(phrase_index[q])]
            out.append(Detection(pixel_box, float(box_score[q]), phrase))
    return out


# --------------------------------------------------------------------------- detector


@dataclass
class _Row:
    image: int  # index into the caller's images
    chunk: PromptChunk


class Detector:
    """A loaded detector. Backends implement ``_tokenize``, ``_preprocess`` and ``_forward``;
    chunking, batching, decoding and NMS are shared."""

    model_id: str
    backend: str = ""
    device: str = "cpu"
    dtype: str = "float32"
    max_text_len: int = 256
    _token_cache: dict[str, tuple[int, ...]]

    def detect(
        self,
        images: Sequence[Image.Image],
        phrases: Sequence[Sequence[str]],
        params: DetectorParams = DetectorParams(),
    ) -> list[list[Detection]]:
        """One detection list per image, best score first; see the module docstring."""
        if len(images) != len(phrases):
            raise ValueError(f"{len(images)} images but {len(phrases)} phrase lists")
        rows = [
            _Row(i, chunk)
            for i, image_phrases in enumerate(phrases)
            for chunk in self.prompt_chunks(image_phrases, params)
        ]
        found: list[list[Detection]] = [[] for _ in images]
        if not rows:
            return found
        needed = sorted({row.image for row in rows})
        tensors = dict(zip(needed, self._preprocess([images[i] for i in needed]), strict=True))
        batch_size = params.batch_size or max(len(images), 1)
        for batch in _batches(rows, tensors, batch_size, params.pad_mixed_sizes):
            results = self._forward([tensors[r.image] for r in batch], [r.chunk for r in batch])
            for row, (probs, boxes) in zip(batch, results, strict=True):
                width, height = images[row.image].size
                found[row.image].extend(
                    decode_queries(
                        probs, boxes, row.chunk.spans, row.chunk.phrases, width, height, params
                    )
                )
        return [nms_per_phrase(d, params.nms_iou) for d in found]

    def prompt_chunks(
        self,
        phrases: Sequence[str],
        params: DetectorParams = DetectorParams(),
    ) -> list[PromptChunk]:
        """The prompts ``detect`` runs for one image's phrase list, in order."""
        limit = min(params.max_prompt_tokens, self.max_text_len)
        unique = list(dict.fromkeys(p for p in phrases if p.strip()))
        token_ids = []
        for phrase in unique:
            ids = self._token_cache.get(phrase)
            if ids is None:
                if len(self._token_cache) > TOKEN_CACHE_SIZE:
                    self._token_cache.clear()
                ids = self._token_cache[phrase] = self._tokenize(phrase)
            if len(ids) + 3 > limit:
                log.warning("phrase %r is %d tokens; cut to fit %d", phrase, len(ids), limit)
                ids = ids[: limit - 3]
            token_ids.append(ids)
        keep = [i for i, ids in enumerate(token_ids) if ids]
        unique, token_ids = [unique[i] for i in keep], [token_ids[i] for i in keep]
        return [
            build_prompt([unique[i] for i in chunk], [token_ids[i] for i in chunk])
            for chunk in chunk_by_length([len(ids) for ids in token_ids], limit)
        ]

    # Backend hooks -------------------------------------------------------------------
    def _tokenize(self, phrase: str) -> tuple[int, ...]:
        raise NotImplementedError

    def _preprocess(self, images: Sequence[Image.Image]) -> list[torch.Tensor]:
        """Each image as a normalised (3, h, w) tensor, as the model expects it."""
        raise NotImplementedError

    def _forward(
        self, pixels: Sequence[torch.Tensor], chunks: Sequence[PromptChunk]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per row: (queries, text_len) float32 token probabilities and (queries, 4) boxes."""
        raise NotImplementedError


def _batches(
    rows: Sequence[_Row], tensors: dict[int, torch.Tensor], size: int, pad: bool
) -> Iterable[list[_Row]]:
    """Rows grouped by processed image shape (unless ``pad``), ``size`` at a time."""
    groups: dict[Any, list[_Row]] = defaultdict(list)
    for row in rows:
        groups[None if pad else tuple(tensors[row.image].shape)].append(row)
    for group in groups.values():
        for start in range(0, len(group), size):
            yield group[start : start + size]


def pad_and_stack(pixels: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad (3, h, w) tensors at the bottom and right to one shape; return the batch and
    its pixel mask (1 = real pixel), the way the Grounding DINO image processor pads a list."""
    import torch

    height = max(p.shape[1] for p in pixels)
    width = max(p.shape[2] for p in pixels)
    batch = pixels[0].new_zeros((len(pixels), 3, height, width))
    mask = torch.zeros((len(pixels), height, width), dtype=torch.long, device=pixels[0].device)
    for i, p in enumerate(pixels):
        batch[i, :, : p.shape[1], : p.shape[2]] = p
        mask[i, : p.shape[1], : p.shape[2]] = 1
    return batch, mask


def _sanitise(phrase: str) -> str:
    """A phrase's own "." or "?" would split it in two for the model: make them spaces."""
    return " ".join(re.sub(r"[.?]", " ", phrase.lower()).split())


class TransformersDetector(Detector):
    """``AutoModelForZeroShotObjectDetection`` + ``AutoProcessor`` from an id or a folder."""

    backend = "transformers"

    def __init__(self, model_id: str, device: str, dtype: str) -> None:
        import torch
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        self.model_id, self.device, self.dtype = model_id, device, dtype
        self._token_cache = {}
        try:
            self.processor = AutoProcessor.from_pretrained(model_id)
            self.model = AutoModelForZeroShotObjectDetection.from_pretrained(
                model_id, dtype=getattr(torch, dtype)
            )
        except OSError as exc:
            raise DetectorError(f"cannot load detector {model_id!r}: {exc}") from exc
        self.model.to(device).eval()
        self.max_text_len = int(getattr(self.model.config, "max_text_len", 256))

    def _tokenize(self, phrase: str) -> tuple[int, ...]:
        ids = self.processor.tokenizer(_sanitise(phrase), add_special_tokens=False)["input_ids"]
        return tuple(i for i in ids if i not in (DOT_ID, QUESTION_ID))

    def _preprocess(self, images: Sequence[Image.Image]) -> list[torch.Tensor]:
        out = []
        for image in images:
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            encoded = self.processor.image_processor(images=[rgb], return_tensors="pt")
            out.append(encoded["pixel_values"][0])
        return out

    def _forward(
        self, pixels: Sequence[torch.Tensor], chunks: Sequence[PromptChunk]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        import torch

        pixel_values, pixel_mask = pad_and_stack(pixels)
        length = max(len(c.input_ids) for c in chunks)
        input_ids = torch.zeros((len(chunks), length), dtype=torch.long)
        attention = torch.zeros((len(chunks), length), dtype=torch.long)
        for i, chunk in enumerate(chunks):
            input_ids[i, : len(chunk.input_ids)] = torch.tensor(chunk.input_ids)
            attention[i, : len(chunk.input_ids)] = 1
        device = self.model.device
        with torch.inference_mode():
            outputs = self.model(
                pixel_values=pixel_values.to(device, self.model.dtype),
                pixel_mask=pixel_mask.to(device),
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                token_type_ids=torch.zeros_like(input_ids).to(device),
            )
        probs = outputs.logits.float().sigmoid().cpu()
        boxes = outputs.pred_boxes.float().cpu()
        return [(probs[i, :, : len(chunk.input_ids)], boxes[i]) for i, chunk in enumerate(chunks)]


class GroundingDinoPyDetector(Detector):
    """The original ``groundingdino`` package (``groundingdino-py``), for users who hold the
    ``.pth`` checkpoints and their Python config files.

    ``model`` is a folder holding one ``*.py`` config and one ``*.pth`` checkpoint, or
    ``"CONFIG.py::CHECKPOINT.pth"``. The package needs ``transformers<5`` and a torch of its
    own, so it runs in a separate worker environment (``requirements/groundingdino.txt``).
    """

    backend = "groundingdino-py"

    def __init__(self, model_id: str, device: str, dtype: str) -> None:
        try:
            import groundingdino.datasets.transforms as T
            from groundingdino.models import build_model
            from groundingdino.util.misc import clean_state_dict
            from groundingdino.util.slconfig import SLConfig
        except ImportError as exc:
            raise DetectorError(
                "backend 'groundingdino-py' needs the groundingdino package, which is not "
                "installed here. It requires transformers<5, so install it in a worker "
                "environment of its own: pip install -r requirements/groundingdino.txt "
                f"({exc})"
            ) from exc
        import torch

        config_path, checkpoint_path = _groundingdino_files(model_id)
        self.model_id, self.device, self.dtype = model_id, device, dtype
        self._token_cache = {}
        args = SLConfig.fromfile(str(config_path))
        args.device = device
        self.model = build_model(args)
        checkpoint = torch.load(str(checkpoint_path), map_location="cpu", weights_only=False)
        self.model.load_state_dict(clean_state_dict(checkpoint["model"]), strict=False)
        self.model.to(device=device, dtype=getattr(torch, dtype)).eval()
        self.max_text_len = int(getattr(args, "max_text_len", 256))
        self.tokenizer = self.model.tokenizer
        self.transform = T.Compose(
            [
                T.RandomResize([800], max_size=1333),
                T.ToTensor(),
                T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            ]
        )

    def _tokenize(self, phrase: str) -> tuple[int, ...]:
        ids = self.tokenizer(_sanitise(phrase), add_special_tokens=False)["input_ids"]
        return tuple(i for i in ids if i not in (DOT_ID, QUESTION_ID))

    def _preprocess(self, images: Sequence[Image.Image]) -> list[torch.Tensor]:
        return [self.transform(image.convert("RGB"), None)[0] for image in images]

    def _forward(
        self, pixels: Sequence[torch.Tensor], chunks: Sequence[PromptChunk]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        import torch

        # The package tokenizes the caption itself; its ids must be the prompt we decode with.
        captions = [". ".join(_sanitise(p) for p in c.phrases) + "." for c in chunks]
        with torch.inference_mode():
            samples = [p.to(self.device, getattr(torch, self.dtype)) for p in pixels]
            outputs = self.model(samples, captions=captions)
        probs = outputs["pred_logits"].float().sigmoid().cpu()
        boxes = outputs["pred_boxes"].float().cpu()
        return [(probs[i, :, : len(chunk.input_ids)], boxes[i]) for i, chunk in enumerate(chunks)]


def _groundingdino_files(model: str) -> tuple[Path, Path]:
    if "::" in model:
        config, checkpoint = model.split("::", 1)
        return Path(config), Path(checkpoint)
    folder = Path(model)
    configs, checkpoints = sorted(folder.glob("*.py")), sorted(folder.glob("*.pth"))
    if len(configs) != 1 or len(checkpoints) != 1:
        raise DetectorError(
            f"{model!r}: expected a folder with exactly one *.py config and one *.pth "
            "checkpoint, or 'CONFIG.py::CHECKPOINT.pth'"
        )
    return configs[0], checkpoints[0]


# --------------------------------------------------------------------------- loading


def resolve_device(device: str = "auto") -> str:
    """``auto`` is ``cuda`` when a GPU is visible, else ``cpu``; anything else is kept."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto`` is bfloat16 on a GPU that supports it (else float16) and float32 on a CPU.

    >>> resolve_dtype("auto", "cpu")
    'float32'
    >>> resolve_dtype("fp16", "cuda")
    'float16'
    """
    aliases = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16"}
    dtype = aliases.get(dtype, dtype)
    if dtype == "auto":
        if not device.startswith("cuda"):
            return "float32"
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if dtype not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"unknown dtype {dtype!r}: use auto, float32, float16 or bfloat16")
    return dtype


def load_detector(
    model: str = DEFAULT_MODEL,
    *,
    device: str = "auto",
    dtype: str = "auto",
    backend: str = "transformers",
) -> Detector:
    """The detector for ``model`` (a hub id or a local folder), loaded once per process.

    Repeated calls with the same arguments return the same object, so a worker process that
    handles many batches loads the weights only the first time.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown detector backend {backend!r}: use one of {BACKENDS}")
    resolved = resolve_device(device)
    return _load(model, resolved, resolve_dtype(dtype, resolved), backend)


@functools.cache
def _load(model: str, device: str, dtype: str, backend: str) -> Detector:
    log.info("loading detector %s (%s, %s, %s)", model, backend, device, dtype)
    if backend == "groundingdino-py":
        return GroundingDinoPyDetector(model, device, dtype)
    return TransformersDetector(model, device, dtype)
