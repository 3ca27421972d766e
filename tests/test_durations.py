"""The GPU time each job asks ZeroGPU for grows with its work and stays under the old fixed requests."""

import numpy as np

from m2n2 import M2N2Config
from m2n2.studio import durations, gpu

EXACT = M2N2Config()


def test_the_request_grows_with_r_the_image_the_clicks_and_a_possible_preparation():
    ask = durations.requested_seconds
    assert ask(64, (1024, 1024), 1, False, EXACT) < ask(128, (1024, 1024), 1, False, EXACT)
    assert ask(128, (256, 256), 20, False, EXACT) < ask(128, (1024, 1024), 20, False, EXACT)
    assert ask(128, (1024, 1024), 1, False, EXACT) < ask(128, (1024, 1024), 20, False, EXACT)
    assert ask(128, (1024, 1024), 1, False, EXACT) < ask(128, (1024, 1024), 1, True, EXACT)
    # the fast preset's leap and table cost preparation time
    assert ask(128, (1024, 1024), 0, True, EXACT) < ask(128, (1024, 1024), 0, True, M2N2Config.fast())
    # the largest a job may ask for
    assert ask(512, (4096, 4096), 1000, True, EXACT) == durations.LONGEST


def test_each_job_asks_from_its_own_work():
    image = np.zeros((768, 1024, 3), np.uint8)
    points, labels = np.zeros((3, 2)), np.ones(3, np.int64)
    prepare = gpu.job_seconds(gpu.PrepareJob("s/1", image, 128, EXACT))
    click = gpu.job_seconds(gpu.SegmentJob("s/1", points, labels, None, EXACT, image, 128))
    click_held = gpu.job_seconds(gpu.SegmentJob("s/1", points[:1], labels[:1], None, EXACT))
    api = gpu.job_seconds(gpu.ImageJob(image, points, labels, 128, EXACT))
    assert click_held < prepare < click == api
    # under what c54c95d asked for every time: 120 s to prepare, 30 s per click
    assert prepare < 120 and click < 30
    assert click == durations.requested_seconds(128, (768, 1024), 3, True, EXACT, markov_runs=1)
    # a click's new maps (all of them after a miss) are one Markov run; a recipe replays click by click
    twenty = np.zeros((20, 2)), np.ones(20, np.int64)
    click20 = gpu.job_seconds(gpu.SegmentJob("s/1", *twenty, None, EXACT, image, 128))
    replay20 = gpu.job_seconds(gpu.ObjectsJob("s/1", [(*twenty, None)], EXACT, image, 128))
    assert click < click20 < replay20
