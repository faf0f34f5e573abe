"""SORM benchmark: a PRM trained on SmolLM2's own Monte Carlo labels, held-out step AUROC against
the MC hard labels, beside the probe PRM (core/probes.py) and the self-judge, with intervals.

Pipeline, every stage a StepScope job on one SQLite file: SmolLM2 samples k solutions per
sample-set problem (generate), Monte Carlo values for every step (estimate, fixed N), the
self-judge's step verdicts (judge --kind step), a probe PRM on hidden states with mc-hard
labels (train-verifier, cross-fitted by problem), and the SORM (train-prm, mc-hard, problems
split into train and held out), which then scores the held-out trajectories as a
token-classification PRM (prm-score). All three verifiers are compared on the SAME held-out
steps (those of the SORM's held-out problems with MC labels); intervals are a cluster
bootstrap over problems. Writes benchmarks/results/sorm.json (key `heldout_auroc` per
verifier) with the load average, timings and settings.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/sorm.py --problems 40 --k 4 --n 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.jobs.estimate import EstimateSpec, default_sampling  # noqa: E402
from core.jobs.generate import GenerateSpec  # noqa: E402
from core.jobs.judge import JudgeSpec  # noqa: E402
from core.jobs.prm_score import prm_score_spec  # noqa: E402
from core.jobs.runner import EngineCache, claim_job, queue, run_job  # noqa: E402
from core.jobs.train_prm import TrainPrmSpec  # noqa: E402
from core.jobs.train_verifier import TrainVerifierSpec  # noqa: E402
from core.metrics import auroc, bootstrap  # noqa: E402
from core.store import Store  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="smollm2-135m")
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--k", type=int, default=4, help="solutions per problem")
    parser.add_argument("--n", type=int, default=4, help="MC rollouts per step")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--heldout-fraction", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--db", type=Path, default=None, help="database (default: a temporary file; reuse to resume)")
    parser.add_argument("--out", type=Path, default=RESULTS / "sorm.json")
    return parser.parse_args(argv)


def run(store, cache, spec, timings, label):
    began = time.perf_counter()
    job_id = queue(store, spec)
    status = run_job(store, claim_job(store, job_id), cache, on_progress=lambda p: None)
    timings[label] = round(time.perf_counter() - began, 1)
    job = store.get_job(job_id)
    if status != "done":
        raise SystemExit(f"{label}: job {job_id} {status}: {job['error']}")
    print(f"{label}: done in {timings[label]} s", flush=True)
    return job


def main(argv=None) -> int:
    args = parse_args(argv)
    started, load_before = time.perf_counter(), os.getloadavg()
    db = args.db or Path(tempfile.mkdtemp(prefix="sorm-")) / "sorm.db"
    store = Store.open(db)
    cache, timings = EngineCache(), {}
    problems = [p["id"] for p in store.list_problems(dataset="sample")][: args.problems]
    sampling = default_sampling(max_new_tokens=args.max_new_tokens, seed=args.seed)
    options = {"device": "cpu"}
    run(store, cache, GenerateSpec(policy=args.policy, problem_ids=tuple(problems), k=args.k, sampling=sampling,
                                   engine_options=options), timings, "generate")  # fmt: skip
    ids = tuple(t["id"] for t in store.list_trajectories(source="policy", model=args.policy))
    run(store, cache, EstimateSpec(policy=args.policy, trajectory_ids=ids, n=args.n, sampling=sampling,
                                   engine_options=options), timings, "estimate")  # fmt: skip
    judge_job = run(store, cache, JudgeSpec(judge=args.policy, verdict="step", trajectory_ids=ids,
                                            engine_options=options), timings, "self-judge")  # fmt: skip
    probe_job = run(store, cache, TrainVerifierSpec(base=args.policy, labels="mc-hard", trajectory_ids=ids,
                                                    seed=args.seed, engine_options=options), timings, "probe PRM")  # fmt: skip
    output = Path(db).parent / "prms" / "sorm-mc-hard"
    train_job = run(store, cache, TrainPrmSpec(base=args.policy, labels="mc-hard", trajectory_ids=ids, output=str(output),
                                               epochs=args.epochs, heldout_fraction=args.heldout_fraction,
                                               seed=args.seed, engine_options=options), timings, "train-prm")  # fmt: skip
    split = train_job["manifest"]["split"]
    heldout_ids = tuple(split["heldout_trajectories"])
    score_job = run(store, cache, prm_score_spec(str(output), heldout_ids, engine_options=options), timings,
                    "prm-score (held out)")  # fmt: skip

    # The held-out steps: MC hard label of the policy's rollouts, and each verifier's score.
    verifiers = {
        "sorm (train-prm, mc-hard)": score_job["manifest"]["judge"],
        "probe PRM (mc-hard, cross-fitted)": probe_job["manifest"].get("judge") or _probe_judge(store, probe_job),
        "self-judge P(Yes)": judge_job["manifest"]["judge"],
    }
    rows = []  # (problem, step, hard label, {verifier: score})
    for trajectory_id in heldout_ids:
        trajectory = store.get_trajectory(trajectory_id)
        values = {v["step_id"]: v["hard"] for v in store.step_values(trajectory_id, model=args.policy) if v["n"]}
        scores = {name: {r["step_id"]: r["p_yes"] for r in store.prm_step_scores(trajectory_id, judge)[judge]}
                  for name, judge in verifiers.items()}  # fmt: skip
        for step_id, hard in values.items():
            rows.append((trajectory["problem_id"], step_id, bool(hard), {n: s.get(step_id) for n, s in scores.items()}))
    results = {}
    for name in verifiers:
        scored = [(g, y, s[name]) for g, _, y, s in rows if s[name] is not None]
        groups, labels, values = zip(*scored) if scored else ((), (), ())
        interval = bootstrap(lambda idx: auroc([labels[i] for i in idx], [values[i] for i in idx]), len(values),
                             groups=list(groups), n_resamples=args.resamples, seed=args.seed)  # fmt: skip
        results[name] = {**interval.as_dict(), "steps": len(values), "positives": int(sum(labels)),
                         "problems": len(set(groups)), "missing": sum(s[name] is None for _, _, _, s in rows)}  # fmt: skip
        print(f"{name}: held-out step AUROC {interval} over {len(values)} steps", flush=True)
    summary = {
        "benchmark": "sorm", "policy": args.policy, "settings": vars(args) | {"db": str(db), "out": str(args.out)},
        "heldout_auroc": results, "split": {"heldout_problems": split["heldout_problems"],
                                            "train_problems": split["train_problems"]},
        "train_prm_metrics": train_job["manifest"]["metrics"], "trajectories": len(ids),
        "timings_s": timings, "total_s": round(time.perf_counter() - started, 1),
        "load_average_before": load_before, "load_average_after": os.getloadavg(), "cpus": os.cpu_count(),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    print(f"wrote {args.out} in {summary['total_s']} s; load average {load_before} -> {summary['load_average_after']}")
    return 0


def _probe_judge(store, job) -> str:
    from core.probes import probe_judge_name

    return probe_judge_name("mc-hard", job["manifest"]["base"])


if __name__ == "__main__":
    sys.exit(main())
