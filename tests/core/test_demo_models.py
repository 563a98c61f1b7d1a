"""``make_demo_models`` builds the quick start's demo models, loadable with ``from_pretrained``,
and the forms offer them by name and resolve the name to the folder (issue 16)."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from webapp.core import demo_models


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    var = tmp_path_factory.mktemp("var")
    with pytest.MonkeyPatch.context() as patch:
        from django.conf import settings

        patch.setattr(settings, "VAR_DIR", var)
        first, second = io.StringIO(), io.StringIO()
        call_command("make_demo_models", stdout=first)
        call_command("make_demo_models", stdout=second)
        yield var / "models", first.getvalue(), second.getvalue()


def test_every_demo_model_is_built_once_then_skipped(built):
    folder, first, second = built
    for name in demo_models.DEMO_MODELS:
        assert (folder / name / "config.json").is_file()
        assert f"{name}" in first and "done in" in first
    assert second.count("already built") == len(demo_models.DEMO_MODELS)
    assert not list(folder.glob("*.partial"))


def test_the_demo_models_load_with_from_pretrained(built):
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoModelForZeroShotObjectDetection,
        AutoProcessor,
        AutoTokenizer,
        CLIPModel,
    )

    folder = built[0]
    loaders = {
        "demo-detector": (AutoModelForZeroShotObjectDetection, AutoProcessor),
        "demo-captioner": (AutoModelForImageTextToText, AutoProcessor),
        "demo-clip": (CLIPModel, AutoTokenizer),
        "demo-llava": (AutoModelForImageTextToText, AutoProcessor),
        "demo-rm": (AutoModelForCausalLM, AutoTokenizer),
    }
    assert loaders.keys() == demo_models.DEMO_MODELS.keys()
    for name, (model_class, processor_class) in loaders.items():
        model = model_class.from_pretrained(folder / name)
        assert sum(p.numel() for p in model.parameters()) < 5_000_000  # tiny: seconds on a CPU
        assert processor_class.from_pretrained(folder / name) is not None


def test_forms_offer_the_built_models_by_name_and_resolve_them(built, settings):
    settings.VAR_DIR = built[0].parent
    assert [name for name, _ in demo_models.choices("detector")] == ["demo-detector"]
    label = dict(demo_models.choices("m"))["demo-llava"]
    assert "random weights, for trying the flow" in label
    folder = str(built[0] / "demo-clip")
    assert demo_models.check_model_field("demo-clip", role="clip", field="model") == folder
    config = demo_models.demo_job_config("stage1", {"model": "demo-clip", "max_steps": 3})
    assert config["model"] == folder and config["max_steps"] == 3  # the form's value wins
    assert config["max_text_tokens"] == 32
    assert demo_models.demo_job_config("stage1", {"lr": 1.0}) == {"lr": 1.0}  # no demo: as is
    with pytest.raises(ValueError, match="there is no folder"):
        demo_models.check_model_field(str(built[0] / "nope"), role="detector", field="model")
