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
    assert names() == ("auto", "sd2", "color") and names(auto=False) == ("sd2", "color")


def test_a_registered_backbone_loads_and_every_command_line_accepts_it(extra_backbone):
    assert isinstance(load("tiny", resolution=8), extra_backbone)
    assert app.parse_args(["--backbone", "tiny"]).backbone == "tiny"
    assert evaluate_cli.parse_args(["data", "--backbone", "tiny"]).backbone == "tiny"


def test_unknown_names_and_options_are_clear_errors():
    with pytest.raises(InputError, match="choose one of auto, sd2, color"):
        load("nope")
    with pytest.raises(InputError, match="unknown option"):
        load("color", model="x")
    assert isinstance(load("colour", resolution=8), ColorAffinityBackbone)
