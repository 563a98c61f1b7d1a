"""A table of results as display cells, and how it is written out: CSV, Markdown, LaTeX
(booktabs) and HTML.

A :class:`Table` holds display text and the numbers behind it (``webapp.evaluation.tables``
fills it from a round's statistics). System names, rater names and criterion labels are
untrusted text: every renderer escapes them for its own format. A figure that cannot be
computed is shown as "—"; CSV leaves it empty.
"""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field

MISSING = "—"
ARROWS = {"up": "↑", "down": "↓"}


@dataclass(frozen=True)
class Column:
    """A column header: label, an optional better-direction arrow and a unit suffix."""

    label: str
    direction: str | None = None  # "up" (higher is better), "down" or None
    unit: str = ""
    numeric: bool = True
    has_ci: bool = False  # CSV adds "<header> CI low/high" columns

    @property
    def header(self) -> str:
        """The header text with its arrow and unit, as Markdown and HTML show it."""
        return " ".join(p for p in (self.label, ARROWS.get(self.direction or ""), self.unit) if p)


@dataclass(frozen=True)
class Cell:
    """One table cell: the text shown and the number behind it (None for text or missing)."""

    text: str
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    best: bool = False  # the best value of its column (shown bold)
    reason: str | None = None  # why a figure is missing or has no interval (goes into notes)


@dataclass(frozen=True)
class Table:
    """A rendered-agnostic table; ``key`` names export files (e.g. ``table5.csv``)."""

    key: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Cell, ...], ...]
    notes: tuple[str, ...] = ()
    strong_rows: frozenset[int] = field(default_factory=frozenset)  # e.g. the aggregated row

    def to_csv(self) -> str:
        """CSV with numbers at full precision, CI bounds in their own columns, no notes."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        header: list[str] = []
        for column in self.columns:
            header.append(_csv_text(column.header))
            if column.has_ci:
                header += [
                    _csv_text(f"{column.label} CI low"),
                    _csv_text(f"{column.label} CI high"),
                ]
        writer.writerow(header)
        for row in self.rows:
            line: list[str] = []
            for column, cell in zip(self.columns, row, strict=True):
                if column.numeric:
                    line.append(_csv_number(cell.value))
                else:
                    line.append(_csv_text(cell.text))
                if column.has_ci:
                    line += [_csv_number(cell.ci_low), _csv_number(cell.ci_high)]
            writer.writerow(line)
        return out.getvalue()

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown table with the title above and the notes below."""
        lines = [f"**{_md(self.title)}**", ""]
        lines.append("| " + " | ".join(_md(c.header) for c in self.columns) + " |")
        lines.append("|" + "|".join("---:" if c.numeric else ":---" for c in self.columns) + "|")
        for index, row in enumerate(self.rows):
            strong = index in self.strong_rows
            cells = [
                _md_bold(_md(cell.text, trusted=column.numeric), cell.best or strong)
                for column, cell in zip(self.columns, row, strict=True)
            ]
            lines.append("| " + " | ".join(cells) + " |")
        if self.notes:
            lines.append("")
            lines += [f"- {_md(note)}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
        spec = "".join("r" if c.numeric else "l" for c in self.columns)
        lines = [
            r"\begin{table}[t]",
            r"\centering",
            r"\caption{" + latex_escape(self.title) + "}",
            r"\label{tab:" + re.sub(r"[^A-Za-z0-9:-]", "-", self.key) + "}",
            r"\begin{tabular}{" + spec + "}",
            r"\toprule",
            " & ".join(_latex_header(c) for c in self.columns) + r" \\",
            r"\midrule",
        ]
        for index, row in enumerate(self.rows):
            strong = index in self.strong_rows
            if strong and index > 0:
                lines.append(r"\midrule")
            cells = [_latex_bold(latex_escape(c.text), c.best or strong) for c in row]
            lines.append(" & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        if self.notes:
            notes = " ".join(latex_escape(n) for n in self.notes)
            lines.append(r"\par\smallskip{\footnotesize " + notes + "}")
        lines.append(r"\end{table}")
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        """An HTML fragment: the table with a caption, then its notes; all text escaped."""
        esc = html.escape
        parts = [
            f'<div class="eval-table" id="eval-table-{esc(self.key)}">',
            "<table>",
            f"<caption>{esc(self.title)}</caption>",
            "<thead><tr>",
        ]
        for column in self.columns:
            css = "num" if column.numeric else "text"
            parts.append(f'<th scope="col" class="{css}">{esc(column.header)}</th>')
        parts.append("</tr></thead><tbody>")
        for index, row in enumerate(self.rows):
            strong = index in self.strong_rows
            parts.append('<tr class="strong">' if strong else "<tr>")
            for position, (column, cell) in enumerate(zip(self.columns, row, strict=True)):
                text = esc(cell.text)
                if cell.best or strong:
                    text = f"<strong>{text}</strong>"
                css = "num" if column.numeric else "text"
                if cell.text == MISSING:
                    css += " missing"
                tag = "th" if position == 0 else "td"
                scope = ' scope="row"' if position == 0 else ""
                parts.append(f'<{tag}{scope} class="{css}">{text}</{tag}>')
            parts.append("</tr>")
        parts.append("</tbody></table>")
        if self.notes:
            parts.append('<ul class="eval-table-notes">')
            parts += [f"<li>{esc(note)}</li>" for note in self.notes]
            parts.append("</ul>")
        parts.append("</div>")
        return "\n".join(parts) + "\n"

    def render(self, fmt: str) -> str:
        """Render by format name: csv, md (markdown), tex (latex) or html."""
        renderers: dict[str, Callable[[], str]] = {
            "csv": self.to_csv,
            "md": self.to_markdown,
            "markdown": self.to_markdown,
            "tex": self.to_latex,
            "latex": self.to_latex,
            "html": self.to_html,
        }
        if fmt not in renderers:
            raise ValueError(f"unknown table format {fmt!r}; use one of {sorted(renderers)}")
        return renderers[fmt]()


_LATEX_CHARS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    # Brackets are braced so a cell starting with "[" is never read as the optional argument
    # of the preceding row's "\\".
    "[": "{[}",
    "]": "{]}",
    "±": r"$\pm$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "—": "---",
    "\u2013": "--",  # en dash
    "\u2212": r"$-$",  # minus sign
    "\u03b1": r"$\alpha$",  # alpha
}


def _one_line(text: str) -> str:
    # Newlines and other control characters would break a table row in every format.
    return re.sub(r"[\x00-\x1f\x7f\u2028\u2029]+", " ", str(text))


def latex_escape(text: str) -> str:
    """Escape text for LaTeX, character by character (so no escape is escaped twice)."""
    return "".join(_LATEX_CHARS.get(ch, ch) for ch in _one_line(text))


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
_MD_TABLE_ONLY = re.compile(r"([\\|])")


def _md(text: str, *, trusted: bool = False) -> str:
    """Escape text for a Markdown table cell.

    Untrusted text gets its Markdown punctuation backslash-escaped (no emphasis, links or code
    spans); ``trusted`` text (numbers this module formatted) only needs the table's own pipes.
    HTML-significant characters always become entities, since Markdown passes raw HTML through.
    """
    pattern = _MD_TABLE_ONLY if trusted else _MD_SPECIAL
    escaped = pattern.sub(r"\\\1", _one_line(text))
    return escaped.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md_bold(text: str, bold: bool) -> str:
    return f"**{text}**" if bold and text else text


def _latex_bold(text: str, bold: bool) -> str:
    return r"\textbf{" + text + "}" if bold and text else text


def _latex_header(column: Column) -> str:
    return latex_escape(column.header)


def _csv_text(text: str) -> str:
    # A cell starting with = + - @ is run as a formula by spreadsheets (CSV injection): prefix a
    # quote so it stays text. Plain numbers such as "-3.5" are left alone.
    text = _one_line(text)
    if text and text[0] in "=+-@" and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_number(value: float | None) -> str:
    return "" if value is None else format(value, ".6g")
