"""``fgam.default.build_probes``: builds one recorded probe set (``webapp.probes.building``)."""

from __future__ import annotations

from workers.celery_app import app


@app.task(
    name="fgam.default.build_probes",
    queue="default",
    # A redelivered build starts over in a new temporary folder; a ready set is returned as is.
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=3600,
    time_limit=3600 + 60,
)
def build_probes(probe_set_id: int) -> dict:
    from webapp.probes.building import ProbeBuildError, build_probe_set
    from webapp.probes.sampling import SamplingError

    try:
        probe_set = build_probe_set(probe_set_id=probe_set_id)
    except (ProbeBuildError, SamplingError) as exc:
        # Bad input is recorded on the row (status failed, error); retrying cannot help.
        return {"probe_set": probe_set_id, "status": "failed", "error": str(exc)}
    return {
        "probe_set": probe_set_id,
        "status": probe_set.status,
        "sha256": probe_set.content_sha256,
    }
