"""Test-time compute (issue 25): accuracy against generated tokens per strategy x scorer.

Each point is one search setting (core.store.test_time_compute: a policy, strategy, scorer and
parameters, seeds pooled, the latest search of each problem): x = the tokens it generated per
problem (the policy's, from each search's compute record; optionally with what the scorer
generated itself, e.g. MC rollouts), y = the share of problems whose chosen final answer is
correct, with a 95% Wilson interval over problems (core.mcpe's, the interval core.metrics uses).

The references are the policy's own sampled solutions (source "policy") to the problems its
searches searched: pass@k (the oracle: any of k right) and majority vote over k, both from the
Best-of-N page's own curves (core.views.best_of_n.curves: the unbiased pass@k and the exact
maj@k expectation per problem, bootstrap intervals over problems), drawn at the tokens k samples
cost: k x the mean tokens per sample (per problem, then over problems).

Scale: three statements whatever the number of searches or samples (the settings aggregated in
SQL, the policies, the samples as arrays); a point is computed per setting, never per search.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import altair as alt
import numpy as np

from core.mcpe import Counts, wilson_interval
from core.store.test_time_compute import (
    policy_sample_arrays,
    search_policies,
    search_settings,
    searches_version,
)
from core.views.best_of_n import SampleTable, curves

# The parameters that size each strategy's search (what a budget sweep changes), as the README
# names them: bon n samples; beam n beams, width M; dvts n beams in n / M subtrees; mcts
# expansions, width M; reject n chains, up to R resamples a step. A token budget is added where set.
SIZE_PARAMETERS = {
    "bon": ("n",),
    "beam": ("n", "beam_width"),
    "dvts": ("n", "beam_width"),
    "mcts": ("expansions", "beam_width"),
    "reject": ("n", "max_resamples"),
}
SHORT_NAMES = {"n": "n", "beam_width": "M", "expansions": "expansions", "max_resamples": "R",
               "token_budget": "token budget"}  # fmt: skip
REFERENCES = ("pass@k", "majority vote")


@dataclass(frozen=True)
class ComputePoint:
    """One search setting: its accuracy over problems against the tokens it generated per problem."""

    policy: str
    strategy: str
    scorer: str
    scorer_kind: str
    setting: str  # its size parameters ("n=8, M=2"), and any other parameter that tells it apart
    tokens: float  # generated tokens per problem: the x of the chart
    accuracy: float
    low: float  # 95% Wilson interval over problems
    high: float
    problems: int
    correct: int
    policy_tokens: float  # per problem
    scorer_generated_tokens: float  # per problem
    searches: int  # finished searches of the setting (a problem searched again counts once above)


@dataclass(frozen=True)
class ReferencePoint:
    """pass@k or majority vote over k of the policy's own samples, at the tokens k samples cost."""

    reference: str
    k: int
    tokens: float | None  # None: the samples do not say how many tokens they took
    value: float
    low: float | None  # 95% bootstrap interval over problems
    high: float | None
    problems: int


@dataclass(frozen=True)
class ComputeCurves:
    policy: str | None
    points: list[ComputePoint] = field(default_factory=list)
    references: list[ReferencePoint] = field(default_factory=list)
    searched_problems: int = 0  # problems the policy's searches searched
    reference_problems: int = 0  # of those, with two or more graded samples of the policy's own
    largest_k: int = 0
    samples_per_problem: float | None = None  # mean tokens of one sample (per problem, then over problems)
    note: str | None = None  # why there are no references, when there are none


def policies(store, dataset: str | None = None) -> list[str]:
    """Policies with finished searches (of the dataset), most searches first."""
    return [row["policy"] for row in search_policies(store, dataset)]


def version(store) -> tuple:
    """A cache key: changes when a search finishes or trajectories change."""
    return searches_version(store)


def setting_labels(rows: list[dict]) -> list[str]:
    """Each setting's label: its strategy's size parameters (and token budget), plus whichever other
    parameters differ between settings that would otherwise read the same."""
    labels = []
    for row in rows:
        config = row["config"]
        names = [*SIZE_PARAMETERS.get(row["strategy"], ("n",)), *(("token_budget",) if config.get("token_budget") else ())]
        labels.append(", ".join(f"{SHORT_NAMES[name]}={config.get(name)}" for name in names))
    same: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        same.setdefault((row["policy"], row["strategy"], row["scorer"], labels[i]), []).append(i)
    for members in same.values():
        if len(members) < 2:
            continue
        configs = [rows[i]["config"] for i in members]
        differing = sorted(k for k in {k for c in configs for k in c} if len({repr(c.get(k)) for c in configs}) > 1)
        for i in members:
            labels[i] += "".join(f", {name}={rows[i]['config'].get(name)}" for name in differing)
    return labels


def compute_points(rows: list[dict], scorer_tokens: bool = False) -> list[ComputePoint]:
    """A point per setting row of `search_settings`; x counts the scorer's generated tokens too
    when `scorer_tokens`."""
    points = []
    for row, label in zip(rows, setting_labels(rows)):
        problems, correct = int(row["problems"]), int(row["correct"] or 0)
        low, high = wilson_interval(Counts(problems, correct))
        policy_tokens = float(row["policy_tokens"] or 0) / problems
        scorer_generated = float(row["scorer_generated_tokens"] or 0) / problems
        points.append(ComputePoint(
            row["policy"], row["strategy"], row["scorer"], row["scorer_kind"], label,
            policy_tokens + (scorer_generated if scorer_tokens else 0.0), correct / problems, low, high, problems,
            correct, policy_tokens, scorer_generated, int(row["searches"]),
        ))  # fmt: skip
    return points


def reference_points(samples: dict[str, np.ndarray]) -> tuple[list[ReferencePoint], int, int, float | None]:
    """pass@k and majority vote over the samples (grouped by problem) from the Best-of-N curves, each
    at k x the mean tokens of a sample; with the number of problems used (two or more samples),
    the largest k (the smallest group) and the mean tokens of a sample."""
    count = len(samples["id"])
    table = SampleTable(samples["problem_id"], samples["id"], samples["answer"], samples["correct"].astype(bool), (),
                        np.zeros((count, 0)))  # fmt: skip
    found, largest = curves(table, None, [])
    if not found:
        return [], 0, 0, None
    # The mean tokens of a sample on each problem the curves used (two or more samples), then over them.
    problems, sizes = np.unique(samples["problem_id"], return_counts=True)
    known = ~np.isnan(samples["num_tokens"])
    which = np.searchsorted(problems, samples["problem_id"])
    totals = np.bincount(which, weights=np.where(known, samples["num_tokens"], 0.0), minlength=len(problems))
    counted = np.bincount(which, weights=known.astype(float), minlength=len(problems))
    usable = (sizes >= 2) & (counted > 0)
    per_sample = float((totals[usable] / counted[usable]).mean()) if usable.any() else None
    points = [ReferencePoint(p.method, p.k, None if per_sample is None else p.k * per_sample, p.value, p.low, p.high,
                             p.problems) for p in found if p.method in REFERENCES]  # fmt: skip
    return points, int((sizes >= 2).sum()), largest, per_sample


def compute_curves(store, dataset: str | None = None, policy: str | None = None,
                   scorer_tokens: bool = False) -> ComputeCurves:  # fmt: skip
    """The policy's search settings (default: the policy with the most finished searches) as points,
    and its own samples of the same problems as references."""
    searched_by = {row["policy"]: int(row["problems"]) for row in search_policies(store, dataset)}
    if policy is None:
        if not searched_by:
            return ComputeCurves(None)
        policy = next(iter(searched_by))
    if policy not in searched_by:
        return ComputeCurves(policy)
    points = compute_points(search_settings(store, dataset, policy), scorer_tokens)
    references, usable, largest, per_sample = reference_points(policy_sample_arrays(store, policy, dataset))
    note = None
    if not references:
        note = (f"No references: the policy {policy!r} has fewer than two graded solutions of its own to each "
                "searched problem. Sample some (Jobs and data → Generate, or `stepscope generate --k 8`) "
                "on the same problems.")  # fmt: skip
    elif per_sample is None:
        note = "The references' samples do not say how many tokens they took (imported?): they are not drawn."
    return ComputeCurves(policy, points, references, searched_by[policy], usable, largest, per_sample, note)


def point_rows(curves_: ComputeCurves) -> list[dict]:
    """The points as table rows (plain values: shown as text, never as HTML)."""
    return [{"strategy": p.strategy, "scorer": p.scorer, "setting": p.setting, "tokens / problem": round(p.tokens, 1),
             "accuracy": p.accuracy, "low": p.low, "high": p.high, "problems": p.problems, "correct": p.correct,
             "policy tokens / problem": round(p.policy_tokens, 1),
             "scorer-generated tokens / problem": round(p.scorer_generated_tokens, 1), "searches": p.searches}
            for p in curves_.points]  # fmt: skip


def compute_chart(curves_: ComputeCurves) -> dict:
    """Accuracy against generated tokens per problem (log scale): a point per setting with its
    interval as an error bar, coloured by strategy, shaped (and its line dashed) by scorer, the
    settings of one strategy and scorer joined in token order; the references as grey lines.
    Points at zero tokens cannot sit on a log axis and are left out (the table lists them)."""
    rows = [{**asdict(p), "tokens": p.tokens} for p in curves_.points if p.tokens > 0]
    references = [asdict(r) for r in curves_.references if r.tokens is not None and r.tokens > 0]
    x = alt.X("tokens:Q", title="generated tokens per problem (log scale)", scale=alt.Scale(type="log"))
    y = alt.Scale(domain=[0, 1])
    color = alt.Color("strategy:N", title="strategy")
    base = alt.Chart(alt.Data(values=rows))
    layers = [
        base.mark_rule(strokeWidth=1.5).encode(x=x, y=alt.Y("low:Q", scale=y), y2="high:Q", color=color),
        base.mark_line(opacity=0.6).encode(x=x, y=alt.Y("accuracy:Q", scale=y), color=color,
                                            strokeDash=alt.StrokeDash("scorer:N", legend=None),  # as the shapes say
                                            order="tokens:Q"),
        base.mark_point(filled=True, size=80).encode(
            x=x, y=alt.Y("accuracy:Q", scale=y, title="accuracy (chosen answer correct)"), color=color,
            shape=alt.Shape("scorer:N", title="scorer"),
            tooltip=["strategy:N", "scorer:N", "setting:N", alt.Tooltip("tokens:Q", format=",.0f"),
                     alt.Tooltip("accuracy:Q", format=".3f"), alt.Tooltip("low:Q", format=".3f"),
                     alt.Tooltip("high:Q", format=".3f"), "problems:Q", "searches:Q"]),
    ]  # fmt: skip
    if references:
        layers.append(alt.Chart(alt.Data(values=references)).mark_line(color="#555555", point=True, opacity=0.8).encode(
            x=x, y=alt.Y("value:Q", scale=y),
            strokeDash=alt.StrokeDash("reference:N", title="policy samples", legend=alt.Legend(symbolType="stroke"),
                                      scale=alt.Scale(domain=list(REFERENCES), range=[[1, 0], [6, 3]])),
            tooltip=["reference:N", "k:Q", alt.Tooltip("tokens:Q", format=",.0f"), alt.Tooltip("value:Q", format=".3f"),
                     alt.Tooltip("low:Q", format=".3f"), alt.Tooltip("high:Q", format=".3f"), "problems:Q"]))  # fmt: skip
    chart = alt.layer(*layers).resolve_scale(strokeDash="independent").properties(height=380)
    return chart.to_dict()
