"""Transformers engine throughput, quiet and beside CPU-bound processes, per thread setting.

Runs `stepscope models check MODEL --engine transformers` (4 samples of up to 32 tokens) in a
fresh process per measurement, so each OpenMP setting applies from the start, once with the
machine as it is ("quiet") and once with `--busy` processes that spin on the CPU beside it
("contended"). Prints a table and writes benchmarks/results/threads_contention.json.

The machine may be shared: "quiet" means "without our spinners", and the load average
recorded before and after each measurement says how quiet it was.

    .venv/bin/python benchmarks/threads_contention.py [--repeats 2] [--busy 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "threads_contention.json"
SPIN = "while True: pass"

# name -> environment for the checked process; STEPSCOPE_THREADS is read by the engine at load.
SETTINGS = {
    "threads=2 (torch default)": {"STEPSCOPE_THREADS": "2"},
    "threads=2 OMP_WAIT_POLICY=PASSIVE": {"STEPSCOPE_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
    "threads=1": {"STEPSCOPE_THREADS": "1"},
    "threads=1 OMP_WAIT_POLICY=PASSIVE": {"STEPSCOPE_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"},
}


def check(model: str, env: dict) -> float:
    """tokens/s that one `models check` reports."""
    command = [sys.executable, "-c", "from core.cli import main; main()", "models", "check", model, "--engine", "transformers"]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", **env}
    environment.pop("OMP_NUM_THREADS", None)
    done = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=900)
    found = re.search(r"throughput\s+([\d.]+) tokens/s", done.stdout)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"models check failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-2000:]}")
    return float(found.group(1))


def measure(model: str, env: dict, busy: int) -> dict:
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(busy)]
    try:
        time.sleep(1 if busy else 0)
        before = os.getloadavg()
        rate = check(model, env)
        after = os.getloadavg()
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    return {"tokens_per_s": rate, "load_average_before": [round(x, 2) for x in before],
            "load_average_after": [round(x, 2) for x in after]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--busy", type=int, default=2, help="CPU-bound processes beside the check")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names from SETTINGS")
    args = parser.parse_args()

    started = time.time()
    report = {
        "benchmark": "threads_contention", "model": args.model, "busy_processes": args.busy,
        "repeats": args.repeats, "command": f"stepscope models check {args.model} --engine transformers",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "settings": {},
    }  # fmt: skip
    names = [name.strip() for name in args.settings.split(",") if name.strip()]
    # Interleaved (every setting once, then again) so that a change in the machine's own load
    # during the run spreads over all settings instead of falling on one.
    runs: dict[str, dict[str, list]] = {name: {"quiet": [], "contended": []} for name in names}
    for repeat in range(args.repeats):
        for name in names:
            for condition, busy in (("quiet", 0), ("contended", args.busy)):
                result = measure(args.model, SETTINGS[name], busy)
                runs[name][condition].append(result)
                print(f"[{repeat + 1}/{args.repeats}] {name:36s} {condition:9s} {result['tokens_per_s']:6.1f} tokens/s"
                      f"  load {result['load_average_before'][0]:.1f}", flush=True)  # fmt: skip

    print(f"\n{'setting':36s} {'quiet':>8s} {'contended':>10s} {'ratio':>6s}  (median tokens/s)")
    for name in names:
        quiet = statistics.median(r["tokens_per_s"] for r in runs[name]["quiet"])
        contended = statistics.median(r["tokens_per_s"] for r in runs[name]["contended"])
        report["settings"][name] = {
            "env": SETTINGS[name], "quiet_median_tokens_per_s": quiet,
            "contended_median_tokens_per_s": contended, "contended_over_quiet": round(contended / quiet, 3),
            "runs": runs[name],
        }  # fmt: skip
        print(f"{name:36s} {quiet:8.1f} {contended:10.1f} {contended / quiet:6.2f}")
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["seconds"] = round(time.time() - started, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}; load average {report['load_average_at_start']} -> {report['load_average_at_end']}")


if __name__ == "__main__":
    main()
