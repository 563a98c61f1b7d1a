"""Starting and cancelling benchmark jobs; which model a job scores and on which queue.

``start_benchmark`` takes a ready probe set and either a training job or a model spec:

- a training job is scored through its final checkpoint, ``<out_dir>/final`` (what SFT, RL
  and hybrid runs write with ``save_final``: full weights or a LoRA adapter folder with its
  processor, both loadable with ``from_pretrained``). Only jobs that trained the MLLM M
  qualify: Stage-1 trains a region-aware CLIP and the RM job the rectification module, neither
  of which answers a question about an image, so both are refused with a sentence that says
  what to benchmark instead (a named ablation follows the kind that runs its preset);
- a spec is a local folder, a hub id, or an OpenAI-compatible endpoint ``URL#MODEL``.

Endpoints go to the ``llm`` queue (I/O bound, many in flight), everything else to ``gpu``.
The job is enqueued on commit, so a rolled-back request leaves nothing queued.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from webapp.benchmarks.models import BenchmarkJob
from webapp.exports.models import TrainingJob
from webapp.exports.training_jobs import ablation_presets
from webapp.probes.models import ProbeSet

# What the scorer's own options allow; the form and the API say the same.
MAX_BATCH_SIZE = 256
MAX_CONCURRENCY = 256
MAX_NEW_TOKENS = 512


class BenchmarkError(ValueError):
    """A benchmark that cannot be started or changed as asked; the message says why."""


def is_endpoint(spec: str) -> bool:
    """An OpenAI-compatible endpoint is written ``URL#MODEL``.

    >>> is_endpoint("http://127.0.0.1:8001/v1#llava"), is_endpoint("llava-hf/llava-1.5-7b-hf")
    (True, False)
    >>> is_endpoint("https://api.example.com/v1#")
    False
    """
    url, sep, model = spec.partition("#")
    return bool(sep and model) and url.startswith(("http://", "https://"))


def checkpoint_of(job: TrainingJob) -> str:
    """The folder the scorer loads for a training job, or ``BenchmarkError`` saying why
    there is none to score."""
    kind = job.kind
    if kind == TrainingJob.Kind.ABLATION:
        kind = ablation_presets().get(job.preset, TrainingJob.Kind.STAGE1)
    if kind == TrainingJob.Kind.STAGE1:
        raise BenchmarkError(
            f"training job #{job.pk} is a Stage-1 job: it trains a region-aware CLIP, which "
            "does not answer questions. Benchmark a Stage-2 job (SFT, RL or hybrid) that uses "
            "its checkpoint as vision tower."
        )
    if kind == TrainingJob.Kind.RM:
        raise BenchmarkError(
            f"training job #{job.pk} trains the rectification module, which critiques answers "
            "rather than giving them. Benchmark a Stage-2 SFT, RL or hybrid job."
        )
    if job.status != TrainingJob.Status.SUCCEEDED:
        raise BenchmarkError(
            f"training job #{job.pk} is {job.status}; only a succeeded job has a final checkpoint"
        )
    final = Path(job.checkpoint_dir)
    if not any((final / name).is_file() for name in ("config.json", "adapter_config.json")):
        raise BenchmarkError(f"training job #{job.pk} has no loadable checkpoint in {final}")
    return str(final)


def check_spec(spec: str) -> str:
    spec = spec.strip()
    if not spec:
        raise BenchmarkError("name a training job or a model (folder, hub id or URL#MODEL)")
    if spec.startswith(("http://", "https://")) and not is_endpoint(spec):
        raise BenchmarkError(f"an endpoint is written URL#MODEL, e.g. {spec.split('#')[0]}#llava")
    if spec.startswith(("/", ".")) and not Path(spec).exists():
        raise BenchmarkError(f"model folder {spec} does not exist")
    return spec


def _bounded(value: int | None, name: str, top: int, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if value is None or not 1 <= int(value) <= top:
        raise BenchmarkError(f"{name} must be between 1 and {top}")
    return int(value)


def start_benchmark(
    *,
    probe_set: ProbeSet,
    training_job: TrainingJob | None = None,
    model_spec: str = "",
    batch_size: int = 8,
    concurrency: int = 16,
    max_new_tokens: int | None = None,
    limit: int | None = None,
    created_by=None,
) -> BenchmarkJob:
    """Check the request and enqueue the job on the ``gpu`` or ``llm`` queue."""
    if not probe_set.is_ready or not probe_set.path:
        raise BenchmarkError(f"probe set {probe_set.set_id} is {probe_set.status}, not ready")
    if training_job is not None and model_spec.strip():
        raise BenchmarkError("name a training job or a model spec, not both")
    spec = checkpoint_of(training_job) if training_job is not None else check_spec(model_spec)
    batch = _bounded(batch_size, "batch size", MAX_BATCH_SIZE)
    parallel = _bounded(concurrency, "concurrency", MAX_CONCURRENCY)
    tokens = _bounded(max_new_tokens, "max new tokens", MAX_NEW_TOKENS, optional=True)
    first = _bounded(limit, "limit", 10**9, optional=True)
    total = int((probe_set.counts or {}).get("probes") or 0)
    with transaction.atomic():
        job = BenchmarkJob.objects.create(
            probe_set=probe_set,
            training_job=training_job,
            model_spec=spec,
            queue=BenchmarkJob.Queue.LLM if is_endpoint(spec) else BenchmarkJob.Queue.GPU,
            batch_size=batch or 8,
            concurrency=parallel or 16,
            max_new_tokens=tokens,
            limit=first,
            progress_total=min(total, first) if first else total,
            created_by=created_by,
        )
        job.out_dir = str(Path(settings.FGAM_BENCHMARK_DIR) / f"bench-{job.pk:06d}")
        job.save(update_fields=["out_dir"])
        transaction.on_commit(lambda: _enqueue(job.pk))
    return job


def _enqueue(job_id: int) -> None:
    from webapp.benchmarks.tasks import score_on_endpoint, score_on_gpu

    job = BenchmarkJob.objects.get(pk=job_id)
    task = score_on_endpoint if job.queue == BenchmarkJob.Queue.LLM else score_on_gpu
    result = task.delay(job_id)
    BenchmarkJob.objects.filter(pk=job_id, task_id="").update(task_id=result.id or "")


def cancel_benchmark(*, job: BenchmarkJob) -> BenchmarkJob:
    """A queued job cancels at once; a running one is stopped by its worker within a second."""
    Status = BenchmarkJob.Status
    if BenchmarkJob.objects.filter(pk=job.pk, status=Status.QUEUED).update(
        status=Status.CANCELLED, finished_at=timezone.now()
    ):
        job.refresh_from_db()
        return job
    if not BenchmarkJob.objects.filter(pk=job.pk, status=Status.RUNNING).update(
        status=Status.CANCELLING
    ):
        raise BenchmarkError(f"benchmark #{job.pk} is {job.status}; only open jobs cancel")
    job.refresh_from_db()
    return job
