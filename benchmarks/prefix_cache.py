"""The transformers engine's prefix cache across calls (issue 26): 8 probes of one long trajectory,
each a ~1,000-token prefix (the policy's few-shot prompt, a synthetic long trace's question and
its first steps) plus the steps up to the probe, sampled in 8 successive calls as a first-error
search asks for them (binary-search order), 16 new tokens each, greedy.

    .venv/bin/python benchmarks/prefix_cache.py            # -> benchmarks/results/prefix_cache.json
    .venv/bin/python benchmarks/prefix_cache.py --models tiny --repeats 2   (quicker)

Three ways, the same prompts and the same engine settings but the cache:
- `no_cache`: the cross-call cache off (prefix_cache_mib=0), one call per probe: every probe
  prefilled from scratch (what the engine did before);
- `cross_call_cache`: the engine's cache on, one call per probe (cleared before each repeat):
  the first probe computes the prefix, later ones only the steps past what an earlier one holds;
- `one_call`: all 8 probes in one call on the cache-off engine (they share within a call), for
  reference: the best an estimate job that batched a trajectory's probes together could do.
Seconds are wall-clock around the engine calls (median and spread over the repeats); prompt
tokens computed and taken from the cache are the engine's own counts (prompt_token_stats); the
greedy texts must be the same in all three. Models: the tiny random Llama of the tests (built
here) and the embedded SmolLM2-135M if its dense copy is on disk (nothing is downloaded).
The load average before and after says how busy the shared machine was.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # tiny_model

from core.engines.base import SamplingParams  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "prefix_cache.json"
PREFIX_TOKENS, PROBES, NEW_TOKENS = 1000, 8, 16


def probe_prompts(tokenizer, prefix_tokens: int = PREFIX_TOKENS, probes: int = PROBES) -> tuple[list[str], int, int]:
    """Prompts of `probes` probes of one synthetic long trace: the few-shot prompt, the question
    and as many steps as make about `prefix_tokens` tokens, then 1..probes steps more, in the
    order a binary search visits them. The trace is the longest (16-256 steps) whose prompt
    (its question lists every change) fits in the prefix with `probes` steps left after it.
    Returns the prompts, the shared prefix's tokens and the trace's steps."""
    from core.policy import join_context, load_template
    from core.synth import long_trace

    def length(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    chosen = None
    for trace_steps in (16, 32, 64, 128, 256):
        trace = long_trace(trace_steps, 0, outcome="wrong")
        context = load_template().render(trace.question)
        if length(context) > prefix_tokens and chosen is not None:
            break
        steps = list(trace.steps)
        cut = 0
        while cut < len(steps) - probes and length(join_context(context, "\n\n".join(steps[: cut + 1]))) <= prefix_tokens:
            cut += 1
        chosen = (trace_steps, context, steps, cut)
        if length(join_context(context, "\n\n".join(steps[:cut]))) >= prefix_tokens - 60:
            break
    trace_steps, context, steps, cut = chosen
    order = _binary_order(1, probes)
    prompts = [join_context(context, "\n\n".join(steps[: cut + k]) + "\n\n") for k in order]
    return prompts, length(join_context(context, "\n\n".join(steps[:cut]))), trace_steps


def _binary_order(low: int, high: int) -> list[int]:
    """low..high in the order a bisection probes them (middle first, then each half's middle)."""
    out, spans = [], [(low, high)]
    while spans:
        a, b = spans.pop(0)
        if a > b:
            continue
        middle = (a + b) // 2
        out.append(middle)
        spans += [(a, middle - 1), (middle + 1, b)]
    return out


def timed(engine, batches: list[list[str]], params: SamplingParams) -> tuple[float, list, dict]:
    texts, computed, cached = [], 0, 0
    started = time.perf_counter()
    for prompts in batches:
        texts.extend(row[0].text for row in engine.generate(prompts, params))
        last = engine.prompt_token_stats()["last_call"]
        computed += last["prompt_tokens"] - last["prompt_tokens_cached"]
        cached += last["prompt_tokens_cached"]
    return time.perf_counter() - started, texts, {"prompt_tokens_computed": computed, "prompt_tokens_cached": cached}


def measure(model_dir: str, name: str, repeats: int) -> dict:
    from core.engines import load_engine

    params = SamplingParams(n=1, max_new_tokens=NEW_TOKENS, temperature=0)
    on = load_engine("transformers", model_dir, device="cpu", prefix_cache_mib=512)
    off = load_engine("transformers", model_dir, device="cpu", prefix_cache_mib=0)
    prompts, shared, trace_steps = probe_prompts(on.tokenizer)
    lengths = [len(on.tokenizer(p)["input_ids"]) for p in prompts]
    ways = {
        "no_cache": (off, [[p] for p in prompts]),
        "cross_call_cache": (on, [[p] for p in prompts]),
        "one_call": (off, [prompts]),
    }
    timed(on, [prompts[:1]], params)  # warm-up: first-call allocations are not the cache's cost
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    texts, tokens = {}, {}
    for _ in range(repeats):
        for way, (engine, batches) in ways.items():
            on.clear_prefix_cache()
            spent, got, counts = timed(engine, batches, params)
            seconds[way].append(round(spent, 3))
            texts.setdefault(way, got)
            tokens[way] = counts
            if got != texts[way]:
                raise RuntimeError(f"{way}: greedy texts changed between repeats")
    info = on.info
    on.close()
    off.close()
    median = {way: statistics.median(values) for way, values in seconds.items()}
    return {
        "model": name, "engine": info.engine, "device": info.device, "dtype": info.dtype,
        "threads": info.extra.get("threads"), "probes": len(prompts), "trace_steps": trace_steps,
        "shared_prefix_tokens": shared,
        "prompt_tokens": lengths, "new_tokens": NEW_TOKENS,
        "seconds": {way: {"median": round(median[way], 3), "min": min(v), "max": max(v), "runs": v}
                    for way, v in seconds.items()},
        "tokens": tokens,
        "speedup_cross_call_over_no_cache": round(median["no_cache"] / median["cross_call_cache"], 2),
        "speedup_one_call_over_no_cache": round(median["no_cache"] / median["one_call"], 2),
        "same_greedy_texts": texts["no_cache"] == texts["cross_call_cache"] == texts["one_call"],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny", "smollm2-135m"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    load_before = os.getloadavg()
    started = time.perf_counter()
    results, skipped = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            if name == "tiny":
                from tiny_model import build_tiny_model

                directory = str(build_tiny_model(Path(folder) / "tiny"))
            else:
                from core.models import resolve_model

                try:
                    directory = resolve_model(name, dense=True, fetch=False).directory
                except Exception as error:  # noqa: BLE001 - a model not on disk is reported, not fetched
                    skipped[name] = f"not on disk ({type(error).__name__}: {error})"[:300]
                    continue
            row = measure(directory, name, args.repeats)
            print(json.dumps(row), flush=True)
            results.append(row)
    report = {
        "results": results, "skipped": skipped or None,
        "method": __doc__.strip().split("\n\n")[0].replace("\n", " "),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average_before": load_before, "load_average_after": os.getloadavg(),
                    "note": "a shared 2-core machine with other work running: seconds are of a busy machine"},
        "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
