"""warm_up compiles every CPU kernel a click of its preset uses, before any real image.

Checked in a fresh interpreter (kernels compile on their first call in a process): none is
compiled after the imports, each one the preset uses is after ``warm_up``.
"""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = """
import importlib, json
from numba.core.registry import CPUDispatcher
from m2n2 import M2N2Config
from m2n2.predictor import warm_up
modules = [importlib.import_module("m2n2." + name) for name in ("markov", "threshold", "floodfill", "merge", "upsample")]
kernels = {module.__name__ + "." + name: f for module in modules for name, f in vars(module).items()
           if isinstance(f, CPUDispatcher)}
before = sorted(name for name, f in kernels.items() if f.signatures)
seconds = warm_up(M2N2Config.fast() if PRESET == "fast" else M2N2Config())
print(json.dumps({"kernels": sorted(kernels), "before": before, "seconds": seconds,
                  "after": sorted(name for name, f in kernels.items() if f.signatures)}))
"""
TABLE_KERNELS = {"m2n2.upsample._apply_table", "m2n2.upsample._flush_partial", "m2n2.upsample._table_pair"}


@pytest.mark.parametrize("preset", ["fast", "exact"])
def test_warm_up_compiles_the_kernels_of_its_preset(preset):
    done = subprocess.run([sys.executable, "-c", SCRIPT.replace("PRESET", repr(preset))], capture_output=True,
                          text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(found["kernels"]) >= 10 and found["before"] == []
    needed = set(found["kernels"]) - (set() if preset == "fast" else TABLE_KERNELS)  # exact: no table
    assert needed <= set(found["after"]), sorted(needed - set(found["after"]))
    assert found["seconds"] > 0
