"""The Grounding DINO backends behind ``workers.detection.Detector``, and loading one once per
process (``load_detector``).

- ``transformers``: ``AutoModelForZeroShotObjectDetection`` with the checkpoint's own
  processor, from a hub id or a folder (the default);
- ``groundingdino-py``: the original ``groundingdino`` package and its ``.pth`` checkpoints,
  in a worker environment of its own.

Each backend only tokenizes, preprocesses and runs the forward pass; chunking, batching,
decoding and NMS are the shared run in ``workers.detection``.

No Django here.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from training.devices import resolve_device, resolve_dtype
from training.models_available import ModelNotAvailable, check_model
from workers.detection import Detector, DetectorError
from workers.detection_prompts import PromptChunk, phrase_token_ids, sanitise_phrase

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

DEFAULT_MODEL = "IDEA-Research/grounding-dino-tiny"
BACKENDS = ("transformers", "groundingdino-py")


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
        return phrase_token_ids(self.processor.tokenizer, phrase)

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
        return phrase_token_ids(self.tokenizer, phrase)

    def _preprocess(self, images: Sequence[Image.Image]) -> list[torch.Tensor]:
        return [self.transform(image.convert("RGB"), None)[0] for image in images]

    def _forward(
        self, pixels: Sequence[torch.Tensor], chunks: Sequence[PromptChunk]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        import torch

        # The package tokenizes the caption itself; its ids must be the prompt we decode with.
        captions = [". ".join(sanitise_phrase(p) for p in c.phrases) + "." for c in chunks]
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
    try:  # before torch and transformers load: a missing model fails at once, in one line
        check_model(model, role="detector")
    except ModelNotAvailable as exc:
        raise DetectorError(str(exc)) from None
    return TransformersDetector(model, device, dtype)
