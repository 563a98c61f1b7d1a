"""``{% demo_model_list "detector" %}``: a ``<datalist>`` of the built demo models of a role.

A form's model field names it with ``list="demo-detector-models"`` (``demo-<role>-models``), so
the field stays free text and offers the demo models by name.
"""

from django import template
from django.utils.html import format_html, format_html_join

from webapp.core import demo_models

register = template.Library()


@register.simple_tag
def demo_model_list(role: str) -> str:
    options = format_html_join("", '<option value="{}">{}</option>', demo_models.choices(role))
    return format_html('<datalist id="demo-{}-models">{}</datalist>', role, options)


@register.simple_tag
def demo_model_names(role: str) -> str:
    """The built demo models of a role, for a field's hint ("" when none is built)."""
    return ", ".join(name for name, _ in demo_models.choices(role))


@register.simple_tag
def demo_job_select(kind: str) -> str:
    """The training-job form's demo model picker for a kind, with the short settings it brings."""
    role = demo_models.JOB_ROLES.get(kind)
    built = demo_models.choices(role) if role else []
    if not built:
        return ""
    quick = demo_models.DEMO_JOB_CONFIG.get(kind, {})
    settings = ", ".join(f"{k}={v}" for k, v in quick.items() if k not in ("model", "rm"))
    options = format_html_join("", '<option value="{}">{}</option>', built)
    return format_html(
        '<label>Model <select name="demo_model" data-testid="demo-model">'
        '<option value="">as in the config below</option>{}</select></label>'
        '<p class="small muted">A demo model also sets, unless the config below changes them: '
        "{}.</p>",
        options,
        settings or "nothing else",
    )
