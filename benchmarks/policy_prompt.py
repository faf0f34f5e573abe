"""The policy's few-shot prompt: accuracy by number of steps, one prompt against another.

Why: with only one-step worked examples, the embedded SmolLM2 stops after one calculation
("The answer is <first intermediate>") on multi-step problems. This measures how often its
samples reach the gold answer on synthetic problems (core/synth.py) of 1, 2 and 3 steps, under
each prompt, on the same problems with the same sampling settings.

Per prompt and step count: sample accuracy (the fraction of the k samples per problem that are
correct) with a Wilson interval over samples, and, because samples of one problem are not
independent, the same accuracy with a 95% bootstrap interval over problems (clusters); also
pass@k (problems solved at least once) with a Wilson interval over problems, and how often a
sample stops with "The answer is" after fewer calculation lines than the problem has steps.

Default: the one-step prompt kept in benchmarks/prompts/ ("before") against the product's
prompt core/prompts/policy_fewshot.txt ("after"); `--prompt NAME=PATH` (repeatable) compares
any prompt files. Prompts take turns chunk by chunk, so a change in machine load hits both.

    python benchmarks/policy_prompt.py            # 20 problems x 3 step counts, k=8, ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from statsmodels.stats.proportion import proportion_confint  # noqa: E402

from core.engines import SamplingParams, load_engine  # noqa: E402
from core.grading import grade  # noqa: E402
from core.metrics import bootstrap  # noqa: E402
from core.policy import POLICY_STOP, PolicyTemplate  # noqa: E402
from core.synth import generate  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_PROMPTS = (
    f"before={ROOT / 'benchmarks' / 'prompts' / 'policy_fewshot_onestep.txt'}",
    f"after={ROOT / 'core' / 'prompts' / 'policy_fewshot.txt'}",
)
_CALCULATION = re.compile(r"\d\s*[-+*/x×]\s*\d+\s*=\s*\d")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompt", action="append", help="NAME=PATH of a prompt file (repeatable)")
    parser.add_argument("--steps", default="1,2,3", help="step counts, comma-separated")
    parser.add_argument("--problems", type=int, default=20, help="problems per step count")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-new-tokens", type=int, default=120)
    parser.add_argument("--seed", type=int, default=2024, help="problem draw and sampling seed")
    parser.add_argument("--problems-per-call", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=RESULTS / "policy_prompt.json")
    return parser.parse_args(argv)


def wilson(successes: int, total: int) -> dict:
    low, high = proportion_confint(successes, total, alpha=0.05, method="wilson")
    return {"value": successes / total, "low": float(low), "high": float(high), "n": total}


def summarise(records: list[dict], k: int) -> dict:
    correct = [s["correct"] for r in records for s in r["samples"]]
    groups = [i for i, r in enumerate(records) for _ in r["samples"]]
    flags = [float(c) for c in correct]
    by_problem = bootstrap(
        lambda idx: sum(flags[i] for i in idx) / len(idx) if len(idx) else None,
        len(flags), groups=groups, seed=0,
    ).as_dict()  # fmt: skip
    early = [s["stopped_early"] for r in records for s in r["samples"]]
    solved = sum(any(s["correct"] for s in r["samples"]) for r in records)
    return {
        "accuracy": wilson(sum(correct), len(correct)),
        "accuracy_problem_bootstrap": by_problem,
        f"pass_at_{k}": wilson(solved, len(records)),
        "answered_after_too_few_calculations": wilson(sum(early), len(early)),
        "problems": len(records),
        "samples": len(correct),
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    prompts = {}
    for entry in args.prompt or DEFAULT_PROMPTS:
        name, _, path = entry.partition("=")
        prompts[name] = PolicyTemplate(name, Path(path).read_text(encoding="utf-8").rstrip("\n"))
    step_counts = [int(s) for s in args.steps.split(",")]
    # One seed per step count: the same seed would open every set with the same draws.
    problems = [p for steps in step_counts
                for p in generate((steps, steps), args.problems, args.seed + steps)]
    load_before = os.getloadavg()
    started = time.perf_counter()
    engine = load_engine("transformers", args.model, device="cpu")
    load_seconds = time.perf_counter() - started
    records: dict[str, list[dict]] = {name: [] for name in prompts}
    seconds = {name: 0.0 for name in prompts}
    tokens = {name: 0 for name in prompts}
    for call, start in enumerate(range(0, len(problems), args.problems_per_call)):
        chunk = problems[start : start + args.problems_per_call]
        for name, template in prompts.items():
            sampling = SamplingParams(
                n=args.k, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                stop=POLICY_STOP, seed=args.seed + call,
            )  # fmt: skip
            began = time.perf_counter()
            results = engine.generate([template.render(p.question) for p in chunk], sampling)
            seconds[name] += time.perf_counter() - began
            for problem, samples in zip(chunk, results):
                graded = [grade(s.text, str(problem.gold)) for s in samples]
                tokens[name] += sum(s.num_tokens for s in samples)
                records[name].append({
                    "question": problem.question, "gold": problem.gold, "steps": problem.steps,
                    "samples": [{
                        "text": s.text, "answer": g.answer, "correct": g.correct,
                        "stopped_early": "answer is" in s.text.lower()
                        and len(_CALCULATION.findall(s.text)) < problem.steps,
                    } for s, g in zip(samples, graded)],
                })  # fmt: skip
        print(f"{min(start + args.problems_per_call, len(problems))}/{len(problems)} problems "
              f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)  # fmt: skip
    summary = {
        name: {str(steps): summarise([r for r in recs if r["steps"] == steps], args.k)
               for steps in step_counts}
        for name, recs in records.items()
    }  # fmt: skip
    result = {
        "benchmark": "policy_prompt",
        "model": args.model,
        "engine": engine.info.engine,
        "engine_info": {"dtype": engine.info.dtype, "device": engine.info.device,
                        "fingerprint": engine.info.extra.get("fingerprint")},  # fmt: skip
        "machine": {
            "platform": platform.platform(), "cpus": os.cpu_count(),
            "load_average_1_5_15_before": list(load_before),
            "load_average_1_5_15_after": list(os.getloadavg()),
        },  # fmt: skip
        "settings": {"steps": step_counts, "problems_per_step": args.problems, "k": args.k,
                     "temperature": args.temperature, "max_new_tokens": args.max_new_tokens,
                     "seed": args.seed, "problem_generator": "core.synth"},  # fmt: skip
        "prompts": {name: {"sha256": t.sha256, "text": t.text} for name, t in prompts.items()},
        "load_seconds": round(load_seconds, 1),
        "generation_seconds": {name: round(s, 1) for name, s in seconds.items()},
        "tokens": tokens,
        "summary": summary,
        "samples": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for name in prompts:
        for steps in step_counts:
            entry = summary[name][str(steps)]
            acc, solved = entry["accuracy"], entry[f"pass_at_{args.k}"]
            early = entry["answered_after_too_few_calculations"]["value"]
            print(f"{name:>8} {steps}-step: accuracy {acc['value']:.3f} [{acc['low']:.3f}, "
                  f"{acc['high']:.3f}] of {acc['n']}; pass@{args.k} {solved['value']:.2f} "
                  f"of {solved['n']}; early answers {early:.2f}")  # fmt: skip
    print(f"load average before {load_before}, after {os.getloadavg()}; wrote {args.out}")


if __name__ == "__main__":
    main()
