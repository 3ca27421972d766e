"""Load test of the app on this machine (loopback only): simulated users clicking, hostile users beside them.

Starts ``python app.py`` on 127.0.0.1 (a free port), then, in one run:

1. ``--baseline``: one user alone (upload, clicks with think time): the single-user click latency;
2. N users at once (``--users``), each uploading a different image and making ``--clicks`` clicks
   with think time, beside ``--hostile-api`` users sending the largest request allowed (the most
   points, an image at the working size limit) again and again, and ``--hostile-settings`` users
   applying settings at the highest R allowed again and again (each one recomputes the attention);
3. ``--sessions M``: M sessions opened in turn (upload, two clicks; the tabs stay open), with the
   server's memory followed throughout.

Prints per-user p50 / p95 click latency and errors, what the hostile users got, and the server's
RSS (at start, after the baseline, peak, at the end); the last line is JSON. Everything is
bounded: users, clicks and sessions by their caps, the whole run by ``--time-limit`` (each
user stops when it passes, the server is stopped at the end, whatever happened).

Users drive the app's own events (the upload, the click with its pixel, the settings) through
``gradio_client``, as a browser would; those events are private (not in the API page), so the
script calls them by name with the click's event data.

    python benchmarks/load_test.py --baseline --users 8 --resolution 64
    python benchmarks/load_test.py --baseline --users 8 --hostile-api 1 --hostile-settings 1
    python benchmarks/load_test.py --sessions 40 --memory-budget 1GiB
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
HOST = "127.0.0.1"  # loopback only: this script never talks to another machine
FOREGROUND, BACKGROUND = 1, 0  # the labels the app's "Next click is" switch sends (m2n2.studio.ui.MODES)
CAPS = {"users": 32, "hostile": 8, "clicks": 50, "sessions": 200, "time_limit": 3600}


# ---------------------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` and its children (VmRSS), 0 once it is gone."""
    total = 0
    for proc in [pid, *children(pid)]:
        try:
            with open(f"/proc/{proc}/status") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


class Server:
    """``python app.py`` on the loopback, its memory sampled every 0.2 s until it is stopped."""

    def __init__(self, args, log_path: str):
        self.port = free_port()
        command = [sys.executable, str(ROOT / "app.py"), "--backbone", args.backbone, "--resolution",
                   str(args.resolution), "--server-name", HOST, "--port", str(self.port)]
        if args.memory_budget:
            command += ["--memory-budget", args.memory_budget]
        if args.max_resolution:
            command += ["--max-resolution", str(args.max_resolution)]
        command += args.app_arg
        self.command = command
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)}
        if args.server_threads:
            env["OMP_NUM_THREADS"] = str(args.server_threads)
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://{HOST}:{self.port}/"
        self.peak = 0
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self):
        while not self._stop.is_set() and self.process.poll() is None:
            rss = rss_bytes(self.process.pid)
            self.peak = max(self.peak, rss)
            self.samples.append((time.monotonic(), rss))
            self._stop.wait(0.2)

    @property
    def rss(self) -> int:
        return rss_bytes(self.process.pid)

    def peak_since(self, start: float) -> int:
        return max((rss for t, rss in self.samples if t >= start), default=0)

    def wait_ready(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.process.returncode}; see {self.log.name}")
            try:
                urllib.request.urlopen(self.url, timeout=2).read(1)
                return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"the server did not answer within {timeout:.0f} s; see {self.log.name}")

    def stop(self) -> None:
        self._stop.set()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()


# ---------------------------------------------------------------------------------------------- images
def user_image(seed: int, height: int, width: int, folder: str) -> tuple[str, np.ndarray]:
    """A different picture per user: an ellipse on a textured background; (path, object mask)."""
    rng = np.random.default_rng(seed)
    # Moderate contrast, as in photos: a stark one leaves cells the random walk never crosses, and
    # every click would cost the full 1000 Markov steps (tests/synthetic.py's square does the same).
    background = rng.integers(55, 75, 3)
    image = (rng.random((height, width, 3)) * 30 + background).clip(0, 255)
    rows, cols = np.mgrid[:height, :width]
    cy, cx = rng.uniform(0.35, 0.65) * height, rng.uniform(0.35, 0.65) * width
    ry, rx = rng.uniform(0.15, 0.3) * height, rng.uniform(0.15, 0.3) * width
    mask = ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1
    image[mask] = background + rng.integers(35, 60, 3) * rng.choice([-1, 1], 3).clip(0, 1) + 15
    path = os.path.join(folder, f"user-{seed}.png")
    Image.fromarray(image.astype(np.uint8)).save(path)
    return path, mask


def click_positions(mask: np.ndarray, count: int, seed: int) -> list[tuple[int, int, str]]:
    """``count`` clicks: the first inside the object, then alternating background and object pixels."""
    rng = np.random.default_rng(seed)
    inside, outside = np.argwhere(mask), np.argwhere(~mask)
    clicks = []
    for k in range(count):
        pool, mode = (inside, FOREGROUND) if k % 2 == 0 else (outside, BACKGROUND)
        row, col = pool[rng.integers(len(pool))]
        clicks.append((int(col), int(row), mode))
    return clicks


# ---------------------------------------------------------------------------------------------- users
class App:
    """The app's events for one simulated visitor (one gradio_client session = one browser tab)."""

    def __init__(self, url: str):
        from gradio_client import Client
        self.client = Client(url, verbose=False, download_files=False)
        config = self.client.config
        self.index = {d.get("api_name"): d.get("id", i) for i, d in enumerate(config["dependencies"])}
        examples = [c for c in config["components"] if c.get("props", {}).get("elem_id") == "examples"]
        self.example_count = len(examples[0]["props"].get("samples") or []) if examples else 0
        # Where the status line is among each event's outputs (the events output more after it).
        status = [c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "status"]
        self.status_at = {d.get("api_name"): d["outputs"].index(status[0])
                          for d in config["dependencies"] if status and status[0] in d["outputs"]}

    def call(self, name: str, *data, event_data=None):
        """Run the app's event ``name`` with ``data`` (state inputs as None) like the browser does."""
        endpoint = self.client.endpoints[self.index[name]]
        data = endpoint.process_input_files(*data)                   # uploads files, as the browser does
        predict = endpoint.make_predict(self.client.new_helper(endpoint.fn_index))
        outputs = predict(*data, event_data=event_data)
        at = self.status_at.get(name)
        return Outputs(outputs, outputs[at] if at is not None and len(outputs) > at else None)

    def upload(self, path: str):
        from gradio_client import handle_file
        return self.call("set_image", handle_file(path), None)

    def example(self, index: int):
        return self.call("load_example", index, None)

    def click(self, x: int, y: int, mode: int):
        return self.call("click_only", None, mode, event_data={"index": [x, y], "value": None})

    def close(self):
        self.client.close()


@dataclass
class Outputs:
    """An event's outputs and, among them, the status line's value."""

    values: object
    status: object = None


def status_of(outputs: Outputs) -> str:
    """The status line among an event's outputs."""
    status = outputs.status
    if isinstance(status, dict):
        status = status.get("value")
    return status if isinstance(status, str) else ""


@dataclass
class UserResult:
    name: str
    upload_s: float | None = None
    clicks: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def first_mask_s(self) -> float | None:
        """Upload, then the first click's mask (the think time between them left out)."""
        return None if self.upload_s is None or not self.clicks else self.upload_s + self.clicks[0]

    def summary(self) -> dict:
        return {"user": self.name, "upload_s": None if self.upload_s is None else round(self.upload_s, 2),
                "first_mask_s": None if self.first_mask_s is None else round(self.first_mask_s, 2),
                "clicks": len(self.clicks), "errors": len(self.errors),
                "p50_s": round(percentile(self.clicks, 50), 3) if self.clicks else None,
                "p95_s": round(percentile(self.clicks, 95), 3) if self.clicks else None,
                "clicks_s": [round(seconds, 3) for seconds in self.clicks]}


def percentile(values, q) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else float("nan")


def run_user(url: str, name: str, image: str, mask: np.ndarray, clicks: int, think: tuple[float, float],
             seed: int, deadline: float, result: UserResult, close: bool = True):
    """Upload, then ``clicks`` clicks with think time; a click counts as an error unless the status
    line shows it applied (a refusal changes only the state). Returns the open app unless ``close``."""
    rng = np.random.default_rng(seed)
    app = None
    step = "connecting"  # named in an error, so that a failure says which request it was
    try:
        app = App(url)
        step = "upload"
        start = time.perf_counter()
        outputs = app.upload(image)
        result.upload_s = time.perf_counter() - start
        if "image" not in status_of(outputs):
            result.errors.append(f"upload not applied: {status_of(outputs)!r}")
            return
        for k, (x, y, mode) in enumerate(click_positions(mask, clicks, seed)):
            if time.monotonic() > deadline:
                result.errors.append("time limit reached")
                return
            time.sleep(rng.uniform(*think))
            start = time.perf_counter()
            try:
                outputs = app.click(x, y, mode)
            except Exception as error:  # noqa: BLE001 - every failure is counted and reported
                result.errors.append(f"click {k + 1}: {type(error).__name__}: {error}")
                continue
            seconds = time.perf_counter() - start
            if f"{k + 1} click" not in status_of(outputs):
                result.errors.append(f"click {k + 1} not applied: {status_of(outputs)!r}")
                continue
            result.clicks.append(seconds)
    except Exception as error:  # noqa: BLE001
        result.errors.append(f"{step}: {type(error).__name__}: {error}")
    finally:
        if app is not None and close:
            app.close()
    return None if close else app


def repeat_timed(request, stop: threading.Event, deadline: float, result: UserResult) -> None:
    """Call ``request()`` again and again until ``stop`` or ``deadline``, its seconds in
    ``result.clicks``; it returns an error message (or raises) when it was not applied. Gives up
    after 20 errors."""
    while not stop.is_set() and time.monotonic() < deadline:
        start = time.perf_counter()
        try:
            error = request()
        except Exception as raised:  # noqa: BLE001
            error = f"{type(raised).__name__}: {str(raised)[:120]}"
        if error:
            result.errors.append(error)
            if len(result.errors) > 20:
                return
        else:
            result.clicks.append(time.perf_counter() - start)              # here: seconds per request


def run_hostile_api(url: str, name: str, image: str, points: int, stop: threading.Event, deadline: float,
                    result: UserResult) -> None:
    """The largest stateless request allowed, again and again until the others are done."""
    from gradio_client import Client, handle_file
    client = Client(url, verbose=False, download_files=False)
    rng = np.random.default_rng(7)
    with Image.open(image) as im:
        width, height = im.size
    payload = json.dumps([[int(rng.integers(width)), int(rng.integers(height)), int(k % 2 == 0)]
                          for k in range(points)])
    try:
        def segment():  # a refusal raises (gradio_client's AppError)
            client.predict(handle_file(image), payload, api_name="/segment")

        repeat_timed(segment, stop, deadline, result)
    finally:
        client.close()


def run_hostile_settings(url: str, name: str, image: str, resolution: int, stop: threading.Event,
                         deadline: float, result: UserResult) -> None:
    """A new image at the highest R allowed, then settings applied again and again (the temperature
    alternates, so each one recomputes the attention and the operator)."""
    app = App(url)
    try:
        # With a click, each Apply recomputes the attention and the Markov-map (without, it only saves).
        if "image" not in status_of(app.upload(image)) or "1 click" not in status_of(app.click(5, 5, BACKGROUND)):
            result.errors.append("could not load an image and click on it")
            return
        applied = []

        def apply():  # the temperature alternates, so each Apply recomputes the attention
            outputs = app.call("apply_settings", None, 0.65 if len(applied) % 2 else 0.7, 0.3, True, resolution)
            applied.append(1)
            if f"R = {resolution}" not in status_of(outputs) or "settings" not in status_of(outputs):
                return f"settings not applied: {status_of(outputs)[:120]!r}"
            return None

        repeat_timed(apply, stop, deadline, result)
    finally:
        app.close()


# ---------------------------------------------------------------------------------------------- phases
def first_masks(users: list[UserResult]) -> dict:
    """p50 / p95 of upload -> first mask over the users."""
    values = [u.first_mask_s for u in users if u.first_mask_s is not None]
    return {"count": len(values), "p50_s": round(percentile(values, 50), 2), "p95_s": round(percentile(values, 95), 2)}


def examples_prepared(server: Server, timeout: float = 600) -> str | None:
    """Wait for the server's log line that the examples prepared at start are ready (before the
    users come, so that this start-up work is not in their times); returns it (the start-up
    cost), or None when the app was started without it."""
    end = time.monotonic() + timeout
    while "--no-prepare-examples" not in server.command and time.monotonic() < end:
        line = next((x for x in open(server.log.name).read().splitlines() if "examples at start" in x), None)
        if line:
            return line.split(": ", 1)[-1]
        time.sleep(0.5)
    return None


def phase_examples(server: Server, choices: int) -> dict:
    """One user choosing the examples in turn (each one several times): seconds until clickable
    (the choice's event returned; a click then applies)."""
    app = App(server.url)
    seconds, clicks, errors = [], [], []
    try:
        for k in range(choices):
            start = time.perf_counter()
            outputs = app.example(k % app.example_count)
            if "image" not in status_of(outputs):
                errors.append(f"choice {k + 1} not applied: {status_of(outputs)!r}")
                continue
            seconds.append(time.perf_counter() - start)
            start = time.perf_counter()
            clicked = app.click(5, 5, BACKGROUND)                        # clickable: a click applies
            clicks.append(time.perf_counter() - start)
            if "1 click" not in status_of(clicked):
                errors.append(f"click after choice {k + 1} not applied: {status_of(clicked)!r}")
    finally:
        app.close()
    report = {"choices": len(seconds), "errors": errors, "seconds": [round(x, 3) for x in seconds],
              "p50_s": round(percentile(seconds, 50), 3), "p95_s": round(percentile(seconds, 95), 3),
              "first_click_p50_s": round(percentile(clicks, 50), 3)}
    return report


def phase_users(server: Server, args, folder: str, count: int, first_seed: int, deadline: float,
                hostile_api: int = 0, hostile_settings: int = 0) -> tuple[list[UserResult], list[UserResult]]:
    users = [UserResult(f"user-{first_seed + i}") for i in range(count)]
    threads = []
    for i, result in enumerate(users):
        path, mask = user_image(first_seed + i, args.height, args.width, folder)
        threads.append(threading.Thread(target=run_user, args=(
            server.url, result.name, path, mask, args.clicks, tuple(args.think), first_seed + i, deadline, result)))
    stop = threading.Event()
    hostile, hostile_threads = [], []
    big, _ = user_image(10_000, args.max_side, args.max_side, folder)
    for i in range(hostile_api):
        result = UserResult(f"hostile-api-{i}")
        hostile.append(result)
        hostile_threads.append(threading.Thread(target=run_hostile_api, args=(
            server.url, result.name, big, args.max_points, stop, deadline, result)))
    for i in range(hostile_settings):
        result = UserResult(f"hostile-R{args.hostile_resolution}-{i}")
        hostile.append(result)
        hostile_threads.append(threading.Thread(target=run_hostile_settings, args=(
            server.url, result.name, big, args.hostile_resolution, stop, deadline, result)))
    for t in hostile_threads:
        t.start()
    if hostile_threads:
        time.sleep(args.hostile_head_start)  # let the heavy work be running when the users arrive
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 30)
    stop.set()
    for t in hostile_threads:
        t.join(max(0.0, deadline - time.monotonic()) + 120)
    return users, hostile


def phase_sessions(server: Server, args, folder: str, deadline: float) -> dict:
    """Sessions opened in turn, each kept open (its tab not closed); the server's RSS after each.

    First one warm-up session, its image removed again (the image's x button) and its tab closed:
    the process's baseline is its RSS after that (with what a first image and click load:
    numba's machine code, FBGEMM, matplotlib...).
    """
    warm = UserResult("warm-up")
    app = run_user(server.url, warm.name, *user_image(19_999, args.height, args.width, folder), 2, (0.0, 0.0),
                   19_999, deadline, warm, close=False)
    if app is not None:
        app.call("clear", None)                                         # its x button: the image is freed
        app.close()
    time.sleep(2.0)
    warm_rss = server.rss
    rss_after, errors, apps = [], len(warm.errors), []
    for i in range(args.sessions):
        if time.monotonic() > deadline:
            break
        path, mask = user_image(20_000 + i, args.height, args.width, folder)
        result = UserResult(f"session-{i}")
        apps.append(run_user(server.url, result.name, path, mask, 2, (0.0, 0.0), 20_000 + i, deadline, result,
                             close=False))                              # the tab stays open
        errors += len(result.errors)
        rss_after.append(server.rss)
    for app in apps:
        if app is not None:
            app.close()
    return {"sessions": len(rss_after), "errors": errors, "rss_warm_mib": round(warm_rss / 2**20),
            "rss_after_each_mib": [round(r / 2**20) for r in rss_after]}


def print_table(title: str, results: list[UserResult], unit: str = "click") -> None:
    print(f"\n{title}")
    print(f"  {'user':<18} {'upload s':>9} {unit + 's':>7} {'errors':>6} {'p50 s':>7} {'p95 s':>7}")
    for r in results:
        s = r.summary()
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"  {r.name:<18} {fmt(s['upload_s']):>9} {s['clicks']:>7} {s['errors']:>6} {fmt(s['p50_s']):>7} "
              f"{fmt(s['p95_s']):>7}   first mask {fmt(s['first_mask_s'])} s")
        for error in r.errors[:3]:
            print(f"      error: {error[:160]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8, help="simulated users at once (default 8)")
    parser.add_argument("--clicks", type=int, default=10, help="clicks per user (default 10)")
    parser.add_argument("--think", type=float, nargs=2, default=(2.0, 5.0), metavar=("MIN", "MAX"),
                        help="think time before each click, uniform in seconds (default 2 5)")
    parser.add_argument("--baseline", action="store_true", help="first, one user alone on the same server")
    parser.add_argument("--hostile-api", type=int, default=0, help="users sending the largest /segment request")
    parser.add_argument("--hostile-settings", type=int, default=0,
                        help="users recomputing the attention at the highest R again and again")
    parser.add_argument("--hostile-head-start", type=float, default=5.0, help="seconds the hostile users start early")
    parser.add_argument("--example-choices", type=int, default=0,
                        help="then, one user choosing the examples in turn this many times (clickable after)")
    parser.add_argument("--sessions", type=int, default=0, help="then, this many sessions opened in turn")
    parser.add_argument("--resolution", type=int, default=64, help="R of the app (default 64)")
    parser.add_argument("--max-resolution", type=int, default=None, help="the app's --max-resolution")
    parser.add_argument("--hostile-resolution", type=int, default=None,
                        help="R of the settings users (default: the highest the app allows)")
    parser.add_argument("--memory-budget", default=None, help="the app's --memory-budget (default: its own)")
    parser.add_argument("--backbone", default="color", help="the app's --backbone (default color)")
    parser.add_argument("--height", type=int, default=360, help="users' image height (default 360)")
    parser.add_argument("--width", type=int, default=480, help="users' image width (default 480)")
    parser.add_argument("--app-arg", action="append", default=[],
                        help="one more argument for app.py (repeat it), e.g. --app-arg=--switch-interval=0.005")
    parser.add_argument("--max-side", type=int, default=1024, help="side of the hostile users' image (default 1024)")
    parser.add_argument("--max-points", type=int, default=None, help="points per hostile request (default: the limit)")
    parser.add_argument("--server-threads", type=int, default=None, help="OMP_NUM_THREADS of the server")
    parser.add_argument("--time-limit", type=float, default=900, help="the whole run stops after this (s)")
    parser.add_argument("--log", default=None, help="server log file (default: a temporary file)")
    args = parser.parse_args(argv)

    from m2n2.config import MAX_CLICKS
    from m2n2.studio import limits
    args.max_points = args.max_points or MAX_CLICKS
    highest = max(args.max_resolution or limits.default_max_resolution(), args.resolution)
    args.hostile_resolution = args.hostile_resolution or highest
    for name, cap in (("users", "users"), ("clicks", "clicks"), ("sessions", "sessions"),
                      ("hostile_api", "hostile"), ("hostile_settings", "hostile"), ("time_limit", "time_limit")):
        if not 0 <= getattr(args, name) <= CAPS[cap]:
            parser.error(f"--{name.replace('_', '-')} must lie in [0, {CAPS[cap]}]")

    folder = tempfile.mkdtemp(prefix="m2n2-load-")
    log_path = args.log or os.path.join(folder, "server.log")
    deadline = time.monotonic() + args.time_limit
    server = Server(args, log_path)
    report: dict = {"args": {k: v for k, v in vars(args).items()}, "server_log": log_path}
    try:
        server.wait_ready(120)
        report["rss_ready_mib"] = round(server.rss / 2**20)
        report["examples_prepared_at_start"] = examples_prepared(server)
        report["rss_examples_prepared_mib"] = round(server.rss / 2**20)
        print(f"server {server.url} ready, RSS {report['rss_ready_mib']} MiB (log: {log_path})")
        if args.baseline:
            (alone,), _ = phase_users(server, args, folder, 1, 0, deadline)
            print_table("single user, alone", [alone])
            report["baseline"] = alone.summary()
            report["first_mask_single_user"] = first_masks([alone])
            report["rss_after_baseline_mib"] = round(server.rss / 2**20)
        if args.users:
            start = time.monotonic()
            users, hostile = phase_users(server, args, folder, args.users, 100, deadline,
                                         args.hostile_api, args.hostile_settings)
            print_table(f"{args.users} users at once, beside {len(hostile)} hostile users", users)
            if hostile:
                print_table("hostile users (per request / per Apply)", hostile, unit="call")
            every = [s for u in users for s in u.clicks]
            report["users"] = [u.summary() for u in users]
            report["hostile"] = [h.summary() for h in hostile]
            report["first_mask"] = first_masks(users)
            print(f"  upload -> first mask: p50 {report['first_mask']['p50_s']} s, p95 {report['first_mask']['p95_s']} s")
            report["all_clicks"] = {"count": len(every), "errors": sum(len(u.errors) for u in users),
                                    "p50_s": round(percentile(every, 50), 3), "p95_s": round(percentile(every, 95), 3),
                                    "worst_user_p95_s": max((u.summary()["p95_s"] or 0) for u in users)}
            report["peak_rss_users_mib"] = round(server.peak_since(start) / 2**20)
            line = report["all_clicks"]
            print(f"\n  all clicks: {line['count']}, errors {line['errors']}, p50 {line['p50_s']:.2f} s, "
                  f"p95 {line['p95_s']:.2f} s (worst user's p95 {line['worst_user_p95_s']:.2f} s)")
            if args.baseline and report["baseline"]["p95_s"]:
                ratio = line["p95_s"] / report["baseline"]["p95_s"]
                report["p95_over_single_user_p95"] = round(ratio, 2)
                print(f"  p95 / single-user p95 = {ratio:.2f}")
        if args.example_choices:
            report["examples"] = e = phase_examples(server, args.example_choices)
            print(f"\nexamples: {e['choices']} choices, errors {len(e['errors'])}, clickable after p50 {e['p50_s']} s, "
                  f"p95 {e['p95_s']} s; start-up: {report['examples_prepared_at_start']}")
        if args.sessions:
            before = server.rss
            start = time.monotonic()
            sessions = phase_sessions(server, args, folder, deadline)
            sessions["rss_before_mib"] = round(before / 2**20)
            sessions["peak_rss_mib"] = round(server.peak_since(start) / 2**20)
            report["sessions"] = sessions
            print(f"\n{sessions['sessions']} sessions in turn: errors {sessions['errors']}, RSS before "
                  f"{sessions['rss_before_mib']} MiB, warm (after one session, closed) {sessions['rss_warm_mib']} "
                  f"MiB, peak {sessions['peak_rss_mib']} MiB, after each: {sessions['rss_after_each_mib']}")
            if args.memory_budget:
                from m2n2.studio.limits import parse_bytes
                budget = round(parse_bytes(args.memory_budget) / 2**20)
                sessions["peak_over_warm_mib"] = sessions["peak_rss_mib"] - sessions["rss_warm_mib"]
                print(f"  peak - warm baseline = {sessions['peak_over_warm_mib']} MiB against a budget of "
                      f"{budget} MiB")
        report["peak_rss_mib"] = round(server.peak / 2**20)
        report["rss_end_mib"] = round(server.rss / 2**20)
        print(f"\nserver RSS: ready {report['rss_ready_mib']} MiB, peak {report['peak_rss_mib']} MiB, "
              f"end {report['rss_end_mib']} MiB")
    finally:
        server.stop()
    with open(log_path) as f:
        log = f.read()
    report["server_tracebacks"] = log.count("Traceback")
    report["server_user_error_lines"] = log.count("user error in")
    report["server_evictions"] = log.count("set aside the prepared image")
    print(f"server log: {report['server_tracebacks']} tracebacks, {report['server_user_error_lines']} user-error "
          f"lines, {report['server_evictions']} images set aside for the budget")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
