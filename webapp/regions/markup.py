"""The review page's markup for one region, its table row and its SVG box, built in Python.

Why not the template: the page shows hundreds of regions, and a row and a box are some sixty
template nodes (variables, filters, ``{% url %}``, ``{% csrf_token %}``). Rendering them through
Django's template engine took 85 % of the page's time with 200 regions (about 0.5 ms a region
on the benchmark machine), far over the 50 ms budget; ``str.format`` with ``escape`` on every
value does the same in a few microseconds. The rest of the page, and every fragment around
these two, stays in ``templates/regions/review.html``, whose ``region_row`` and ``region_box``
partials print what is built here.

Every value that people or models wrote (phrase, caption, model ids) goes through ``escape``;
numbers and values from fixed choices are formatted, never interpolated raw from input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape as _escape_text

from django.utils.safestring import SafeString, mark_safe

from webapp.core.http import svg_number

PHRASE_LABEL_CHARS = 40


def escape(value: object) -> str:
    """``&``, ``<``, ``>``, ``"`` and ``'`` as entities, as Django's ``escape`` writes them.

    The standard library's function: Django's wraps the same replacement in a lazy-string
    check that cost more than the replacement itself, a thousand times per page.
    """
    return _escape_text(str(value), quote=True)


@dataclass(frozen=True)
class RowContext:
    """What every row of one response shares: the CSRF field, the URL patterns (``{}``), and
    the provenance markup already built, by (detector run, caption run): a page's regions
    mostly come from the same one or two runs."""

    csrf_input: str
    action_url: str
    history_url: str
    delete_url: str
    run_url: str
    provenance: dict = field(default_factory=dict)


@dataclass(slots=True)
class RegionView:
    """What the page shows of one region, read as a plain row rather than a model instance
    (half the cost for a page of hundreds); the markup functions take this or a ``Region``."""

    pk: int
    image_width: int
    image_height: int
    x0: float
    y0: float
    x1: float
    y1: float
    phrase: str
    caption: str
    score: float | None
    origin: str
    status: str
    flagged: bool
    flag_reason: str
    version: int
    run_id: int | None
    made_by: object = None
    captioned_by: object = None
    row_html: str = ""
    box_html: str = ""

    FIELDS = (
        "pk", "image_width", "image_height", "x0", "y0", "x1", "y1", "phrase", "caption",
        "score", "origin", "status", "flagged", "flag_reason", "version", "run_id",
    )  # fmt: skip

    @property
    def box(self) -> list[float]:
        return [self.x0, self.y0, self.x1, self.y1]


def csrf_input(token: str) -> str:
    """The hidden field ``{% csrf_token %}`` prints, for forms that also post without htmx."""
    return f'<input type="hidden" name="csrfmiddlewaretoken" value="{escape(token)}">'


def _truncate(text: str, length: int) -> str:
    # What the ``truncatechars`` filter does: the ellipsis counts towards the length.
    return text if len(text) <= length else text[: length - 1] + "…"


def _oob(oob: bool) -> str:
    return ' hx-swap-oob="outerHTML"' if oob else ""


def box_html(region, *, oob: bool = False) -> SafeString:
    """The region's ``<g>``: its rectangle and, when it has one, its phrase as a label."""
    pk = region.pk
    flagged = " flagged" if region.flagged else ""
    x, y = svg_number(region.x0), svg_number(region.y0)
    phrase = escape(region.phrase)
    label = ""
    if region.phrase:
        # Label size and padding in image pixels, so labels look alike at any image size.
        longer_side = max(region.image_width, region.image_height)
        size = max(round(longer_side / 45, 1), 6)
        pad = max(round(longer_side / 200, 1), 1)
        label = (
            f'<text x="{x}" y="{y}" dx="{pad}" dy="{size}" font-size="{size}">'
            f"{escape(_truncate(region.phrase, PHRASE_LABEL_CHARS))}</text>"
        )
    return mark_safe(
        f'<g id="box-{pk}" class="box s-{escape(region.status)}{flagged}" data-region="{pk}"'
        f"{_oob(oob)}>"
        f"<title>{phrase or 'region'} ({escape(region.status)}, {escape(region.origin)})</title>"
        f'<rect data-region="{pk}" x="{x}" y="{y}" width="{svg_number(region.x1 - region.x0)}"'
        f' height="{svg_number(region.y1 - region.y0)}"></rect>{label}</g>'
    )


def _provenance(region, ctx: RowContext) -> str:
    made = getattr(region, "made_by", None)
    cap = getattr(region, "captioned_by", None)
    key = (made.id if made else None, cap.id if cap else None)
    if key not in ctx.provenance:
        ctx.provenance[key] = _provenance_html(made, cap, ctx)
    return ctx.provenance[key]


def _provenance_html(made, cap, ctx: RowContext) -> str:
    parts = []
    if made:
        extra = f" · {escape(made.model_name)}" if made.model_name else ""
        if made.box_threshold is not None:
            extra += f" · box ≥ {escape(made.box_threshold)}"
        parts.append(
            f'<div title="{escape(made.model_id)}"><a href="{ctx.run_url.format(made.id)}">'
            f"run #{made.id}</a> {escape(made.kind)}{extra}</div>"
        )
    if cap:
        parts.append(
            f'<div title="{escape(cap.model_id)}">caption: '
            f'<a href="{ctx.run_url.format(cap.id)}">run #{cap.id}</a> · {escape(cap.strategy)}'
            "</div>"
        )
    return "".join(parts)


def row_html(region, ctx: RowContext, *, oob: bool = False) -> SafeString:
    """The region's ``<tr>``: phrase, box, origin, provenance, caption (and its editor), score,
    status and version, and the accept / reject / history / delete controls."""
    pk, status, version = region.pk, escape(region.status), region.version
    action = ctx.action_url.format(pk)
    history = ctx.history_url.format(pk)
    flagged = " flagged" if region.flagged else ""
    box_text = " ".join(f"{v:.0f}" for v in region.box)
    phrase, caption = escape(region.phrase), escape(region.caption)
    flag = (
        '<div class="flag" data-testid="flag" title="consistency check">'
        f"⚑ {escape(region.flag_reason) or 'flagged'}</div>"
        if region.flagged
        else ""
    )
    score = "—" if region.score is None else f"{region.score:.2f}"
    delete = ""
    if region.origin == "human":
        url = ctx.delete_url.format(pk)
        delete = (
            f'<form class="delete-form" method="post" action="{url}" hx-post="{url}"'
            f' hx-swap="none">{ctx.csrf_input}'
            f'<input type="hidden" name="version" value="{version}">'
            '<button type="submit" class="icon no" title="Delete (Del)" aria-label="Delete">⌫'
            "</button></form>"
        )
    return mark_safe(
        f'<tr id="row-{pk}" data-region="{pk}" data-version="{version}" data-status="{status}"'
        f' data-origin="{escape(region.origin)}" class="s-{status}"{_oob(oob)}>'
        f'<td class="num muted">{pk}</td>'
        f'<td class="phrase"><span class="swatch s-{status}{flagged}"></span>'
        f'<span class="phrase-text">{phrase or "—"}</span>'
        f'<div class="box-cell muted" title="box x0, y0, x1, y1 in pixels">{box_text}</div>'
        f'<div class="muted small">{escape(region.origin)}</div>'
        f'<div class="provenance muted small" data-testid="provenance">'
        f"{_provenance(region, ctx)}</div></td>"
        f'<td class="caption"><div class="caption-text" data-testid="caption">{caption or "—"}'
        f"</div>{flag}"
        f'<form class="caption-form" method="post" action="{action}" hx-post="{action}"'
        f' hx-swap="none" hidden>{ctx.csrf_input}'
        '<input type="hidden" name="action" value="edit">'
        f'<input type="hidden" name="version" value="{version}">'
        f'<input type="text" name="phrase" value="{phrase}" placeholder="phrase"'
        ' aria-label="Phrase" autocomplete="off">'
        f'<textarea name="caption" rows="3" aria-label="Caption">{caption}</textarea>'
        '<span class="hint muted">Enter saves · Esc cancels · Shift+Enter new line</span>'
        "</form></td>"
        f'<td class="num">{score}</td>'
        f'<td><span class="status s-{status}" data-testid="status">{status}</span>'
        f'<div class="muted small">v{version}</div></td>'
        f'<td class="actions"><form class="row-actions" method="post" action="{action}"'
        f' hx-post="{action}" hx-swap="none">{ctx.csrf_input}'
        f'<input type="hidden" name="version" value="{version}">'
        '<button type="submit" class="icon ok" name="action" value="accept" title="Accept (A)"'
        ' aria-label="Accept">✓</button>'
        '<button type="submit" class="icon no" name="action" value="reject" title="Reject (R)"'
        ' aria-label="Reject">✗</button></form>'
        f'<a class="icon history-link" href="{history}" hx-get="{history}"'
        ' hx-target="#history-body" title="History (H)" aria-label="History">⟲</a>'
        f"{delete}</td></tr>"
    )


def join(parts: list[SafeString]) -> SafeString:
    """Many rows or boxes as one string, so the template prints one variable, not hundreds."""
    return mark_safe("".join(parts))
