"""The backbone registry: one entry per backbone, and the command lines take their choices from it."""

import pytest

import app
from m2n2 import backbones
from m2n2.backbones import ColorAffinityBackbone, load, names, register
from m2n2.errors import InputError
from m2n2.evaluate import __main__ as evaluate_cli


@pytest.fixture
def extra_backbone():
    class Tiny(ColorAffinityBackbone):
        name = "tiny test backbone"

    register("tiny", Tiny)
    yield Tiny
    del backbones.REGISTRY["tiny"]


def test_names_are_auto_then_every_registered_backbone():
    assert names() == ("auto", "sd2", "sd1", "dinov2", "color")
    assert names(auto=False) == ("sd2", "sd1", "dinov2", "color")


def test_a_registered_backbone_loads_and_every_command_line_accepts_it(extra_backbone):
    assert isinstance(load("tiny", resolution=8), extra_backbone)
    assert app.parse_args(["--backbone", "tiny"]).backbone == "tiny"
    assert evaluate_cli.parse_args(["data", "--backbone", "tiny"]).backbone == "tiny"


def test_unknown_names_and_options_are_clear_errors():
    with pytest.raises(InputError, match="choose one of auto, sd2, sd1, dinov2, color"):
        load("nope")
    with pytest.raises(InputError, match="unknown option"):
        load("color", model="x")
    assert isinstance(load("colour", resolution=8), ColorAffinityBackbone)


def test_auto_tries_the_papers_backbone_first_then_dinov2_then_color(tmp_path):
    # docs/backbones.md: at the app's CPU R = 64, DINOv2-base is barely faster than SD2 (14.8 s
    # against 16.6 s), so SD2, the backbone with the paper's evidence, comes first on every device.
    assert backbones.AUTO_ORDER == ("sd2", "dinov2", "color")
    fallback = load("auto", model=str(tmp_path / "absent"), resolution=8)
    assert isinstance(fallback, ColorAffinityBackbone)
    assert fallback.reason.startswith("Stable Diffusion 2 model folder") and "DINOv2 model folder" in fallback.reason


def test_only_sd2_is_presented_as_the_papers_backbone():
    for name in names():
        title = app.heading(app.Options(backbone=name))
        # "the paper's backbone" is only ever said of Stable Diffusion 2.
        assert title.count("paper's backbone") == title.count("Stable Diffusion 2 attention (the paper's backbone)")
        assert ("paper's backbone" in title) == (name in ("sd2", "auto"))
    for name, shown in (("sd1", "Stable Diffusion 1"), ("dinov2", "DINOv2")):
        title = app.heading(app.Options(backbone=name))
        assert shown in title and "the paper's numbers are for Stable Diffusion 2" in title
    assert "the status line says which" in app.heading(app.Options(backbone="auto"))


def test_learned_backbones_default_r_comes_from_default_resolution():
    """R when none is given: config.default_resolution (128 on CUDA, 64 elsewhere), except where the
    authors used another on CUDA (SD1 112, DINOv2 80). Nothing is loaded (no weights) and no CUDA
    is needed: only the choice of R is looked at."""
    from m2n2.backbones import DINOv2Backbone, SD1Backbone, SD2Backbone
    from m2n2.config import default_resolution

    for base, cuda in ((SD2Backbone, default_resolution("cuda")), (SD1Backbone, 112), (DINOv2Backbone, 80)):
        unloaded = type("Unloaded", (base,), {"_load": lambda self, model, device, dtype: None})
        assert unloaded(device="cpu").resolution == default_resolution("cpu") == 64
        assert unloaded(device="cuda").resolution == cuda
        assert unloaded(device="cuda", resolution=48).resolution == 48
    assert default_resolution("cuda") == 128
