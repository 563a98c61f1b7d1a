"""What a format parser hands to the shared import machinery.

Parsers only read and check their annotation files; they never touch image bytes or the
database. Each spec remembers the file and record it came from, so any later problem (a
missing image file, a box outside the image) is reported at the place the curator must fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from webapp.core.importing.report import BadField, RecordError


@dataclass(slots=True)
class ImageSpec:
    """One image as the annotations describe it; ``key`` is what regions refer to it by."""

    key: str
    paths: tuple[str, ...]  # candidate files under the images folder, first existing wins
    file: str
    where: str
    path_field: str  # how the file names the image path, for errors ("file_name", "image")
    width: int | None = None
    height: int | None = None
    source: str = ""
    source_id: str = ""
    file_name: str = ""
    uri: str = ""
    split: str = ""
    captions: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)


@dataclass(slots=True)
class RegionSpec:
    """A ground-truth box in pixel ``[x0, y0, x1, y1]``, not yet checked against its image."""

    image_key: str
    box: tuple[float, float, float, float]
    box_field: str  # how the file names the box, for errors ("bbox", "x/y/width/height")
    phrase: str
    caption: str
    source_key: str
    file: str
    where: str
    flag_reason: str = ""


@dataclass(slots=True)
class QuestionSpec:
    image_key: str
    question: str
    reference: str | None
    source: str
    source_key: str


@dataclass
class Plan:
    """Everything a parser found: good records, one error per bad record, and notes."""

    format: str
    images: dict[str, ImageSpec] = field(default_factory=dict)
    regions: list[RegionSpec] = field(default_factory=list)
    questions: list[QuestionSpec] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)
    notes: dict[str, int] = field(default_factory=dict)

    def error(self, file: str, where: str, problem: BadField) -> None:
        self.errors.append(RecordError(file, where, problem.field, problem.reason))

    def note(self, name: str) -> None:
        self.notes[name] = self.notes.get(name, 0) + 1
