"""m2n2.config: the presets by name, the shared defaults, and the --preset option of every command line."""

import argparse

import pytest
import torch

from m2n2.config import (MAX_CLICKS, PRESETS, M2N2Config, add_preset_argument, default_resolution,
                         preset_from_args)
from m2n2.errors import InputError


def test_presets_by_name():
    assert PRESETS == ("exact", "fast")
    assert M2N2Config.preset("exact") == M2N2Config()
    assert M2N2Config.preset("fast") == M2N2Config.fast()
    assert M2N2Config.preset("exact", rho=0.4) == M2N2Config(rho=0.4)
    assert M2N2Config.preset("fast", markov_leap=4) == M2N2Config.fast(markov_leap=4)
    for old in ("faithful", "default", "Fast", ""):
        with pytest.raises(InputError, match="exact, fast"):
            M2N2Config.preset(old)


def test_preset_name():
    assert M2N2Config().preset_name == "exact"
    assert M2N2Config.fast().preset_name == "fast"
    assert M2N2Config.preset("fast").preset_name == "fast"
    assert M2N2Config(rho=0.4).preset_name is None
    assert M2N2Config.fast(markov_leap=4).preset_name is None
    assert M2N2Config().replace(operator_dtype="float16").preset_name is None


def test_max_clicks_is_the_protocols_twenty():
    assert MAX_CLICKS == 20


def test_default_resolution_follows_the_device():
    assert default_resolution("cpu") == 64
    assert default_resolution(torch.device("cpu")) == 64
    assert default_resolution("cuda") == 128
    assert default_resolution(torch.device("cuda", 0)) == 128
    assert default_resolution() == (128 if torch.cuda.is_available() else 64)


def _parser(**kwargs):
    parser = argparse.ArgumentParser(prog="tool")
    add_preset_argument(parser, **kwargs)
    return parser


@pytest.mark.parametrize("argv, expected", [([], "exact"), (["--preset", "fast"], "fast"),
                                            (["--preset", "exact"], "exact")])
def test_preset_option(argv, expected, capsys):
    assert preset_from_args(_parser().parse_args(argv)) == expected
    assert "deprecated" not in capsys.readouterr().err


def test_preset_option_default_none_and_fast():
    assert preset_from_args(_parser(default=None).parse_args([])) is None
    assert preset_from_args(_parser(default="fast").parse_args([])) == "fast"
    assert preset_from_args(argparse.Namespace()) is None  # a command without the option
    with pytest.raises(ValueError):
        _parser(default="faithful")


@pytest.mark.parametrize("flag, preset", [("--fast", "fast"), ("--faithful", "exact")])
def test_deprecated_aliases_still_work_and_warn(flag, preset, capsys):
    for default in ("exact", "fast", None):
        assert preset_from_args(_parser(default=default).parse_args([flag])) == preset
        assert f"warning: {flag} is deprecated; use --preset {preset}" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--fast", "--faithful"], ["--preset", "exact", "--fast"],
                                  ["--faithful", "--preset", "fast"], ["--preset", "fast", "--fast"]])
def test_conflicting_preset_flags_are_a_parser_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(argv)
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_unknown_preset_is_a_parser_error(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["--preset", "faithful"])
    assert "invalid choice: 'faithful'" in capsys.readouterr().err


def test_help_names_the_presets_and_the_default(capsys):
    with pytest.raises(SystemExit):
        _parser(default=None, help_default="the recipe's settings").parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--preset {exact,fast}" in text and "(default: the recipe's settings)" in text
    assert "deprecated: use --preset fast" in text and "deprecated: use --preset exact" in text


def test_which_maps_use_the_dense_filter_and_the_table():
    from m2n2 import M2N2Config
    fast = M2N2Config.fast()
    assert fast.early_maps_use_table and not fast.uses_dense_filter
    assert M2N2Config().uses_dense_filter and not M2N2Config().early_maps_use_table  # exact: no table
    older = M2N2Config.fast(early_table=False)  # a version-2 recipe's fast preset: its first map
    assert older.uses_dense_filter and not older.early_maps_use_table
    example = M2N2Config.fast(early_maps=0)  # every map through the table, none early
    assert not example.uses_dense_filter and not example.early_maps_use_table
