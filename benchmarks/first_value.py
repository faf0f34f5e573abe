"""How long a cold server makes the first Estimate click wait for a value (issue 24, item 7).

Each run is a cold start: a fresh `streamlit run app.py` process on a free loopback port, on a
fresh default database (`stepscope.db` in a new temporary data folder, $STEPSCOPE_DB), with the
embedded default policy (SmolLM2-135M on transformers, CPU: no $STEPSCOPE_DEFAULT_POLICY), the
real user path. As soon as the server answers, a headless Chromium opens the app; it opens on
Explore's featured trajectory. Once the page is interactive, the benchmark waits the mode's
reading time (a user reads the page first) and clicks the first "Estimate values" button with
the form's defaults.

Figures, per run (each mode's median over --runs cold starts is its headline):

- `first_value_s`: page clock, from the click event's dispatch to the first animation frame that
  shows a Monte Carlo value on the page ("(k/N reach the answer)"; VALUE_CLOCK). The value
  arrives through the page's live fragment (it refreshes every second while a job runs), so up to
  that much of the figure is the page's polling, which a user sees too.
- `first_value_harness_s`: harness wall clock, from Playwright's click call to the harness seeing
  the value (includes Playwright's own work; for cross-checking the page clock).
- `server_start_to_interactive_s`: from starting the server process to the page being
  interactive (the "Estimate values" button shown and the first script run over).
- `server_start_to_worker_start_s`: from the server process's start to the job worker process's
  start (both by the kernel's process start times): how early the app starts its worker.
- `server_start_to_model_loaded_s`: from starting the server process to the job worker's status
  file saying the policy is loaded (core.views.worker.worker_status); null if it never said so
  before the value showed (a worker that does not preload).
- `model_loaded_at_click`: whether the worker had the policy loaded when the click was made.

The machine's load average (1, 5, 15 min) is recorded at the start and end of every run and of
the whole benchmark: on a small shared machine the figures depend on it more than on anything
else. The target (first_value_s <= 3.0) is for a quiet machine.

    python benchmarks/first_value.py                      # modes: click when interactive, and after 15 s
    python benchmarks/first_value.py --read-seconds 0 --runs 3
    python benchmarks/first_value.py --baseline-repo /tmp/before  # also runs another checkout (a git worktree)
    python benchmarks/first_value.py --read-seconds 60 --add-modes  # one more mode into the saved file

Writes benchmarks/results/first_value.json (--out to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from e2e_server import chromium, free_port, kill_streamlit  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
TARGET_FIRST_VALUE_S = 3.0
DEFAULT_READ_SECONDS = (0.0, 15.0)
BUTTON = "Estimate values"
VALUE_PATTERN = r"\(\d+/\d+ reach the answer\)"
START_TIMEOUT_S, PAGE_TIMEOUT_S, VALUE_TIMEOUT_S = 120, 180, 600

# Installed before the page's own scripts: the click's dispatch time, and the first animation
# frame after a Monte Carlo value appears in the page's text.
VALUE_CLOCK = """
window.__fvClickAt = null; window.__fvShownAt = null; window.__fvSeenBeforeClick = false;
document.addEventListener("click", (event) => {
    const button = event.target.closest && event.target.closest("button");
    if (window.__fvClickAt === null && button && button.innerText.trim() === "%(button)s") {
        window.__fvClickAt = performance.now();
    }
}, true);
new MutationObserver(() => {
    if (window.__fvShownAt !== null) return;
    if (!new RegExp(%(pattern)s).test(document.body ? document.body.textContent : "")) return;
    if (window.__fvClickAt === null) { window.__fvSeenBeforeClick = true; return; }
    window.__fvShownAt = -1;  // seen: the frame that draws it sets the time
    requestAnimationFrame(() => { window.__fvShownAt = performance.now(); });
}).observe(document, {subtree: true, childList: true, characterData: true});
""" % {"button": BUTTON, "pattern": json.dumps(VALUE_PATTERN)}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def commit_of(repo: Path) -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def worker_loaded(db: Path) -> dict | None:
    """What the job worker says it has loaded (a preloading worker's status file), or None."""
    from core.views.worker import worker_status

    status = worker_status(db)
    return status.get("loaded") if status else None


class LoadWatch(threading.Thread):
    """Notes when the job worker process started (its pid in the lock file, its start time) and
    when its status file first says a model is loaded, in seconds after the server started."""

    def __init__(self, db: Path, server: subprocess.Popen, started: float) -> None:
        super().__init__(daemon=True)
        self.db, self.server, self.started, self.stopped = db, server, started, threading.Event()
        self.worker_after = self.loaded_after = None

    def run(self) -> None:
        import psutil

        from core.jobs.worker_process import lock_path

        server_started = psutil.Process(self.server.pid).create_time()
        while not self.stopped.wait(0.1):
            if self.worker_after is None:
                try:
                    pid = int(lock_path(self.db).read_text().strip() or 0)
                    self.worker_after = round(psutil.Process(pid).create_time() - server_started, 3) if pid else None
                except (OSError, ValueError, psutil.Error):
                    pass
            if worker_loaded(self.db):
                self.loaded_after = time.monotonic() - self.started
                return


def start_server(repo: Path, db: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """`streamlit run app.py` as a user starts it (its own .streamlit/config.toml), on a free port."""
    port = free_port()
    env = {**os.environ, "STEPSCOPE_DB": str(db), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
           "STEPSCOPE_MODELS_DIR": os.environ.get("STEPSCOPE_MODELS_DIR", str(REPO / "models"))}  # fmt: skip
    env.pop("STEPSCOPE_DEFAULT_POLICY", None)  # the embedded default, as a user gets it
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true"],
            cwd=repo, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return process, f"http://127.0.0.1:{port}"


def cold_start(browser, repo: Path, read_seconds: float, folder: Path) -> dict:
    db = folder / "stepscope.db"
    load_start = load_average()
    started = time.monotonic()
    process, url = start_server(repo, db, folder / "server.log")
    watch = LoadWatch(db, process, started)
    watch.start()
    context = browser.new_context(viewport={"width": 1400, "height": 1400})
    try:
        while not healthy(url):
            if process.poll() is not None:
                raise RuntimeError(f"streamlit exited with {process.returncode}; see {folder / 'server.log'}")
            if time.monotonic() - started > START_TIMEOUT_S:
                raise RuntimeError(f"streamlit did not answer in {START_TIMEOUT_S} s")
            time.sleep(0.1)
        server_up = time.monotonic() - started
        page = context.new_page()
        page.add_init_script(VALUE_CLOCK)
        page.goto(url + "/")
        button = page.get_by_role("button", name=BUTTON).first
        button.wait_for(timeout=PAGE_TIMEOUT_S * 1000)
        page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']",
                               timeout=PAGE_TIMEOUT_S * 1000)  # fmt: skip
        interactive = time.monotonic() - started
        if read_seconds:
            time.sleep(read_seconds)
        loaded_at_click = worker_loaded(db)
        clicked = time.monotonic()
        button.click()
        page.wait_for_function("() => window.__fvShownAt !== null && window.__fvShownAt > 0",
                               timeout=VALUE_TIMEOUT_S * 1000, polling=50)  # fmt: skip
        harness = time.monotonic() - clicked
        clock = page.evaluate("() => [window.__fvClickAt, window.__fvShownAt, window.__fvSeenBeforeClick]")
        if clock[0] is None:
            raise RuntimeError("the click on the Estimate button was not seen by the page")
        if clock[2]:
            raise RuntimeError("a value was shown before the click: the database was not fresh")
        return {
            "read_seconds": read_seconds,
            "first_value_s": round((clock[1] - clock[0]) / 1000, 3),
            "first_value_harness_s": round(harness, 3),
            "server_up_s": round(server_up, 3),
            "server_start_to_interactive_s": round(interactive, 3),
            "server_start_to_worker_start_s": watch.worker_after,
            "server_start_to_model_loaded_s": None if watch.loaded_after is None else round(watch.loaded_after, 3),
            "model_loaded_at_click": bool(loaded_at_click),
            "loaded_at_click": loaded_at_click and {k: loaded_at_click.get(k) for k in ("engine", "model", "device")},
            "load_average_start": load_start,
            "load_average_end": load_average(),
        }
    finally:
        watch.stopped.set()
        context.close()
        kill_streamlit(process)


def mode_name(read_seconds: float) -> str:
    return "click_when_interactive" if not read_seconds else f"click_{read_seconds:g}s_after_interactive"


def summary(runs: list[dict]) -> dict:
    """Medians (and all values) of a mode's runs, each figure under its own name."""

    def figures(key: str) -> dict:
        values = [run[key] for run in runs if run[key] is not None]
        return {"median": round(statistics.median(values), 3) if values else None, "runs": [run[key] for run in runs]}

    return {
        "read_seconds": runs[0]["read_seconds"],
        "first_value_s": figures("first_value_s"),
        "first_value_harness_s": figures("first_value_harness_s"),
        "server_start_to_interactive_s": figures("server_start_to_interactive_s"),
        "server_start_to_worker_start_s": figures("server_start_to_worker_start_s"),
        "server_start_to_model_loaded_s": figures("server_start_to_model_loaded_s"),
        "model_loaded_at_click": [run["model_loaded_at_click"] for run in runs],
        "target_first_value_s": TARGET_FIRST_VALUE_S,
        "median_within_target": statistics.median(run["first_value_s"] for run in runs) <= TARGET_FIRST_VALUE_S,
    }


def measure(repo: Path, modes: list[float], runs: int, log_folder: Path | None) -> dict:
    results: dict = {}
    with chromium() as browser:
        for read_seconds in modes:
            name, done = mode_name(read_seconds), []
            for index in range(runs):
                with tempfile.TemporaryDirectory(prefix="first-value-") as tmp:
                    folder = Path(tmp) / "data"
                    folder.mkdir()
                    try:
                        run = cold_start(browser, repo, read_seconds, folder)
                    finally:
                        if log_folder:
                            log = folder / "server.log"
                            if log.exists():
                                (log_folder / f"first_value-{name}-{index + 1}.log").write_text(log.read_text())
                done.append(run)
                print(f"{repo.name} {name} #{index + 1}: first value {run['first_value_s']:.2f} s after the click "
                      f"(model loaded at click: {run['model_loaded_at_click']}); interactive "
                      f"{run['server_start_to_interactive_s']:.1f} s after server start; load {run['load_average_start']}",
                      flush=True)  # fmt: skip
            results[name] = {"summary": summary(done), "runs": done}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="cold starts per mode (the median is reported)")
    parser.add_argument("--read-seconds", type=float, action="append",
                        help="seconds between the page being interactive and the click; repeat for several "
                             f"modes (default: {', '.join(f'{s:g}' for s in DEFAULT_READ_SECONDS)})")  # fmt: skip
    parser.add_argument("--baseline-repo", type=Path,
                        help="another checkout (e.g. a git worktree of the commit before the warm start) to run "
                             "the same modes on, reported as `baseline`")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS / "first_value.json")
    parser.add_argument("--logs", type=Path, help="a folder to keep each run's server log in")
    parser.add_argument("--add-modes", action="store_true",
                        help="run only the given modes on this checkout and add them to the existing --out file "
                             "(each run keeps its own load average; the addition is dated)")  # fmt: skip
    args = parser.parse_args(argv)
    modes = args.read_seconds or list(DEFAULT_READ_SECONDS)
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
    load_start, date = load_average(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result = {
        "benchmark": "benchmarks/first_value.py",
        "date": date,
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},  # fmt: skip
        **commit_of(REPO),
        "model": "smollm2-135m (the embedded default), transformers engine, CPU",
        "method": ("cold start per run: fresh `streamlit run app.py` process, fresh default database in a new "
                   "temporary data folder, headless Chromium opens the app as soon as the server answers and clicks "
                   "the first 'Estimate values' button (form defaults) on the opening Explore trajectory; "
                   "first_value_s is the page clock from the click event to the first frame showing a Monte Carlo "
                   "value; medians over the runs of each mode"),  # fmt: skip
        "target": {"first_value_s": TARGET_FIRST_VALUE_S, "median_of_cold_starts": args.runs,
                   "machine": "quiet (load average well under the number of cores)"},  # fmt: skip
        "load_average_start": load_start,
    }
    if args.add_modes:
        earlier = json.loads(args.out.read_text())
        added = measure(REPO, modes, args.runs, args.logs)
        earlier["modes"].update(added)
        end = load_average()
        earlier.setdefault("modes_added", []).append({"modes": list(added), "date": date, **commit_of(REPO),
                                                      "load_average_start": load_start, "load_average_end": end})  # fmt: skip
        earlier["load_average_end"] = end
        earlier["quiet_machine"] = earlier["quiet_machine"] and max(load_start[0], end[0]) < 0.5 * (os.cpu_count() or 1)
        result = earlier
    else:
        result["modes"] = measure(REPO, modes, args.runs, args.logs)
    if args.baseline_repo and not args.add_modes:
        result["baseline"] = {"repo": str(args.baseline_repo), **commit_of(args.baseline_repo),
                              "modes": measure(args.baseline_repo, modes, args.runs, args.logs)}  # fmt: skip
    if not args.add_modes:
        result["load_average_end"] = load_average()
        result["quiet_machine"] = max(result["load_average_start"][0], result["load_average_end"][0]) < 0.5 * (os.cpu_count() or 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, mode in result["modes"].items():
        figures = mode["summary"]
        print(f"{name}: first_value_s median {figures['first_value_s']['median']} (target {TARGET_FIRST_VALUE_S}); "
              f"model loaded at click {figures['model_loaded_at_click']}")  # fmt: skip
    print(f"load average {result['load_average_start']} -> {result['load_average_end']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
