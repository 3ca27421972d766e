"""The segment command line: its preset, the backbone it says it used, and its messages on bad clicks."""

import json

import numpy as np
import pytest
from PIL import Image

from m2n2 import M2N2Config, backbones, segment
from m2n2.errors import BackboneUnavailable

R = "16"


def written_settings(folder) -> M2N2Config:
    return M2N2Config(**json.loads((folder / "recipe.json").read_text())["settings"])


def mask(folder, number=1) -> np.ndarray:
    return np.asarray(Image.open(folder / f"mask_{number}.png")) > 127


def points_run(path, out, *extra):
    return segment.main([path, "--points", "[[40, 30, 1]]", "--backbone", "color", "--resolution", R,
                         "--out", str(out), *extra])


def test_the_exact_preset_by_default_and_an_explicit_one_honoured(square_file, tmp_path, capsys):
    path, truth = square_file
    assert points_run(path, tmp_path / "exact") == 0
    said = capsys.readouterr()
    assert written_settings(tmp_path / "exact") == M2N2Config()
    assert "preset: exact\n" in said.out and "deprecated" not in said.err
    assert points_run(path, tmp_path / "fast", "--preset", "fast") == 0
    assert written_settings(tmp_path / "fast") == M2N2Config.fast()
    assert "preset: fast\n" in capsys.readouterr().out
    assert points_run(path, tmp_path / "exact2", "--preset", "exact") == 0
    assert written_settings(tmp_path / "exact2") == M2N2Config()
    np.testing.assert_array_equal(mask(tmp_path / "exact2"), mask(tmp_path / "exact"))
    assert mask(tmp_path / "exact")[30, 40]


@pytest.mark.parametrize("flag, preset", [("--fast", "fast"), ("--faithful", "exact")])
def test_the_old_flags_still_work_and_say_they_are_deprecated(square_file, tmp_path, capsys, flag, preset):
    path, _ = square_file
    assert points_run(path, tmp_path / "a", flag) == 0
    assert f"warning: {flag} is deprecated; use --preset {preset}" in capsys.readouterr().err
    assert written_settings(tmp_path / "a") == M2N2Config.preset(preset)


def test_conflicting_preset_flags_are_refused(square_file, tmp_path, capsys):
    path, _ = square_file
    with pytest.raises(SystemExit) as exit_:
        points_run(path, tmp_path / "a", "--preset", "exact", "--fast")
    assert exit_.value.code == 2 and "not allowed with argument --preset" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_a_recipe_keeps_its_settings_unless_a_preset_is_named(square_file, tmp_path, capsys):
    path, _ = square_file
    made = tmp_path / "made"
    assert segment.main([path, "--points", "[[40, 30, 1]]", "--points", "5,5,1;40,30,0", "--backbone", "color",
                         "--resolution", R, "--preset", "fast", "--out", str(made)]) == 0
    capsys.readouterr()
    kept = tmp_path / "kept"
    assert segment.main([path, "--recipe", str(made / "recipe.json"), "--out", str(kept)]) == 0
    assert "preset: fast (the recipe's)" in capsys.readouterr().out
    assert written_settings(kept) == M2N2Config.fast()
    for number in (1, 2):
        np.testing.assert_array_equal(mask(kept, number), mask(made, number))

    # A recipe with a setting of its own: --preset exact changes what tells the presets apart, nothing else.
    data = json.loads((made / "recipe.json").read_text())
    data["settings"]["rho"] = 0.35
    custom = tmp_path / "custom.json"
    custom.write_text(json.dumps(data))
    switched = tmp_path / "switched"
    assert segment.main([path, "--recipe", str(custom), "--preset", "exact", "--out", str(switched)]) == 0
    assert "preset: custom settings\n" in capsys.readouterr().out
    assert written_settings(switched) == M2N2Config(rho=0.35)


def test_the_backbone_used_is_said_with_why_it_fell_back(square_file, tmp_path, capsys, monkeypatch):
    def missing(title):
        def factory(model=None, resolution=None, device=None):
            raise BackboneUnavailable(f"{title} weights not found: offline")
        return factory

    monkeypatch.setitem(backbones.REGISTRY, "sd2", missing("Stable Diffusion 2"))
    monkeypatch.setitem(backbones.REGISTRY, "dinov2", missing("DINOv2"))
    path, _ = square_file
    assert segment.main([path, "--points", "[[40, 30, 1]]", "--resolution", R, "--out", str(tmp_path / "a")]) == 0
    lines = capsys.readouterr().out.splitlines()
    described = backbones.load("color", resolution=int(R)).description
    assert lines[0] == (f"backbone: color ({described}); fallback: Stable Diffusion 2 weights not found: offline; "
                        "DINOv2 weights not found: offline; using the colour-affinity fallback")
    assert json.loads((tmp_path / "a" / "recipe.json").read_text())["backbone"]["key"] == "color"
    # Asked for by name, it is no fallback.
    assert points_run(path, tmp_path / "b") == 0
    assert capsys.readouterr().out.splitlines()[0] == f"backbone: color ({described})"


@pytest.mark.parametrize("points, message", [
    ("[[-5, 3, 1]]", "--points number 1: click 1 at (x=-5, y=3) is outside the 80 x 60 image "
                     "(x in [0, 80), y in [0, 60))"),
    ("[[1, 1, 1], [3, -0.5, 0]]", "--points number 1: click 2 at (x=3, y=-0.5) is outside the 80 x 60 image"),
    ("[[NaN, 3, 1]]", "--points number 1: click 1 has a coordinate that is NaN or infinite, got [nan, 3, 1]"),
    ("[[3, Infinity, 1]]", "--points number 1: click 1 has a coordinate that is NaN or infinite, got [3, inf, 1]"),
    ("1,1,1;inf,3,1", "--points number 1: click 2 has a coordinate that is NaN or infinite, got 'inf,3,1'"),
    ("[[3, 3, 2]]", "--points number 1: click 1 needs the label 0 or 1"),
])
def test_bad_clicks_say_what_is_wrong_before_any_model_loads(square_file, tmp_path, capsys, monkeypatch,
                                                             points, message):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded for clicks that cannot be used")

    monkeypatch.setattr(segment, "load", no_model)
    path, _ = square_file
    assert segment.main([path, "--points", points, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: " + message), err
    assert "inf x" not in err and not (tmp_path / "a").exists()


def test_a_strip_too_long_to_segment_is_refused_before_any_model_loads(tmp_path, capsys, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded for an image that cannot be used")

    monkeypatch.setattr(segment, "load", no_model)
    strip = tmp_path / "strip.png"
    Image.fromarray(np.zeros((100, 2000, 3), np.uint8)).save(strip)
    assert segment.main([str(strip), "--points", "[[40, 30, 1]]", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the image is 2000 x 100 pixels, 20 times as wide as it is high"), err
    assert "crop it to at most 800 x 100 pixels" in err and not (tmp_path / "a").exists()
