"""The evaluation spread over processes (torchrun, gloo on the CPU), stopped and resumed: every
object gets the same clicks and IoUs as in one uninterrupted process."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from m2n2.evaluate import __main__ as cli
from m2n2.evaluate.datasets import Sample, open_dataset
from m2n2.evaluate.spread import largest_first
from m2n2.evaluate.state import RunState

ROOT = Path(__file__).resolve().parents[1]
# Small images, R = 8, 3 clicks: each image takes a fraction of a second. M2N2 and GrabCut (whose
# OpenCV RNG must not make a mask depend on which images a process did before).
OPTIONS = ["--backbone", "color", "--resolution", "8", "--max-clicks", "3", "--method", "m2n2",
           "--method", "grabcut", "--threads", "1", "--no-progress", "--paper", "none"]
SHAPES = [(48, 64), (96, 128), (64, 48), (96, 128), (72, 96), (96, 128)]


def blob_image(seed, shape):
    """A noisy background with a bright ellipse placed by ``seed``: (image, mask)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.ogrid[:shape[0], :shape[1]]
    centre = rng.uniform(0.3, 0.7, 2) * shape
    mask = ((rows - centre[0]) / (shape[0] / 4)) ** 2 + ((cols - centre[1]) / (shape[1] / 5)) ** 2 <= 1
    image = np.where(mask[..., None], rng.integers(120, 220, 3), rng.integers(20, 90, 3))
    image = image + rng.integers(-25, 25, (*shape, 3))
    return np.clip(image, 0, 255).astype(np.uint8), mask


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("spread") / "blobs"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index, shape in enumerate(SHAPES):
        image, mask = blob_image(index, shape)
        Image.fromarray(image).save(root / "images" / f"blob{index}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"blob{index}.png")
    return root


def environment():
    """This checkout first on the path, one thread, and no launcher variables of an outer run."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def evaluate(dataset, out, *extra, processes=1, timeout=600):
    """Run the command line in ``processes`` processes (torchrun when more than one)."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                 str(processes)] if processes > 1 else [sys.executable])
    command = launcher + ["-m", "m2n2.evaluate", str(dataset), "--out", str(out), *OPTIONS, *extra]
    return subprocess.run(command, env=environment(), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def per_object(out):
    """What must not depend on the processes: clicks and IoUs of every object, per method."""
    data = json.loads((Path(out) / "results.json").read_text())
    objects = {method: {key: (run["clicks"], run["ious"]) for key, run in per.items()}
               for method, per in data["instances"].items()}
    noc = {method: row["noc"] for method, row in data["summary"].items()}
    return data, objects, noc


@pytest.fixture(scope="module")
def one_process(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "out"
    run = evaluate(dataset, out)
    assert run.returncode == 0, run.stderr
    return per_object(out)


@pytest.mark.slow
def test_two_processes_give_every_object_the_same_clicks_and_ious(dataset, one_process, tmp_path):
    pytest.importorskip("cv2")
    run = evaluate(dataset, tmp_path / "out", processes=2)
    assert run.returncode == 0, run.stderr
    data, objects, noc = per_object(tmp_path / "out")
    single, single_objects, single_noc = one_process
    assert data["settings"]["processes"] == 2 and single["settings"]["processes"] == 1
    assert objects == single_objects
    assert list(objects["m2n2"]) == [f"blob{i}" for i in range(len(SHAPES))]  # dataset order
    assert noc == single_noc
    assert data["images"].keys() == single["images"].keys()
    # One table, printed by the main process only; the part files are merged and gone.
    assert run.stdout.count("| m2n2 | 6 |") == 1 and "(2 processes)" in run.stdout
    assert not (tmp_path / "out" / "parts").exists()


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_a_killed_run_resumes_to_the_results_of_an_uninterrupted_one(dataset, one_process, tmp_path, processes):
    pytest.importorskip("cv2")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "m2n2.evaluate", str(dataset), "--out", str(out), *OPTIONS]
    process = subprocess.Popen(command, env=environment(), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    results = out / "results.json"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            if results.exists() and json.loads(results.read_text()).get("images"):
                break  # the first image's results are written: stop the run now
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    stopped = json.loads(results.read_text())
    assert 1 <= len(stopped["images"]) < len(SHAPES), "the run was not stopped part-way"

    run = evaluate(dataset, out, "--resume", processes=processes)
    assert run.returncode == 0, run.stderr
    data, objects, noc = per_object(out)
    single, single_objects, single_noc = one_process
    assert objects == single_objects and noc == single_noc
    # The finished images were not evaluated again: their timings are the stopped run's.
    for name in stopped["images"]:
        assert data["images"][name]["setup"] == stopped["images"][name]["setup"]


def write_blobs(root, count=3):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index in range(count):
        image, mask = blob_image(index, (40, 56))
        Image.fromarray(image).save(root / "images" / f"b{index}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"b{index}.png")
    return root


def grabcut_run(data, out, *extra):
    return cli.main([str(data), "--method", "grabcut", "--max-clicks", "2", "--out", str(out),
                     "--no-progress", "--paper", "none", *extra])


@pytest.fixture
def finished_run(tmp_path):
    pytest.importorskip("cv2")
    data = write_blobs(tmp_path / "data")
    assert grabcut_run(data, tmp_path / "out") == 0
    return data, tmp_path / "out"


@pytest.mark.parametrize("change", [["--max-clicks", "3"], ["--clicker", "authors"], ["--seed", "1"],
                                    ["--method", "grabcut:iterations=2,name=grabcut"], ["--limit", "2"]])
def test_resume_refuses_other_settings(finished_run, capsys, change):
    data, out = finished_run
    argv = [str(data), "--method", "grabcut", "--max-clicks", "2", "--out", str(out), "--no-progress",
            "--paper", "none", "--resume"]
    for index in range(0, len(change), 2):  # the change replaces the setting of the finished run
        if change[index] in argv:
            argv[argv.index(change[index]) + 1] = change[index + 1]
        else:
            argv += change[index:index + 2]
    before = (out / "results.json").read_text()
    assert cli.main(argv) == 2
    message = capsys.readouterr().err
    assert "cannot resume" in message and "other settings" in message
    assert (out / "results.json").read_text() == before  # nothing lost


def test_resume_refuses_results_of_code_that_gives_other_results(finished_run, capsys, monkeypatch):
    data, out = finished_run
    monkeypatch.setattr(cli, "RESULTS_VERSION", cli.RESULTS_VERSION + 1)
    assert grabcut_run(data, out, "--resume") == 2
    assert "results_version" in capsys.readouterr().err


def test_resume_refuses_another_backbone(finished_run, capsys):
    data, out = finished_run

    def argv(resolution):
        return [str(data), "--method", "grabcut", "--method", "m2n2", "--backbone", "color", "--resolution",
                str(resolution), "--max-clicks", "2", "--out", str(out), "--no-progress", "--paper", "none"]

    assert cli.main(argv(8)) == 0
    capsys.readouterr()
    assert cli.main(argv(6) + ["--resume"]) == 2
    assert "resolution" in capsys.readouterr().err


def test_resume_of_a_finished_run_evaluates_nothing(finished_run, monkeypatch, capsys):
    data, out = finished_run
    before = json.loads((out / "results.json").read_text())
    calls = []
    monkeypatch.setattr(cli, "evaluate_sample", lambda *args: calls.append(args))
    assert grabcut_run(data, out, "--resume") == 0
    assert calls == []
    after = json.loads((out / "results.json").read_text())
    assert after["instances"] == before["instances"] and after["summary"] == before["summary"]
    assert "3 object(s) from 3 of 3 image(s)" in capsys.readouterr().out


def test_resume_merges_the_part_files_of_a_stopped_spread_run(finished_run, monkeypatch):
    # A stopped spread run leaves results.json (what was resumed) and one part file per process;
    # here the three finished images are split over results.json and two part files.
    data, out = finished_run
    full = json.loads((out / "results.json").read_text())
    state = RunState.from_json(full)
    names = list(state.images)
    (out / "parts").mkdir()
    for path, keep in [(out / "results.json", names[:1]), (out / "parts" / "rank-0.json", names[1:2]),
                       (out / "parts" / "rank-1.json", names[2:])]:
        part = RunState({name: state.images[name] for name in keep})
        results, _, _ = part.flat(["grabcut"])
        path.write_text(json.dumps(cli.results_json(results, {}, [], full["settings"], part.to_json())))
    evaluated = []
    real = cli.evaluate_sample
    monkeypatch.setattr(cli, "evaluate_sample", lambda methods, sample, *rest: evaluated.append(sample.name)
                        or real(methods, sample, *rest))
    assert grabcut_run(data, out, "--resume") == 0
    assert evaluated == []
    after = json.loads((out / "results.json").read_text())
    assert after["instances"] == full["instances"]
    assert not list((out / "parts").glob("*.json"))


def test_resume_without_results_starts_the_run(tmp_path, capsys):
    pytest.importorskip("cv2")
    data = write_blobs(tmp_path / "data", count=2)
    assert grabcut_run(data, tmp_path / "out", "--resume") == 0
    assert "nothing to resume" in capsys.readouterr().err
    assert len(json.loads((tmp_path / "out" / "results.json").read_text())["images"]) == 2


def test_a_spread_run_hands_out_the_costliest_images_first(dataset):
    samples = open_dataset(dataset)
    # The folder reader's estimate is the pixel count, read from the file's header.
    assert [s.expected_cost() for s in samples] == [h * w for h, w in SHAPES]
    order = largest_first(samples)
    assert sorted(order) == list(range(len(SHAPES)))
    costs = [SHAPES[i][0] * SHAPES[i][1] for i in order]
    assert costs == sorted(costs, reverse=True)
    tied = [i for i in order if SHAPES[i] == (96, 128)]
    assert tied == sorted(tied)  # ties keep the dataset's order (the same order on every process)


def test_unknown_costs_go_last_in_dataset_order(tmp_path):
    samples = [Sample("a", None), Sample("b", None, lambda: 5.0), Sample("c", None, lambda: int("unreadable")),
               Sample("d", None, lambda: 7.0), Sample("e", None, lambda: open(tmp_path / "missing"))]
    assert [s.expected_cost() for s in samples] == [0.0, 5.0, 0.0, 7.0, 0.0]
    assert largest_first(samples) == [3, 1, 0, 2, 4]


def test_a_coco_image_costs_its_pixels_times_its_objects(tmp_path):
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((30, 20, 3), np.uint8)).save(tmp_path / "images" / "no-size.png")
    rle = {"size": [30, 20], "counts": [10, 5, 585]}
    coco = {"images": [{"id": 1, "file_name": "sized.png", "width": 40, "height": 10},
                       {"id": 2, "file_name": "no-size.png"}],
            "annotations": [{"id": 1, "image_id": 1, "segmentation": rle},
                            {"id": 2, "image_id": 1, "segmentation": rle},
                            {"id": 3, "image_id": 1, "segmentation": rle, "iscrowd": 1},
                            {"id": 4, "image_id": 2, "segmentation": rle}]}
    (tmp_path / "gt.json").write_text(json.dumps(coco))
    samples = open_dataset(tmp_path / "gt.json")
    # The annotation file's size when it has one (no file read), else the image's header.
    assert {s.name: s.expected_cost() for s in samples} == {"sized": 40 * 10 * 2, "no-size": 20 * 30}
