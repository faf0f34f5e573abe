"""benchmarks/search.py (issue 25): its JSON records the grid it ran next to its figures, says
whether that was the issue's full grid, and every interval contains its point estimate.

The run here is a smoke run of the real path (synthetic problems, search jobs queued and run by
core.jobs.runner on the tiny random transformer): its accuracies are 0, so the interval checks
also run on summaries of made-up cells with mixed outcomes."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import search as search_bench  # noqa: E402


def _inside(figure: dict, value_key: str) -> None:
    value = figure[value_key]
    if value is None or figure.get("low") is None:
        return
    assert figure["low"] - 1e-9 <= value <= figure["high"] + 1e-9, figure


def _check_figures(result: dict) -> int:
    """Every interval of the summary holds its point estimate; returns how many were checked."""
    checked = 0
    for by_scorer in result["accuracy_vs_tokens"].values():
        for rows in by_scorer.values():
            for row in rows:
                assert 0 <= row["low"] <= row["accuracy"] <= row["high"] <= 1
                _inside(row["policy_tokens"], "mean")
                _inside(row["generated_tokens"], "mean")
                assert row["generated_tokens"]["mean"] >= row["policy_tokens"]["mean"]
                checked += 1
    for pair in result["guided_over_bon_at_equal_tokens"]["all_pairs"]:
        _inside(pair, "difference")
        assert pair["difference"] == pair["accuracy"] - pair["bon_accuracy"] or abs(
            pair["difference"] - (pair["accuracy"] - pair["bon_accuracy"])) < 1e-9  # fmt: skip
        checked += 1
    random_over = result["random_scorer_over_sampling"]
    for by_budget in random_over["by_strategy"].values():
        for ratio in by_budget.values():
            _inside(ratio, "ratio")
            checked += 1
    for reference in result["references"].values():
        for name in ("pass@1", "pass@B", "majority_vote"):
            _inside(reference[name], "mean")
        assert reference["pass@1"]["mean"] <= reference["pass@B"]["mean"]
    return checked


def test_a_tiny_run_records_its_grid_and_its_figures(tmp_path, tiny_model_dir, one_torch_thread):
    out = tmp_path / "search.json"
    assert search_bench.main([
        "--model", str(tiny_model_dir), "--problems", "3", "--strategies", "bon,beam", "--scorers", "random,mc:2",
        "--budgets", "2", "--width", "2", "--max-steps", "2", "--max-step-tokens", "6", "--max-solution-tokens", "12",
        "--step-delimiter", "e", "--out", str(out), "--note", "smoke",
    ]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    assert result["finished"] is True and result["complete"] is False and result["note"] == "smoke"
    assert "3 problems, not >= 100" in result["lacks_for_full_grid"]
    assert result["grid"]["strategies"] == ["bon", "beam"] and result["grid"]["scorers"] == ["random", "mc:2"]
    assert result["grid"]["budgets"] == [2] and result["problems"]["count"] == 3
    assert result["problems"]["split"] == "test (held out)" and sum(result["problems"]["by_steps"].values()) == 3
    assert any("scorer prm" in m for m in result["missing"]) and any("strategy mcts" in m for m in result["missing"])
    for key in ("load_average_1_5_15_start", "load_average_1_5_15_end", "machine", "code", "method"):
        assert result[key]
    assert sorted(result["cells_done"]) == sorted(f"{s}/{sc}/2" for s in ("bon", "beam") for sc in ("random", "mc:2"))
    assert set(result["accuracy_vs_tokens"]) == {"bon", "beam"}
    assert set(result["accuracy_vs_tokens"]["beam"]) == {"random", "mc:2"}
    # The figures come from the search jobs: one job per cell, every problem searched in each.
    for cell in result["cells"].values():
        assert len(cell["per_problem"]) == 3 and cell["job_compute"]["policy_tokens"] == sum(
            r["policy_tokens"] for r in cell["per_problem"])  # fmt: skip
    assert _check_figures(result) >= 4
    pairs = result["guided_over_bon_at_equal_tokens"]["all_pairs"]
    assert {(p["strategy"], p["scorer"]) for p in pairs} == {("beam", "random"), ("beam", "mc:2")}
    overhead = result["orchestration_overhead_fraction"]
    assert overhead["per_job"]["count"] == 4 and 0 <= overhead["per_job"]["median"] <= overhead["per_job"]["max"] <= 1
    assert overhead["per_search"]["count"] == 12


def test_the_defaults_are_the_issues_full_grid():
    args = search_bench.parse_args([])
    strategies, scorers = search_bench.scorer_list(args.strategies), search_bench.scorer_list(args.scorers)
    budgets = [int(b) for b in args.budgets.split(",")]
    assert search_bench.completeness(args, strategies, scorers, budgets, (2, 4)) == (True, [])
    small = search_bench.parse_args(["--problems", "10", "--scorers", "random,mc:2", "--budgets", "4"])
    complete, lacks = search_bench.completeness(small, strategies, search_bench.scorer_list(small.scorers), [4], (2, 4))
    assert not complete and {"10 problems, not >= 100", "scorer self-judge", "scorer prm", "scorer mc:2: k < 4",
                             "1 budgets, not >= 3"} <= set(lacks)  # fmt: skip


def _made_up_cell(strategy: str, budget: int, rates: list[float], rng: random.Random) -> dict:
    """A cell as cell_figures makes it, with outcomes drawn at per-problem rates."""
    rows = []
    for rate in rates:
        beams = [{"answer": str(rng.choice([7, 8])), "correct": rng.random() < rate} for _ in range(budget)]
        tokens = budget * rng.randint(20, 40)
        rows.append({"correct": rng.random() < rate, "policy_tokens": tokens, "generated_tokens": tokens, "beams": beams})
    return {
        "job_id": 0, **search_bench.wilson([r["correct"] for r in rows]),
        "policy_tokens": search_bench.mean_with_interval([r["policy_tokens"] for r in rows], 0),
        "generated_tokens": search_bench.mean_with_interval([r["generated_tokens"] for r in rows], 0),
        "verifier_tokens_read": 0, "seconds_per_problem": 1.0, "stopped": {"done": len(rows)},
        "orchestration_overhead_fraction": 0.05, "search_overhead_fractions": [0.05], "job_wall_overhead_fraction": 0.1,
        "per_problem": rows,
    }  # fmt: skip


def test_the_summary_intervals_hold_their_estimates_on_mixed_outcomes():
    rng = random.Random(3)
    rates = [rng.random() for _ in range(40)]
    cells = {(s, sc, str(b)): _made_up_cell(s, b, rates, rng)
             for s in ("bon", "beam", "reject") for sc in ("random", "mc:4") for b in (4, 8)}  # fmt: skip
    result = search_bench.summarise(cells, ["bon", "beam", "reject"], ["random", "mc:4"], [4, 8], seed=0)
    assert _check_figures(result) == 12 + 8 + 6  # cells, step-level pairs, random ratios
    pairs = result["guided_over_bon_at_equal_tokens"]["all_pairs"]
    assert all(p["low"] < p["high"] for p in pairs)  # mixed outcomes: a real interval, not a point
    assert set(result["guided_over_bon_at_equal_tokens"]["headline_by_scorer"]) == {"random", "mc:4"}
    pooled = result["random_scorer_over_sampling"]["pooled"]
    assert pooled["cells"] == 6 and pooled["low"] <= pooled["ratio"] <= pooled["high"]
