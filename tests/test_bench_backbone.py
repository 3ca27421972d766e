"""benchmarks/bench_backbone.py runs and prints its numbers (tiny models, so in seconds)."""

import json

import pytest

pytest.importorskip("transformers")

from benchmarks import bench_backbone  # noqa: E402


def test_the_benchmark_prints_time_and_memory_per_configuration(tmp_path, capsys):
    bench_backbone.main(["--tiny", "--run", "dinov2-small:4", "--run", "color:4", "--repeats", "1",
                         "--threads", "1", "--models", str(tmp_path)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    results = [line for line in lines if "model" in line]
    assert [(r["model"], r["resolution"]) for r in results] == [("dinov2-small", 4), ("color", 4)]
    for result in results:
        assert "error" not in result, result
        assert result["extract_s_median"] > 0 and result["peak_rss_mib"] >= result["rss_before_extract_mib"]
    assert results[0]["backbone"].startswith("DINOv2 (")


def test_a_configuration_past_the_timeout_is_reported_as_not_measured(tmp_path, capsys):
    bench_backbone.main(["--run", "color:4", "--timeout", "0.01", "--models", str(tmp_path)])
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["model"] == "color" and "not_measured" in result


def test_bad_runs_are_refused():
    with pytest.raises(SystemExit):
        bench_backbone.main(["--run", "sd3:64"])
