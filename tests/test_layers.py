"""The library knows nothing of the web: importing it pulls in no gradio, spaces or matplotlib."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ["m2n2", "m2n2.predictor", "m2n2.geometry", "m2n2.image", "m2n2.backbones", "m2n2.evaluate",
           "m2n2.evaluate.methods", "m2n2.evaluate.protocol"]


def imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in done.stdout.split()}


def test_the_library_imports_no_web_or_plotting_package():
    loaded = imported_after("; ".join(f"import {module}" for module in LIBRARY))
    assert "m2n2" in loaded
    assert not loaded & {"gradio", "spaces", "matplotlib"}, loaded & {"gradio", "spaces", "matplotlib"}


def test_the_check_can_fail():
    """The same probe sees the app layer's packages (so the test above is not vacuous)."""
    assert {"gradio", "matplotlib"} <= imported_after("import m2n2.studio.views, m2n2.studio.handlers")
