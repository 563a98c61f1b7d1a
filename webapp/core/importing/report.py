"""What an import tells its caller: per-record errors, counts, the exception for abort.

Errors are values, not exceptions, so one pass over a file can collect every bad record and
the curator fixes them all at once instead of one per run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# abort: write nothing if any record is bad; skip: import the good records, report the rest.
ON_ERROR = ("abort", "skip")
# The Run row keeps this many errors; the report itself keeps them all.
RUN_ERROR_LIMIT = 1000
# How many errors a command prints before "... and N more".
ERRORS_SHOWN = 50


@dataclass(frozen=True)
class RecordError:
    """One bad record: the file, where in it (``annotations[12] (id 345)``), the field, why.

    ``record`` and ``field`` are empty when the problem concerns the file as a whole
    (it is missing, not UTF-8, not JSON).
    """

    file: str
    record: str
    field: str
    reason: str

    def __str__(self) -> str:
        parts = [self.file, self.record, self.field, self.reason]
        return ": ".join(part for part in parts if part)


class BadField(ValueError):
    """Raised by the field readers; the format parser adds the file and record position."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass
class ImportReport:
    """Counts and errors of one import. ``existing`` counts records a previous run created."""

    format: str
    dataset: str
    on_error: str
    images_new: int = 0
    images_existing: int = 0
    regions_new: int = 0
    regions_existing: int = 0
    questions_new: int = 0
    questions_existing: int = 0
    clipped_boxes: int = 0
    crowd_flagged: int = 0
    skipped_records: int = 0
    notes: dict[str, int] = field(default_factory=dict)
    errors: list[RecordError] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    duration_s: float = 0.0
    run_id: int | None = None

    def counts(self) -> dict[str, int]:
        return {
            "images_new": self.images_new,
            "images_existing": self.images_existing,
            "regions_new": self.regions_new,
            "regions_existing": self.regions_existing,
            "questions_new": self.questions_new,
            "questions_existing": self.questions_existing,
            "clipped_boxes": self.clipped_boxes,
            "crowd_flagged": self.crowd_flagged,
            "skipped_records": self.skipped_records,
            "errors": len(self.errors),
            **self.notes,
        }

    def as_dict(self) -> dict:
        """A JSON-ready form, for the Run row and the API."""
        data = asdict(self)
        data["errors"] = [str(error) for error in self.errors]
        return data

    def summary(self) -> str:
        """A few human lines; what the management command prints at the end."""
        lines = [
            f"{self.format} import into dataset {self.dataset!r}"
            + (f" (run {self.run_id})" if self.run_id else "")
            + f" in {self.duration_s:.1f} s",
            f"  images:    {self.images_new} new, {self.images_existing} already there",
        ]
        if self.regions_new or self.regions_existing:
            lines.append(
                f"  regions:   {self.regions_new} new, {self.regions_existing} already there"
                f" ({self.clipped_boxes} boxes clipped, {self.crowd_flagged} crowd flagged)"
            )
        if self.questions_new or self.questions_existing:
            lines.append(
                f"  questions: {self.questions_new} new, {self.questions_existing} already there"
            )
        lines.extend(f"  {name}: {count}" for name, count in self.notes.items())
        if self.errors:
            verb = "skipped" if self.on_error == "skip" else "nothing was imported"
            lines.append(
                f"  {len(self.errors)} errors ({verb}"
                + (f": {self.skipped_records} records" if self.on_error == "skip" else "")
                + ")"
            )
        return "\n".join(lines)

    def error_lines(self, limit: int = ERRORS_SHOWN) -> list[str]:
        lines = [str(error) for error in self.errors[:limit]]
        if len(self.errors) > limit:
            lines.append(f"... and {len(self.errors) - limit} more")
        return lines


class ImportFailed(Exception):
    """The import wrote nothing; ``report.errors`` says why, record by record."""

    def __init__(self, report: ImportReport) -> None:
        first = str(report.errors[0]) if report.errors else "unknown error"
        more = f" (and {len(report.errors) - 1} more errors)" if len(report.errors) > 1 else ""
        super().__init__(f"{report.format} import failed, nothing was written: {first}{more}")
        self.report = report
