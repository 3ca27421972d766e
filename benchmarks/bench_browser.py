"""Click latency as a person sees it: Chromium (Playwright) clicks on the app, the page's own clock measures.

Starts ``python app.py`` (the app's defaults, so the colour backbone where no weights are
installed; ``HF_HUB_OFFLINE=1`` so that the fallback is decided at once) on 127.0.0.1 in a
subprocess, waits until it has prepared its examples in the background (its log says so), opens
it in headless Chromium at 1400 x 900, and for each example (astronaut and chelsea by default): picks it, waits until its preparation has finished (status "0 clicks"),
then makes a fixed list of clicks (``--clicks``, 20 by default) ``--interval`` seconds apart
(2 s), all foreground. A script in the page timestamps, with ``performance.now()``:

- the click (a capturing ``click`` listener),
- every change of the canvas picture (its ``src``) and every ``load`` of it,
- every change of the status line,
- every change of the heatmap (it comes with the score curve: with the click's result, or in the
  event after it).

Per click it reports

- **mask**: click -> the picture that comes with the click's result has loaded (the status
  line counts k clicks applied, whatever later clicks still wait after that count, and the
  picture set with it has decoded): what the issue's target is about (p50 <= 0.4 s, p95 <= 0.6 s);
- **status**: click -> the status line shows the result;
- **plots**: click -> the heatmap of the click's result is shown (the score curve comes with it);
- **marker**: click -> the click's marker: the page's own marker element where the page draws it
  (static/page.js), else the first new picture (the marker drawn on the server by an event that
  skips the queue: the round trip of a light event, i.e. transport plus one overlay);
- **server**: the click's own time the server reports on the status line ("click 0.27 s":
  segmentation and commit, not the pictures);

and, from Gradio's own traces (the apps run with ``GRADIO_PROFILING=1``), the median phases of
the click's events on the server (the queued ``click_only``, the ``after_click`` after it (``share_views`` before 2026-12-03), and
the marker's ``mark`` where a checkout has one: before 2026-12-02 it counted the click as waiting): time waiting in the queue, preprocessing, the handler (which
includes the views' drawing), postprocessing (encoding the pictures and caching files).

and, with ``--render`` (on by default), the time the app's views take, in a separate process, to
draw one click's pictures as the app sends them: the overlay, its PNG encoding (once per click;
twice where the marker's event carries a picture too), the heatmap and the score curve (matplotlib figures
encoded as WebP where the app draws them on the server; the HTML and SVG the browser draws
where it does), on the same example and resolution. What remains of "mask" after server and rendering is the
queue, the chained events, transport and the browser.

Run it alone (it is a timing), e.g.::

    flock -x /tmp/m2n2-cpu.lock env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \\
        python benchmarks/bench_browser.py --baseline /work/base-d134f0f

``--latency MS`` has Chromium answer each request MS later (its network emulation), as for a
visitor across a network. ``--baseline DIR`` measures DIR's app first, then this checkout's, in one run. The last line
printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # loopback only
VIEWPORT = {"width": 1400, "height": 900}
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Fractions (x, y) of the displayed picture: a fixed spread over the whole image.
CLICKS = [(0.30, 0.85), (0.50, 0.20), (0.15, 0.15), (0.80, 0.30), (0.60, 0.70), (0.25, 0.45), (0.85, 0.85),
          (0.45, 0.55), (0.10, 0.70), (0.70, 0.10), (0.35, 0.30), (0.90, 0.55), (0.55, 0.90), (0.20, 0.60),
          (0.65, 0.40), (0.40, 0.75), (0.75, 0.65), (0.05, 0.40), (0.50, 0.05), (0.95, 0.20)]
TIMEOUT_MS = 180_000

# Timestamps of the clicks, the canvas picture and the status line, on the page's clock.
RECORDER = """() => {
  const log = window.__m2n2_log = [];
  const now = () => performance.now();
  document.addEventListener("click", e => {
    if (e.target.closest && e.target.closest("#canvas")) log.push({t: now(), kind: "click"});
  }, true);
  const canvas = document.getElementById("canvas");
  canvas.addEventListener("load", e => {
    if (e.target.tagName === "IMG") log.push({t: now(), kind: "load", src: e.target.src.slice(-80)});
  }, true);
  new MutationObserver(records => {
    for (const r of records) {
      const img = r.type === "attributes" ? r.target : null;
      if (img && img.tagName === "IMG" && r.attributeName === "src")
        log.push({t: now(), kind: "src", src: (img.src || "").slice(-80)});
      if (r.type === "childList") for (const n of r.addedNodes)
        if (n.classList && n.classList.contains("m2n2-waiting-marker")) log.push({t: now(), kind: "marker"});
        else if (n.tagName === "IMG" || (n.querySelector && n.querySelector("img"))) {
          const i = n.tagName === "IMG" ? n : n.querySelector("img");
          log.push({t: now(), kind: "src", src: (i.src || "").slice(-80)});
        }
    }
  }).observe(canvas, {subtree: true, attributes: true, attributeFilter: ["src"], childList: true});
  // The heatmap's picture: a new one, or (Gradio patches an HTML component's nodes in place) a new src.
  new MutationObserver(records => {
    const picture = n => n.tagName === "IMG" || (n.querySelector && n.querySelector("img"));
    if (records.some(r => (r.type === "attributes" && r.target.tagName === "IMG")
                          || [...r.addedNodes].some(picture))) log.push({t: now(), kind: "plots"});
  }).observe(document.getElementById("heatmap"), {subtree: true, childList: true, attributes: true,
                                                  attributeFilter: ["src"]});
  const status = document.getElementById("status");
  let last = status.innerText;
  new MutationObserver(() => {
    const text = status.innerText;
    if (text !== last) { last = text; log.push({t: now(), kind: "status", text}); }
  }).observe(status, {subtree: true, childList: true, characterData: true});
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_app(app_dir: Path, port: int, log_path: Path, extra: list[str]) -> subprocess.Popen:
    """``python app.py`` from ``app_dir`` (its own m2n2 first on the path), answering on ``port``."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(app_dir), "GRADIO_PROFILING": "1"}
    log = open(log_path, "w")
    process = subprocess.Popen([sys.executable, "app.py", "--server-name", HOST, "--port", str(port), *extra],
                               cwd=app_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{HOST}:{port}/"
    deadline = time.monotonic() + 300
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with code {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return process
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the app did not answer within 300 s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)


def wait_for_log(log_path: Path, text: str, process: subprocess.Popen, timeout: float = 600) -> None:
    """Wait until the app's log contains ``text`` (or it exits, or ``timeout`` seconds pass)."""
    deadline = time.monotonic() + timeout
    while text not in log_path.read_text() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(1)


def stop_app(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used, 0 once it is gone (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(server_pid: int | None) -> dict[str, float] | None:
    """CPU seconds used so far by the server, by every Chromium process, and stolen from this
    machine by its host (``/proc/stat``); None where there is no /proc. Differences between two
    snapshots say where the cores went during the clicks: on a 2-core machine the browser's own
    work competes with the click's two threads."""
    proc = Path("/proc")
    if not (proc / "stat").exists():
        return None
    used = {"server": _process_cpu_s(server_pid) if server_pid else 0.0, "chromium": 0.0}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                name = (entry / "comm").read_text().strip()
                arguments = (entry / "cmdline").read_bytes().replace(b"\0", b" ").split()
            except OSError:
                continue
            if name.startswith(("chrom", "headless_shell")):
                kind = next((a[7:].decode() for a in arguments if a.startswith(b"--type=")), "browser")
                seconds = _process_cpu_s(int(entry.name))
                used["chromium"] += seconds
                used[f"chromium {kind}"] = used.get(f"chromium {kind}", 0.0) + seconds
    cpu = (proc / "stat").read_text().splitlines()[0].split()
    used["steal"] = int(cpu[8]) / os.sysconf("SC_CLK_TCK") if len(cpu) > 8 else 0.0
    return used


def cpu_per_click(before: dict | None, after: dict | None, clicks: int) -> dict[str, float] | None:
    if before is None or after is None or not clicks:
        return None
    return {key: round((after[key] - before.get(key, 0.0)) / clicks, 4) for key in after}


def picture_point(page, fx: float, fy: float) -> dict:
    """Page coordinates of the point at fractions (fx, fy) of the displayed picture (object-fit: contain)."""
    image = page.locator("#canvas img").first
    natural = image.evaluate("""img => new Promise(resolve => {
        const done = () => resolve([img.naturalWidth, img.naturalHeight]);
        if (img.complete && img.naturalWidth) done(); else img.addEventListener("load", done, {once: true});
    })""")
    box = image.bounding_box()
    scale = min(box["width"] / natural[0], box["height"] / natural[1])
    left = box["x"] + (box["width"] - natural[0] * scale) / 2
    top = box["y"] + (box["height"] - natural[1] * scale) / 2
    return {"x": left + fx * natural[0] * scale, "y": top + fy * natural[1] * scale}


MARKER_EARLY_MS = 20


def clicks_pattern(count: int) -> re.Pattern:
    return re.compile(rf"\b{count} clicks?\b(?! \(\+)")


def shown_clicks(text: str) -> int:
    """The count of clicks applied that a status line shows (-1 without one). Clicks still waiting
    follow it as " (+n waiting)" (static/page.js): a result that comes while later clicks wait
    shows its own count with theirs after it, so the count alone says which clicks it includes."""
    match = re.search(r"\b(\d+) clicks?\b", text)
    return -1 if match is None else int(match.group(1))


def analyse(log: list[dict], count: int) -> list[dict]:
    """Per click: seconds to the marker, the status line and the mask, and the server's click time."""
    clicks = [e["t"] for e in log if e["kind"] == "click"]
    out = []
    for k, t_click in enumerate(clicks[:count], start=1):
        after = [e for e in log if e["t"] >= t_click]
        # The page's own marker where it draws one (static/page.js), else the first picture loaded.
        # The page draws it in its own click listener, before the recorder's sees the click: so it
        # may be logged up to MARKER_EARLY_MS before the click itself.
        marker = next((e["t"] for e in log if e["kind"] == "marker" and t_click - MARKER_EARLY_MS <= e["t"]), None)
        if marker is None or marker > t_click + 1000:
            marker = next((e["t"] for e in after if e["kind"] == "load"), None)
        marker = None if marker is None else max(marker, t_click)
        # The first result that includes this click: the app folds clicks that waited into one
        # segmentation, so a later count (without "waiting") shows this click's mask too.
        status = next((e for e in after if e["kind"] == "status" and shown_clicks(e["text"]) >= k), None)
        row = {"click": k, "marker_s": None if marker is None else (marker - t_click) / 1000}
        plots = next((e["t"] for e in after if e["kind"] == "plots"), None)
        row["plots_s"] = None if plots is None else (plots - t_click) / 1000
        if status is not None:
            row["status_s"] = (status["t"] - t_click) / 1000
            match = re.search(r"click (\d+\.\d+) s", status["text"])
            row["server_s"] = float(match.group(1)) if match else None
            # The result's picture: the last src change up to the status change (same update), then its load.
            sources = [e for e in log if e["kind"] == "src" and t_click <= e["t"] <= status["t"] + 50]
            src = sources[-1] if sources else None
            if src is not None:
                load = next((e for e in log if e["kind"] == "load" and e["t"] >= src["t"]), None)
                row["mask_s"] = None if load is None else (max(load["t"], status["t"]) - t_click) / 1000
        out.append(row)
    return out


def run_browser(url: str, examples: list[str], count: int, interval: float,
                settle: float = 15.0, tag: str = "", latency_ms: float = 0.0,
                server_pid: int | None = None, cpu: dict | None = None) -> dict[str, list[dict]]:
    from playwright.sync_api import sync_playwright

    binary = os.environ.get("M2N2_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    results = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=binary, args=CHROMIUM_ARGS)
        try:
            for name in examples:
                page = browser.new_page(viewport=VIEWPORT)
                page.set_default_timeout(TIMEOUT_MS)
                if latency_ms:  # a visitor across a network: each request's answer comes this much later
                    cdp = page.context.new_cdp_session(page)
                    cdp.send("Network.enable")
                    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": latency_ms,
                                                                  "downloadThroughput": -1, "uploadThroughput": -1})
                page.goto(url, timeout=TIMEOUT_MS)
                page.locator("#examples button").first.wait_for()
                page.locator(f"#examples button:has(img[src*='{name}'])").click()
                page.locator("#status").filter(has_text=clicks_pattern(0)).wait_for()
                page.locator("#canvas img").first.wait_for()
                # The example's background work (the first mask's leftovers: leap and table) ends meanwhile.
                page.wait_for_timeout(settle * 1000)
                page.evaluate(RECORDER)
                before = cpu_snapshot(server_pid)
                start = time.monotonic()
                for k, (fx, fy) in enumerate(CLICKS[:count]):
                    delay = start + k * interval - time.monotonic()
                    if delay > 0:
                        page.wait_for_timeout(delay * 1000)
                    point = picture_point(page, fx, fy)
                    page.mouse.click(point["x"], point["y"])
                page.locator("#status").filter(has_text=clicks_pattern(count)).wait_for()
                page.wait_for_timeout(500)
                if cpu is not None:  # from the first click to 0.5 s after the last result
                    cpu[name] = cpu_per_click(before, cpu_snapshot(server_pid), count)
                log = page.evaluate("window.__m2n2_log")
                if os.environ.get("M2N2_BENCH_DUMP"):  # the raw timeline, for a closer look
                    Path(os.environ["M2N2_BENCH_DUMP"]).with_suffix(f".{tag}{name}.json").write_text(json.dumps(log))
                results[name] = analyse(log, count)
                page.close()
        finally:
            browser.close()
    return results


def render_times(app_dir: Path, examples: list[str], resolution: int, rounds: int = 5) -> dict[str, float]:
    """Median seconds the views of ``app_dir`` take to draw one click's pictures, as the app sends them."""
    code = f"""
import io, json, statistics, time, sys
import numpy as np
from PIL import Image
from m2n2.backbones import load
from m2n2.predictor import M2N2Predictor
from m2n2.studio import views
times = {{"overlay": [], "overlay_encoded": [], "heatmap": [], "scores": []}}
for name in {examples!r}:
    image = np.asarray(Image.open("examples/" + name + ".jpg").convert("RGB"))
    predictor = M2N2Predictor(load("color", resolution={resolution}))
    predictor.set_image(image)
    h, w = image.shape[:2]
    points = [(0.30 * w, 0.85 * h), (0.5 * w, 0.2 * h)]
    last = predictor.predict(points, [1, 1]).points[-1]
    mask = predictor.predict(points, [1, 1]).mask
    def timed(key, make):
        for _ in range({rounds}):
            start = time.perf_counter(); make(); times[key].append(time.perf_counter() - start)
    picture = views.overlay(image, mask, points, [1, 1])
    def overlay():
        views.overlay(image, mask, points, [1, 1])
    def overlay_encoded():  # as the app's canvas encodes it (JPEG where views says so, else PNG)
        quick = getattr(views, "canvas_picture", None) or getattr(views, "quick_png", Image.fromarray)
        quick(picture).save(io.BytesIO(), getattr(views, "CANVAS_FORMAT", "png"))
    if hasattr(views, "heatmap_view"):  # HTML the browser draws
        def heatmap():
            views.heatmap_view(last.markov_map, points[-1], 1)
        def scores():
            views.score_view(last, 2)
    else:  # matplotlib figures, encoded as Gradio does (WebP)
        def heatmap():
            views.heatmap_figure(last.markov_map, points[-1], 1).savefig(io.BytesIO(), format="webp")
        def scores():
            views.score_figure(last, 2).savefig(io.BytesIO(), format="webp")
    timed("overlay", overlay); timed("overlay_encoded", overlay_encoded); timed("heatmap", heatmap); timed("scores", scores)
print(json.dumps({{k: statistics.median(v) for k, v in times.items()}}))
"""
    env = {**os.environ, "PYTHONPATH": str(app_dir)}
    done = subprocess.run([sys.executable, "-c", code], cwd=app_dir, env=env, capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        return {"error": done.stderr[-500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


#: The events of a click (the click, the object list after it, an older checkout's marker) whose server phases are reported.
CLICK_EVENTS = ("mark", "click_only", "share_views", "after_click")
PHASES = ("queue_wait_ms", "preprocess_ms", "fn_call_ms", "postprocess_ms", "total_ms",
          # within postprocess: the picture's PNG into the cache, the values a deep link keeps, the files
          "postprocess_save_pil_to_cache_ms", "postprocess_update_state_in_config_ms", "postprocess_move_to_cache_ms")


def server_phases(url: str) -> dict:
    """Median milliseconds of each phase of the click's events, from Gradio's own traces
    (``GRADIO_PROFILING=1``): waiting in the queue, preprocessing, the handler (computing and
    drawing the views), postprocessing (encoding the pictures, caching files)."""
    try:
        with urllib.request.urlopen(f"{url}gradio_api/profiling/traces", timeout=30) as response:
            traces = json.loads(response.read())
    except OSError as error:
        return {"error": str(error)}
    out = {}
    for name in CLICK_EVENTS:
        rows = [t for t in traces if t.get("fn_name") == name]
        if rows:
            out[name] = {"count": len(rows), **{phase: round(float(np.median([t.get(phase, 0.0) for t in rows])), 1)
                                                for phase in PHASES}}
    return out


def percentile(values, q: float) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.percentile(values, q)) if values else None


def summarise(rows: list[dict]) -> dict:
    out = {"clicks": len(rows), "missing": sum(1 for r in rows if r.get("mask_s") is None)}
    for key in ("mask_s", "status_s", "marker_s", "plots_s", "server_s"):
        values = [r.get(key) for r in rows]
        out[key] = {"p50": percentile(values, 50), "p95": percentile(values, 95)}
    return out


def measure(app_dir: Path, args) -> dict:
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        log_path = Path(folder) / "app.log"
        process = start_app(app_dir, port, log_path, args.app_args)
        try:
            # The app prepares every example in the background at start (minutes on a loaded 2-core
            # box): clicks measured meanwhile would time that work, not a click. Wait for its log line.
            wait_for_log(log_path, "examples at start", process)
            cpu = {}
            per_image = run_browser(f"http://{HOST}:{port}/", args.examples, args.clicks, args.interval,
                                    args.settle, tag=app_dir.name + ".", latency_ms=args.latency,
                                    server_pid=process.pid, cpu=cpu)
            phases = server_phases(f"http://{HOST}:{port}/")
        finally:
            stop_app(process)
            if os.environ.get("M2N2_BENCH_DUMP"):
                Path(os.environ["M2N2_BENCH_DUMP"]).with_suffix(f".{app_dir.name}.app.log").write_text(log_path.read_text())
    rows = [row for image_rows in per_image.values() for row in image_rows]
    result = {"app": str(app_dir), "per_image": {name: summarise(r) for name, r in per_image.items()},
              "all": summarise(rows), "server_phases_ms": phases, "cpu_s_per_click": cpu, "rows": per_image}
    if args.render:
        result["render_s"] = render_times(app_dir, args.examples, args.resolution)
    return result


def show(result: dict) -> None:
    def fmt(v):
        return "   -  " if v is None else f"{v:6.3f}"
    print(f"\n== {result['app']}", flush=True)
    print(f"{'':12s} {'mask p50':>9s} {'p95':>7s} {'status p50':>11s} {'marker p50':>11s} {'plots p50':>10s} "
          f"{'server p50':>11s} missing")
    for name, s in [*result["per_image"].items(), ("all", result["all"])]:
        print(f"{name:12s} {fmt(s['mask_s']['p50']):>9s} {fmt(s['mask_s']['p95']):>7s} "
              f"{fmt(s['status_s']['p50']):>11s} {fmt(s['marker_s']['p50']):>11s} {fmt(s['plots_s']['p50']):>10s} "
              f"{fmt(s['server_s']['p50']):>11s} {s['missing']}")
    for name, used in (result.get("cpu_s_per_click") or {}).items():
        if used:
            print(f"CPU s per click, {name} (the clicks' span / clicks):", json.dumps(used))
    for name, phases in result.get("server_phases_ms", {}).items():
        print(f"server, {name} (median ms):", json.dumps(phases), flush=True)
    if "render_s" in result:
        print("render (median s per click, separate process):", json.dumps(result["render_s"]), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", nargs="+", default=["astronaut", "chelsea"])
    parser.add_argument("--clicks", type=int, default=20, choices=range(1, len(CLICKS) + 1), metavar="N",
                        help=f"clicks per image (1..{len(CLICKS)}, default 20)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between clicks (default 2)")
    parser.add_argument("--settle", type=float, default=15.0,
                        help="seconds to wait after an example is shown, before the first click (default 15: "
                             "the example's copy for the cache is prepared in the background meanwhile)")
    parser.add_argument("--resolution", type=int, default=64,
                        help="R for the in-process rendering times (the app's CPU default: 64)")
    parser.add_argument("--no-render", dest="render", action="store_false", help="skip the rendering times")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout (e.g. /work/base-d134f0f) measured first, in the same run")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="milliseconds Chromium adds to each request's answer (its network emulation), "
                             "as for a visitor across a network (default 0: the loopback)")
    parser.add_argument("--app-arg", dest="app_args", action="append", default=[],
                        help="an extra argument for app.py (repeatable), e.g. --app-arg=--resolution=32")
    args = parser.parse_args(argv)
    results = []
    for app_dir in ([args.baseline] if args.baseline else []) + [ROOT]:
        result = measure(Path(app_dir).resolve(), args)
        show(result)
        results.append(result)
    print(json.dumps([{k: v for k, v in r.items() if k != "rows"} for r in results]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
