"""The benchmark scripts' headline figures count what their names say (issue 21).

- benchmarks/mcpe_bench.py: the budget headline counts only trajectories whose graded outcome
  leaves the first-error search work to do; correct-outcome ones (0 rollouts by construction)
  are reported apart.
- benchmarks/tree_search.py: the JSON names its engine, and the per-decision figures count only
  decisions that needed a probe.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import mcpe_bench  # noqa: E402
import tree_search as tree_bench  # noqa: E402


def _budget(groups: dict) -> dict:
    everything = [item for items in groups.values() for item in items]
    groups = dict(groups)
    groups["searched"], groups["free_by_construction"] = mcpe_bench.split_by_outcome(everything)
    groups["all_mixed"] = everything
    return mcpe_bench.compare_budgets(groups, 16)


def test_budget_headline_leaves_out_trajectories_the_outcome_settles():
    wrong = ([[True] * 16, [False] * 16, [False] * 16], False)  # error at step 1
    right = ([[True] * 16] * 4, True)  # the outcome settles every step
    budget = _budget({"policy": [wrong, right], "reference": [right, right]})
    headline = mcpe_bench.budget_headline(budget)
    assert budget["free_by_construction"]["search_rollouts"] == 0
    assert budget["free_by_construction"]["trajectories"] == 3
    assert budget["searched"]["trajectories"] == 1 and budget["searched"]["correct_outcomes"] == 0
    assert budget["policy"]["correct_outcomes"] == 1
    # The headline is the searched subset's own ratio, not the mixed one.
    assert headline["budget_ratio_searched"] == budget["searched"]["budget_ratio"]
    assert headline["budget_ratio_searched"] > budget["all_mixed"]["budget_ratio"]
    assert "budget_ratio" not in headline and "1 of policy's 2, 0 of reference's 2" in headline["budget_counts"]


def test_simulated_sweep_headline_counts_wrong_solutions_only():
    for m, figures in mcpe_bench.simulated_budgets(16, lengths=(2, 4), trajectories=60).items():
        assert figures["correct_outcomes"] == 0, m
        assert figures["free_by_construction"]["search_rollouts"] in (0, None), m
        assert figures["trajectories"] + figures["free_by_construction"]["trajectories"] == 60


def test_tree_search_json_names_its_engine_and_counts_probed_decisions(tmp_path):
    assert tree_bench.main(["--lengths", "2,4", "--repeats", "2", "--solutions", "5", "--tree-problems", "3",
                            "--out", str(tmp_path)]) == 0  # fmt: skip
    result = json.loads((tmp_path / "tree_search.json").read_text())
    assert result["engine"].startswith("simulated reasoner (no language model)")
    sets = [k for k, v in result.items() if isinstance(v, dict) and "values" in v]
    assert sets and all(result[k]["engine"] == result["engine"] for k in sets)
    assert "rollouts_per_label" not in result
    for m in ("2", "4"):
        tree = result["rollouts_per_probed_decision"]["values"][m]["omegaprm-tree"]
        incl = result["rollouts_per_decision_incl_unprobed"]["values"][m]["omegaprm-tree"]["mean"]
        unprobed = result["decisions_without_probe"]["values"][m]["omegaprm-tree"]["decisions"]
        assert tree >= incl and (unprobed == 0) == (tree == incl)
        for strategy in ("fixed-n", "binary-search"):
            assert result["decisions_without_probe"]["values"][m][strategy]["decisions"] == 0
