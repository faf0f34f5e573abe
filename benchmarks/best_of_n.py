"""Same policy, better judge: pass@k, majority vote and verifier-reranked best-of-k.

For each problem the policy samples k solutions (all k kept, duplicates included: a repeated
answer is a vote). Every verifier scores every solution:

- LLM judges (`--judge`, default: the policy itself = self-reward): the outcome verdict
  P(Yes) / (P(Yes) + P(No)) from next-token log-probabilities (core/verdicts.py), with the
  probability mass on the yes/no tokens reported beside it;
- probe ORMs (`--probe-base`, default: the policy's own base model): logistic regression on the
  base model's last-token hidden state, labelled by final-answer correctness, cross-fitted with
  folds grouped by problem, so no solution is scored by a probe that saw it, nor any solution of
  its problem (core/probes.py).

Reported, for k = 1..K, as means over problems with 95% percentile-bootstrap intervals over
problems (1,000 resamples): pass@k (the Codex unbiased estimator; the oracle verifier),
maj@k (majority vote over final answers), best-of-k by each verifier, all as exact expectations
over random k-subsets of the K samples (core/metrics.py). Also each verifier's AUROC against
correctness over all solutions, and within problem (only pairs of one problem's right and wrong
solutions count: what reranking needs), with cluster-bootstrap intervals over problems.

Outputs under benchmarks/results/: best_of_n.json (everything, with the configuration and
timings), best_of_n.csv (the curves), best_of_n.html and best_of_n.png (the Altair chart; the
PNG needs vl-convert-python).

CPU run (the embedded SmolLM2-135M as policy, self-judge and probe base; about 10-15 min on
2 cores):

    python benchmarks/best_of_n.py                # 40 one-step sample problems, k=8, 64 tokens

GPU recipe: judges of several sizes on one policy. Import problems, then run the script once
with several judges and probe bases; models are loaded one at a time (the policy, then each
judge, then each probe base), and every sample and verdict lands in the --db file, so the run
can be browsed in the app afterwards:

    stepscope import PATH/TO/gsm8k/test.jsonl --format gsm8k --dataset gsm8k-test --db data/bon.db
    python benchmarks/best_of_n.py --db data/bon.db --dataset gsm8k-test --problems 500 \\
        --policy qwen2.5-math-1.5b --engine vllm --k 16 --max-new-tokens 512 \\
        --judge qwen2.5-math-1.5b --judge Qwen/Qwen2.5-1.5B-Instruct \\
        --judge Qwen/Qwen2.5-7B-Instruct --judge Qwen/Qwen2.5-32B-Instruct-AWQ \\
        --probe-base Qwen/Qwen2.5-0.5B --probe-base Qwen/Qwen2.5-1.5B --probe-base Qwen/Qwen2.5-7B \\
        --tag gpu-qwen

- LLM judges run on --judge-engine (default: --engine); with vLLM their log-probabilities come
  from the top 20 next tokens, so a P(Yes) is undefined when neither answer is among them
  (counted in the JSON as `undefined`, and ranked lowest).
- Probes read hidden states, which only the transformers engine gives: they always run there
  (on the GPU when there is one; a 7B base in bf16 needs about 16 GB).
- --tag names the outputs best_of_n-<tag>.* so a GPU run does not overwrite the CPU figures.
- The policy prompt is the few-shot completion template (core/prompts/policy_fewshot.txt);
  for GSM8K use --max-new-tokens 256 or more.

The verifiers' quality is the finding, whichever way it goes: a 135M self-judge is expected
to be near chance, and the probe on its own hidden states is the contrast.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.engines import SamplingParams  # noqa: E402
from core.grading import grade  # noqa: E402
from core.jobs.judge import JudgeSpec  # noqa: E402
from core.jobs.runner import EngineCache, claim_job, queue, run_job  # noqa: E402
from core.metrics import (  # noqa: E402
    Interval,
    auroc,
    best_of_k,
    bootstrap,
    majority_vote,
    mean_interval,
    pass_at_k,
    within_group_auroc_interval,
)
from core.policy import POLICY_STOP, load_template  # noqa: E402
from core.probes import train_probe  # noqa: E402
from core.store import Store  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="smollm2-135m")
    parser.add_argument("--judge", action="append", help="LLM judge model (repeatable; default: the policy)")
    parser.add_argument("--probe-base", action="append", help="probe ORM base model (repeatable; default: the policy)")
    parser.add_argument("--no-probe", action="store_true", help="skip probe verifiers")
    parser.add_argument("--engine", default="transformers", help="policy engine: transformers | vllm")
    parser.add_argument("--judge-engine", default=None, help="LLM judge engine (default: --engine)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dataset", default="sample")
    parser.add_argument("--all-steps", action="store_true", help="sample set: also the two-step problems")
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--problems-per-call", type=int, default=4)
    parser.add_argument("--layer", type=int, default=-1, help="probe: hidden layer")
    parser.add_argument("--probe-context", default="question", help="probe: question | policy-prompt")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is much faster on a CPU shared with other jobs)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--db", type=Path, default=None, help="database (default: a temporary file)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default="", help="outputs are named best_of_n[-TAG].*")
    parser.add_argument("--replot", type=Path, default=None, help="redraw chart and CSV from a results JSON")
    return parser.parse_args(argv)


def engine_options(engine: str, device: str) -> dict:
    return {"device": device} if engine == "transformers" else {}


def select_problems(store: Store, args) -> list[dict]:
    problems = store.list_problems(dataset=args.dataset)
    if args.dataset == "sample" and not args.all_steps:
        problems = [p for p in problems if p["meta"].get("steps") == 1]
    problems = [p for p in problems if p.get("gold")][: args.problems]
    if not problems:
        raise SystemExit(f"dataset {args.dataset!r} has no problems with a gold answer in {store.path}")
    return problems


def sample_solutions(store: Store, engine, problems: list[dict], args) -> list[dict]:
    """k samples per problem, every one kept in order; identical texts share a trajectory."""
    template = load_template()
    sampling = SamplingParams(n=args.k, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                              top_p=1.0, stop=POLICY_STOP, seed=args.seed)  # fmt: skip
    samples = []
    size = args.problems_per_call
    for call, start in enumerate(range(0, len(problems), size)):
        chunk = problems[start : start + size]
        prompts = [template.render(p["question"]) for p in chunk]
        results = engine.generate(prompts, replace(sampling, seed=args.seed + call))
        for problem, prompt, outs in zip(chunk, prompts, results):
            for index, sample in enumerate(outs):
                graded = grade(sample.text, problem["gold"])
                trajectory_id = None
                if sample.text.strip():  # an empty solution has no steps to store; it is wrong
                    trajectory_id = store.add_trajectory(
                        problem["id"], sample.text, source="policy", rule="line", model=args.policy,
                        policy_prompt=prompt, final_answer=graded.answer, correct=graded.correct,
                        meta={"benchmark": "best_of_n", "sample": index, "finish_reason": sample.finish_reason,
                              "num_tokens": sample.num_tokens, "template": template.name},
                    )  # fmt: skip
                samples.append({"problem_id": problem["id"], "sample": index, "trajectory_id": trajectory_id,
                                "answer": graded.answer if sample.text.strip() else None,
                                "correct": bool(graded.correct and sample.text.strip()),
                                "tokens": sample.num_tokens})  # fmt: skip
        print(f"  sampled {min(start + size, len(problems))}/{len(problems)} problems", flush=True)
    return samples


def verdict_scores(store: Store, trajectory_ids: list[int], judge: str, kind: str = "outcome") -> dict[int, dict]:
    """The latest verdict of `judge` per trajectory: {id: {"p_yes", "mass"}}."""
    found = {}
    for trajectory_id in trajectory_ids:
        rows = store.verdicts(trajectory_id, judge=judge, kind=kind)
        if rows:
            found[trajectory_id] = {"p_yes": rows[-1]["p_yes"], "mass": rows[-1]["mass"]}
    return found


def curves(samples: list[dict], verifiers: dict[str, list[float]], K: int, args) -> tuple[list[dict], list[dict]]:
    """Per k and method: the mean over problems with a bootstrap interval over problems, and the
    paired gain over a random pick (per-problem difference, resampled together)."""
    by_problem: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        by_problem.setdefault(s["problem_id"], []).append(i)
    groups = list(by_problem.values())
    correct = np.array([s["correct"] for s in samples])
    answers = [s["answer"] for s in samples]
    random_pick = np.array([pass_at_k(len(g), int(correct[g].sum()), 1) for g in groups])
    rows, gains = [], []
    for k in range(1, K + 1):
        per_method = {
            "pass@k (oracle verifier)": [pass_at_k(len(g), int(correct[g].sum()), k) for g in groups],
            "majority vote": [majority_vote([answers[i] for i in g], correct[g].tolist(), k) for g in groups],
            "random pick (= pass@1)": random_pick.tolist(),
        }
        for name, scores in verifiers.items():
            s = np.asarray(scores)
            per_method[f"best-of-k: {name}"] = [best_of_k(s[g], correct[g], k) for g in groups]
        for method, values in per_method.items():
            interval = mean_interval(values, n_resamples=args.resamples, seed=args.seed)
            rows.append({"k": k, "method": method, "value": interval.value, "low": interval.low, "high": interval.high})
            if method != "random pick (= pass@1)":
                gain = mean_interval(np.asarray(values) - random_pick, n_resamples=args.resamples, seed=args.seed)
                gains.append({"k": k, "method": method, "value": gain.value, "low": gain.low, "high": gain.high})
    return rows, gains


def discrimination(samples: list[dict], scores: list[float], args) -> dict:
    correct = np.array([s["correct"] for s in samples])
    s = np.asarray(scores, dtype=float)
    problems = [x["problem_id"] for x in samples]
    overall = bootstrap(lambda idx: auroc(correct[idx], s[idx]), len(samples), groups=problems,
                        n_resamples=args.resamples, seed=args.seed)  # fmt: skip
    within = within_group_auroc_interval(correct, s, problems, n_resamples=args.resamples, seed=args.seed)
    return {"auroc": overall.as_dict(), "within_problem_auroc": within.as_dict()}


def chart(rows: list[dict], title: str, html: Path, png: Path) -> str | None:
    """Points with 95% interval bars, methods side by side at each k; returns why the PNG was
    not written, or None."""
    import altair as alt

    order = list(dict.fromkeys(r["method"] for r in rows))
    legend = alt.Legend(orient="bottom", columns=2, labelLimit=420, title=None)
    base = alt.Chart(alt.Data(values=rows)).encode(
        x=alt.X("k:O", title="k (samples per problem)", axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("method:N", sort=order),
        color=alt.Color("method:N", sort=order, legend=legend),
    )  # fmt: skip
    bars = base.mark_rule(opacity=0.6).encode(y=alt.Y("low:Q", title="problems solved (fraction)"), y2="high:Q")
    points = base.mark_point(filled=True, size=45).encode(
        y="value:Q",
        tooltip=["method:N", "k:O", alt.Tooltip("value:Q", format=".3f"),
                 alt.Tooltip("low:Q", format=".3f"), alt.Tooltip("high:Q", format=".3f")],
    )  # fmt: skip
    figure = (bars + points).properties(title=title, width=620, height=360)
    figure.save(str(html))
    try:
        figure.save(str(png), scale_factor=2)
    except Exception as error:  # noqa: BLE001 - the HTML is the chart; the PNG needs vl-convert
        return f"{type(error).__name__}: {error}"
    return None


def write_outputs(summary: dict, out: Path, stem: str) -> None:
    rows = summary["curves"]
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=2, default=_json_default), encoding="utf-8")
    with open(out / f"{stem}.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["k", "method", "value", "low", "high"])
        writer.writeheader()
        writer.writerows(rows)
    config = summary["config"]
    title = (f"{config['policy']}: {summary['problems']} problems, k={config['k']} samples each "
             f"(95% bootstrap intervals over problems)")  # fmt: skip
    png_problem = chart(rows, title, out / f"{stem}.html", out / f"{stem}.png")
    if png_problem:
        print(f"PNG not written ({png_problem})", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.replot:
        summary = json.loads(args.replot.read_text(encoding="utf-8"))
        write_outputs(summary, args.replot.parent, args.replot.stem)
        print_table(summary)
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    judges = args.judge or [args.policy]
    probe_bases = [] if args.no_probe else (args.probe_base or [args.policy])
    judge_engine = args.judge_engine or args.engine
    db = args.db or Path(tempfile.mkdtemp(prefix="best_of_n-")) / "best_of_n.db"
    store = Store.open(db)
    problems = select_problems(store, args)
    cache = EngineCache()
    timings = {}
    print(f"policy {args.policy}: {len(problems)} problems x k={args.k} (db {db})", flush=True)

    began = time.perf_counter()
    policy_engine = cache.get(args.engine, args.policy, engine_options(args.engine, args.device))
    timings["policy_load_s"] = round(time.perf_counter() - began, 1)
    began = time.perf_counter()
    samples = sample_solutions(store, policy_engine, problems, args)
    timings["sampling_s"] = round(time.perf_counter() - began, 1)
    trajectory_ids = sorted({s["trajectory_id"] for s in samples if s["trajectory_id"] is not None})

    verifiers: dict[str, list[float]] = {}
    details: dict[str, dict] = {}
    for judge in judges:
        began = time.perf_counter()
        job_id = queue(store, JudgeSpec(judge=judge, verdict="outcome", trajectory_ids=tuple(trajectory_ids),
                                        engine=judge_engine, engine_options=engine_options(judge_engine, args.device)))  # fmt: skip
        status = run_job(store, claim_job(store, job_id), cache)
        job = store.get_job(job_id)
        if status != "done":
            raise SystemExit(f"judge {judge}: job {job_id} {status}: {job['error']}")
        name = job["manifest"]["judge"]
        found = verdict_scores(store, trajectory_ids, name)
        p = [found.get(s["trajectory_id"], {}).get("p_yes") for s in samples]
        mass = [found.get(s["trajectory_id"], {}).get("mass") for s in samples]
        undefined = sum(v is None for v in p)
        # An empty solution or an undefined P(Yes) ranks below every scored one.
        label = f"self-judge P(Yes) ({judge})" if judge == args.policy else f"judge P(Yes) ({judge})"
        verifiers[label] = [-1.0 if v is None else v for v in p]
        masses = [m for m in mass if m is not None]
        details[label] = {
            "type": "llm-judge", "model": judge, "judge_name": name, "job_id": job_id,
            "template": job["manifest"]["template"]["name"], "template_sha256": job["manifest"]["template"]["sha256"],
            "chat_template": job["manifest"].get("chat"), "undefined": undefined,
            "mean_mass": float(np.mean(masses)) if masses else None,
            "median_mass": float(np.median(masses)) if masses else None,
            "mean_p_yes": float(np.mean([v for v in p if v is not None])) if undefined < len(p) else None,
            **discrimination(samples, verifiers[label], args),
            "seconds": round(time.perf_counter() - began, 1),
        }  # fmt: skip
        print(f"  {label}: AUROC {details[label]['auroc']['value']}", flush=True)

    for base in probe_bases:
        began = time.perf_counter()
        engine = cache.get("transformers", base, engine_options("transformers", args.device))
        trained = train_probe(store, engine, base, "outcome", trajectory_ids, layer=args.layer,
                              context=args.probe_context, folds=args.folds, seed=args.seed, extra_manifest={"benchmark": "best_of_n"})  # fmt: skip
        oof = {int(t): float(p) for t, p in zip(trained.examples.trajectory_ids, trained.crossfit.scores)}
        label = f"probe ORM, cross-fitted ({base})"
        verifiers[label] = [oof.get(s["trajectory_id"], -1.0) for s in samples]
        details[label] = {
            "type": "probe-orm", "base": base, "layer": args.layer, "context": args.probe_context, "judge_name": trained.probe.judge,
            "artifact": str(trained.probe.folder), "C_per_fold": trained.crossfit.C,
            "trajectory_level_metrics": trained.probe.manifest["metrics"],
            **discrimination(samples, verifiers[label], args),
            "seconds": round(time.perf_counter() - began, 1),
        }  # fmt: skip
        print(f"  {label}: AUROC {details[label]['auroc']['value']}", flush=True)
    cache.drop()

    rows, gains = curves(samples, verifiers, args.k, args)
    for name, scores in verifiers.items():
        for sample, score in zip(samples, scores):
            sample.setdefault("scores", {})[name] = score
    correct = np.array([s["correct"] for s in samples])
    summary = {
        "benchmark": "best_of_n",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "db": str(db),
        "problems": len(problems),
        "samples": len(samples),
        "distinct_trajectories": len(trajectory_ids),
        "sample_accuracy": float(correct.mean()),
        "problems_with_a_correct_sample": int(sum(
            any(s["correct"] for s in samples if s["problem_id"] == p["id"]) for p in problems)),
        "empty_samples": sum(s["trajectory_id"] is None for s in samples),
        "mean_tokens": float(np.mean([s["tokens"] for s in samples])),
        "verifiers": details,
        "curves": rows,
        "gains_over_random_pick": gains,
        "timings": {**timings, "total_s": round(time.perf_counter() - started, 1)},
        "intervals": f"95% percentile bootstrap over problems, {args.resamples} resamples",
        "sample_records": samples,
    }  # fmt: skip
    write_outputs(summary, args.out, "best_of_n" + (f"-{args.tag}" if args.tag else ""))
    print_table(summary)
    return 0


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return None if math.isnan(value) else float(value)
    raise TypeError(type(value).__name__)


def print_table(summary: dict) -> None:
    print(f"\n{summary['samples']} samples, {summary['distinct_trajectories']} distinct; "
          f"sample accuracy {summary['sample_accuracy']:.3f}; "
          f"{summary['problems_with_a_correct_sample']}/{summary['problems']} problems solved at least once")  # fmt: skip
    for name, detail in summary["verifiers"].items():
        a, w = detail["auroc"], detail["within_problem_auroc"]
        mass = f", mean yes/no mass {detail['mean_mass']:.3f}" if detail.get("mean_mass") is not None else ""
        print(f"{name}: AUROC {_fmt(a)}; within problem {_fmt(w)}{mass}")
    k_max = max(r["k"] for r in summary["curves"])
    for k in sorted({1, 2, 4, k_max}):
        for r in summary["curves"]:
            if r["k"] == k:
                print(f"  k={k:<2} {r['method']:<55} {_fmt(r)}")
    print(f"gain over a random pick at k={k_max} (paired, per problem):")
    for r in summary.get("gains_over_random_pick", []):
        if r["k"] == k_max:
            print(f"  {r['method']:<60} {_fmt(r)}")
    print(f"timings {summary['timings']}")


def _fmt(entry: dict) -> str:
    return str(Interval.from_dict(entry))


if __name__ == "__main__":
    sys.exit(main())
