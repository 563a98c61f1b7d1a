"""Pseudo-label runs: Grounding DINO proposes regions (origin ``detector``) on a dataset's images.

``start_pseudo_label_run`` records the run with every parameter and queues its planning;
``process_pseudo_label_batch`` is what the ``fgam.gpu.pseudo_label_batch`` task does for one
batch of image ids. Regions get the key ``run:<run>:<image>:<n>`` (``n``: the detection's
position in the detector's output for that image), unique per image in the database, and are
inserted with conflicts ignored: a batch run twice, after a crash or a retry, adds nothing.
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Sequence

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone
from PIL import Image as PILImage

from training.geometry import BoxError, fit_box
from webapp.catalog.models import Dataset, Image
from webapp.catalog.thumbnails import NoStoredBytes, read_stored_bytes
from webapp.core.importing.bulk import insert_rows
from webapp.jobs.models import Run, RunBatch
from webapp.jobs.services import (
    BatchOutcome,
    check_filter,
    claim_batch,
    filter_ids,
    finish_batch,
)
from webapp.regions.models import Region
from workers.imaging import ImageProblem

PROMPT_MODES = ("labels", "vocabulary", "caption")
# Images per task (and per forward pass). Each task pays a fixed 15-35 ms for the broker round
# trip, claiming, the bulk write and the counters; at 8 images that was half the time of the
# tiny CPU detector and a quarter of a GPU's, at 32 it is under a fifth (bench_pipeline).
DEFAULT_BATCH_SIZE = 32
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "float16", "bfloat16")
IMAGE_FILTER_KEYS = frozenset({"split", "ids", "min_id", "max_id"})
REGION_COLUMNS = (
    "image_id",
    "image_width",
    "image_height",
    "x0",
    "y0",
    "x1",
    "y1",
    "phrase",
    "score",
    "source_key",
)


def source_key(run_id: int, image_id: int, n: int) -> str:
    return f"run:{run_id}:{image_id}:{n}"


def check_image_filter(image_filter: dict | None) -> dict:
    """A clean copy of ``image_filter``; ``ValueError`` names the bad key."""
    image_filter = check_filter(image_filter, name="image_filter", keys=IMAGE_FILTER_KEYS)
    if "split" in image_filter and image_filter["split"] not in Image.Split.values:
        raise ValueError(f"image_filter.split: {image_filter['split']!r} is not a split")
    return image_filter


def selected_images(run: Run) -> QuerySet[Image]:
    """The images a pseudo-label run covers: its dataset narrowed by its ``image_filter``."""
    images = Image.objects.filter(dataset_id=run.dataset_id)
    image_filter = run.parameters.get("image_filter") or {}
    if "split" in image_filter:
        images = images.filter(split=image_filter["split"])
    return filter_ids(images, image_filter)


def dataset_vocabulary(dataset: Dataset) -> list[str]:
    """The distinct phrases of the dataset's ground-truth regions, normalised."""
    from workers.detection_prompts import normalise_vocabulary

    phrases = (
        Region.objects.filter(image__dataset=dataset, origin=Region.Origin.GT)
        .exclude(phrase="")
        .order_by()
        .values_list("phrase", flat=True)
        .distinct()
    )
    return normalise_vocabulary(phrases.iterator(chunk_size=10_000))


def start_pseudo_label_run(
    *,
    dataset: Dataset,
    model: str = "",
    prompt_mode: str = "labels",
    labels: Sequence[str] | None = None,
    box_threshold: float | None = None,
    text_threshold: float | None = None,
    nms_iou: float = 0.5,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "",
    dtype: str = "",
    backend: str = "",
    user=None,
    image_filter: dict | None = None,
) -> Run:
    """Record a pseudo-label run and queue it; ``ValueError`` for a bad parameter.

    The prompt is resolved here and stored: a fixed label list, or the dataset's vocabulary
    (its ground-truth phrases), or ``caption`` (noun phrases of each image's global caption,
    taken in the batch). Without a broker the whole run happens before this returns.
    """
    from webapp.jobs.tasks import plan_run
    from workers.detection_prompts import normalise_vocabulary

    if prompt_mode not in PROMPT_MODES:
        raise ValueError(f"prompt_mode must be one of {', '.join(PROMPT_MODES)}")
    if prompt_mode == "labels":
        prompt_labels = normalise_vocabulary(labels or [])
        if not prompt_labels:
            raise ValueError("labels: give at least one label for prompt_mode 'labels'")
    elif prompt_mode == "vocabulary":
        prompt_labels = dataset_vocabulary(dataset)
        if not prompt_labels:
            raise ValueError(
                f"dataset {dataset.name!r} has no ground-truth phrases to use as a vocabulary"
            )
    else:
        if labels:
            raise ValueError("labels are only used with prompt_mode 'labels'")
        prompt_labels = []
    box_threshold = settings.FGAM_BOX_THRESHOLD if box_threshold is None else box_threshold
    text_threshold = settings.FGAM_TEXT_THRESHOLD if text_threshold is None else text_threshold
    for name, value in (
        ("box_threshold", box_threshold),
        ("text_threshold", text_threshold),
        ("nms_iou", nms_iou),
    ):
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1")
    if not 1 <= int(batch_size) <= 1024:
        raise ValueError("batch_size must be between 1 and 1024")
    device = device or settings.FGAM_DEVICE
    dtype = dtype or settings.FGAM_DTYPE
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ValueError(f"device must be one of {', '.join(DEVICES)} or cuda:N")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
    run = Run.objects.create(
        kind=Run.Kind.PSEUDO_LABEL,
        dataset=dataset,
        model_id=model or settings.FGAM_DETECTOR_MODEL,
        created_by=user if user is not None and user.is_authenticated else None,
        parameters={
            "prompt_mode": prompt_mode,
            "labels": prompt_labels,
            "box_threshold": float(box_threshold),
            "text_threshold": float(text_threshold),
            "nms_iou": float(nms_iou),
            "batch_size": int(batch_size),
            "device": device,
            "dtype": dtype,
            "backend": backend or settings.FGAM_DETECTOR_BACKEND,
            "image_filter": check_image_filter(image_filter),
        },
    )
    plan_run.delay_on_commit(run.pk)
    run.refresh_from_db()
    return run


def decode_rgb(data: bytes, *, max_pixels: int) -> PILImage.Image:
    """The stored pixels as RGB, in the stored layout (boxes are in these pixels)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
        try:
            image = PILImage.open(io.BytesIO(data))
            if image.width * image.height > max_pixels:
                raise ImageProblem(f"{image.width}x{image.height} exceeds {max_pixels} pixels")
            image.load()
        except ImageProblem:
            raise
        except Exception as exc:  # PIL raises many kinds for bad bytes
            raise ImageProblem(f"not a readable image: {exc}") from exc
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def _phrases(run: Run, image: Image) -> list[str]:
    if run.parameters["prompt_mode"] == "caption":
        from workers.detection_prompts import phrases_from_caption

        return phrases_from_caption(image.caption)
    return list(run.parameters["labels"])


def process_pseudo_label_batch(*, batch_id: int, task_id: str = "") -> RunBatch | None:
    """Detect regions on one batch of images and write them; None if there was nothing to do.

    An image without stored bytes or with unreadable bytes is a failed item with its reason;
    an image deleted since planning, or without phrases to look for, is done with no regions.
    Anything else (the model does not load, CUDA runs out of memory) propagates to the task.
    """
    from workers.detection import DetectorParams
    from workers.grounding_dino import load_detector

    batch = claim_batch(batch_id=batch_id, task_id=task_id)
    if batch is None:
        return None
    started = time.monotonic()
    run = batch.run
    params = run.parameters
    images = Image.objects.filter(pk__in=batch.ids).only(
        "pk", "width", "height", "storage_path", "captions"
    )
    errors: list[dict] = []
    inputs: list[tuple[Image, PILImage.Image, list[str]]] = []
    for image in sorted(images, key=lambda i: i.pk):
        try:
            pixels = decode_rgb(read_stored_bytes(image), max_pixels=settings.FGAM_MAX_IMAGE_PIXELS)
        except (NoStoredBytes, ImageProblem) as exc:
            errors.append({"id": image.pk, "error": str(exc)})
            continue
        phrases = _phrases(run, image)
        if phrases:
            inputs.append((image, pixels, phrases))

    rows: list[tuple] = []
    if inputs:
        detector = load_detector(
            run.model_id,
            device=params.get("device", "auto"),
            dtype=params.get("dtype", "auto"),
            backend=params.get("backend", "transformers"),
        )
        detections = detector.detect(
            [pixels for _, pixels, _ in inputs],
            [phrases for _, _, phrases in inputs],
            DetectorParams(
                box_threshold=params["box_threshold"],
                text_threshold=params["text_threshold"],
                nms_iou=params.get("nms_iou", 0.5),
            ),
        )
        for (image, _, _), found in zip(inputs, detections, strict=True):
            rows.extend(_region_rows(run.pk, image, found))

    now = timezone.now()

    def write() -> None:
        if rows:
            insert_rows(
                Region,
                REGION_COLUMNS,
                rows,
                {
                    "caption": "",
                    "origin": Region.Origin.DETECTOR,
                    "status": Region.Status.PENDING,
                    "flagged": False,
                    "flag_reason": "",
                    "version": 1,
                    "run_id": run.pk,
                    "updated_by_id": None,
                    "created_at": now,
                    "updated_at": now,
                },
            )

    outcome = BatchOutcome(
        done=len(batch.ids) - len(errors), failed=len(errors), errors=tuple(errors)
    )
    finish_batch(batch, outcome, write=write, seconds=time.monotonic() - started)
    return batch


def _region_rows(run_id: int, image: Image, found) -> list[tuple]:
    rows = []
    tolerance = settings.FGAM_BOX_CLIP_TOLERANCE
    for n, detection in enumerate(found):
        try:
            x0, y0, x1, y1 = fit_box(detection.box, image.width, image.height, tolerance).box
        except BoxError:
            continue  # nothing left of it inside the image; n stays tied to the detection
        score = min(max(float(detection.score), 0.0), 1.0)
        rows.append(
            (
                image.pk,
                image.width,
                image.height,
                x0,
                y0,
                x1,
                y1,
                detection.phrase[:512],
                score,
                source_key(run_id, image.pk, n),
            )
        )
    return rows
