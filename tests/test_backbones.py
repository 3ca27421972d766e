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


def test_auto_tries_sd2_first_with_a_gpu_and_dinov2_first_on_a_cpu():
    # docs/backbones.md: SD2 (the paper's) takes half a minute per image on a CPU, DINOv2 seconds.
    assert backbones.auto_order(cuda=True) == ("sd2", "dinov2", "color")
    assert backbones.auto_order(cuda=False) == ("dinov2", "sd2", "color")
    for order in backbones.AUTO_ORDERS.values():
        assert order[-1] == "color" and set(order) <= set(names(auto=False))


def test_only_sd2_is_presented_as_the_papers_backbone():
    for name in names():
        title = app.heading(app.Options(backbone=name))
        if name == "sd2":
            assert "Stable Diffusion 2 attention (the paper's backbone)" in title
        else:  # another backbone may name SD2 as the paper's, but never call itself so
            assert "paper's backbone" not in title
            assert name == "auto" or "paper's numbers are for Stable Diffusion 2" in title or "stand-in" in title
    assert "DINOv2" in app.heading(app.Options(backbone="dinov2"))
    assert "the status line says which" in app.heading(app.Options(backbone="auto"))
