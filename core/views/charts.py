"""The app's charts as Vega-Lite specs (the pages hand them to st.vega_lite_chart).

Explore: MC value per step with its interval band, judge P(yes), PRM step scores and human
ratings. Defined in Altair, but built once per shape (number of steps, which layers are present)
with named datasets, and filled with each trajectory's rows as plain Vega-Lite: building and
validating the Altair objects takes most of a second, filling the spec a millisecond.

Clicking a step's column selects it: the selection parameter is `pick`, over the field `step`.

Compare (confusion, calibration, accuracy by step position) and Best-of-N (fraction solved
against k): small plain Vega-Lite specs with their rows inline.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from dataclasses import asdict
from typing import TYPE_CHECKING, Mapping, Sequence

import altair as alt

if TYPE_CHECKING:
    from core.metrics import CalibrationBin
    from core.views.best_of_n import CurvePoint

SELECTION = "pick"
SMALL_HEIGHT = 220  # Compare's three charts side by side


@lru_cache(maxsize=256)
def _template(n_steps: int, values: bool, verdicts: bool, labels: bool, prm: bool = False) -> dict:
    domain = [-0.5, max(n_steps, 1) - 0.5]
    x = alt.X("step:Q", title="step", axis=alt.Axis(tickMinStep=1, format="d"), scale=alt.Scale(domain=domain))
    y = alt.Scale(domain=[0, 1])
    pick = alt.selection_point(name=SELECTION, fields=["step"], on="click", clear=False)
    layers = [
        # One clickable column per step, so a step without a value can be selected too.
        alt.Chart(alt.NamedData("columns")).mark_rect(opacity=0.04, color="#888")
        .encode(x=alt.X("left:Q", scale=alt.Scale(domain=domain), title="step"), x2="right:Q",
                y=alt.datum(0, scale=y), y2=alt.datum(1), tooltip=[alt.Tooltip("step:Q", title="step")])
        .add_params(pick),
        alt.Chart(alt.NamedData("selected")).mark_rule(color="#f28e2b", strokeWidth=2).encode(x=x),
    ]  # fmt: skip
    if values:
        layers.append(alt.Chart(alt.NamedData("values")).mark_area(opacity=0.25).encode(
            x=x, y=alt.Y("low:Q", scale=y, title="value"), y2="high:Q"))
        layers.append(alt.Chart(alt.NamedData("values")).mark_line(point=True).encode(
            x=x, y=alt.Y("value:Q", scale=y), tooltip=["step:Q", "value:Q", "low:Q", "high:Q", "n:Q"]))
    if verdicts:
        layers.append(alt.Chart(alt.NamedData("verdicts")).mark_point(shape="diamond", size=80, filled=True).encode(
            x=x, y=alt.Y("p_yes:Q", scale=y), color=alt.Color("judge:N", title="judge P(yes)"),
            tooltip=["step:Q", "judge:N", "p_yes:Q"]))
    if prm:
        layers.append(alt.Chart(alt.NamedData("prm")).mark_point(shape="square", size=70, filled=True).encode(
            x=x, y=alt.Y("score:Q", scale=y), color=alt.Color("prm:N", title="PRM step score"),
            tooltip=["step:Q", "prm:N", "score:Q"]))
    if labels:
        layers.append(alt.Chart(alt.NamedData("labels")).mark_point(shape="triangle-up", size=140).encode(
            x=x, y=alt.Y("y:Q", scale=y), shape=alt.Shape("annotator:N", title="human rating (+1 top, −1 bottom)"),
            tooltip=["step:Q", "annotator:N", "rating:Q", "first_error:N"]))
    chart = alt.layer(*layers).properties(height=260).resolve_scale(color="independent")
    return chart.to_dict()


def chart_spec(
    n_steps: int, selected: int, values: Sequence[dict], verdicts: Sequence[dict], labels: Sequence[dict],
    prm: Sequence[dict] = (),
) -> dict:
    """A Vega-Lite spec with this trajectory's rows (from `views.explore.chart_rows` and
    `prm_chart_rows`)."""
    spec = copy.deepcopy(_template(n_steps, bool(values), bool(verdicts), bool(labels), bool(prm)))
    spec["datasets"] = {
        "columns": [{"step": i, "left": i - 0.5, "right": i + 0.5} for i in range(n_steps)],
        "selected": [{"step": selected}],
        "values": list(values),
        "verdicts": list(verdicts),
        "labels": list(labels),
        "prm": list(prm),
    }
    return spec


def picked_step(event) -> int | None:
    """The step a chart click selected, from the chart's selection state."""
    selection = (event or {}).get("selection") or {}
    picked = selection.get(SELECTION) or []
    if picked and isinstance(picked[0], dict) and "step" in picked[0]:
        try:
            return int(picked[0]["step"])
        except (TypeError, ValueError):
            return None
    return None


def _fine(ok: bool) -> str:
    return "fine" if ok else "wrong"


def confusion_chart(confusion: Mapping[tuple[bool, bool], int], reference: str = "human") -> dict:
    """Reference (human, or an automatic source named `reference`) against automatic verdicts,
    (reference fine, automatic fine) -> steps, as a heat map."""
    rows = [{"human": _fine(h), "automatic": _fine(a), "steps": n} for (h, a), n in confusion.items()]
    return {
        "data": {"values": rows}, "height": SMALL_HEIGHT,
        "encoding": {"x": {"field": "automatic", "type": "nominal"},
                     "y": {"field": "human", "type": "nominal", "title": reference}},
        "layer": [{"mark": "rect", "encoding": {"color": {"field": "steps", "type": "quantitative"}}},
                  {"mark": {"type": "text", "fontSize": 16}, "encoding": {"text": {"field": "steps", "type": "quantitative"}}}],
    }  # fmt: skip


def calibration_chart(bins: Sequence[CalibrationBin], reference: str = "the human") -> dict:
    """Fraction the reference calls fine against the mean score, per non-empty bin with its interval."""
    rows = [{"mean score": b.mean_predicted, "fraction fine": b.fraction_positive, "low": b.ci_low, "high": b.ci_high,
             "steps": b.n} for b in bins if b.n]  # fmt: skip
    return {
        "data": {"values": rows}, "height": SMALL_HEIGHT,
        "layer": [
            {"mark": {"type": "rule", "strokeDash": [4, 4], "color": "#999"},
             "data": {"values": [{"x": 0, "y": 0, "x2": 1, "y2": 1}]},
             "encoding": {"x": {"field": "x", "type": "quantitative", "title": "mean score in bin"},
                          "y": {"field": "y", "type": "quantitative", "title": f"fraction {reference} calls fine"},
                          "x2": {"field": "x2"}, "y2": {"field": "y2"}}},
            {"mark": "rule", "encoding": {"x": {"field": "mean score", "type": "quantitative", "scale": {"domain": [0, 1]}},
                                          "y": {"field": "low", "type": "quantitative"}, "y2": {"field": "high"}}},
            {"mark": {"type": "point", "filled": True},
             "encoding": {"x": {"field": "mean score", "type": "quantitative"},
                          "y": {"field": "fraction fine", "type": "quantitative", "scale": {"domain": [0, 1]}},
                          "size": {"field": "steps", "type": "quantitative"},
                          "tooltip": [{"field": "steps", "type": "quantitative"},
                                      {"field": "fraction fine", "type": "quantitative"}]}},
        ],
    }  # fmt: skip


def position_chart(by_position: Sequence[dict]) -> dict:
    """Accuracy per step position (rows with `step`, `n`, `accuracy`)."""
    return {
        "data": {"values": list(by_position)}, "height": SMALL_HEIGHT, "mark": {"type": "bar"},
        "encoding": {"x": {"field": "step", "type": "ordinal"},
                     "y": {"field": "accuracy", "type": "quantitative", "scale": {"domain": [0, 1]}},
                     "tooltip": [{"field": "n", "type": "quantitative"}]},
    }  # fmt: skip


def best_of_n_chart(points: Sequence[CurvePoint]) -> dict:
    """Fraction solved against k (log scale) per method, with its interval band."""
    rows = [asdict(p) for p in points]
    x = {"field": "k", "type": "quantitative", "scale": {"type": "log", "base": 2},
         "axis": {"values": sorted({p.k for p in points})}}  # fmt: skip
    color = {"field": "method", "type": "nominal", "title": None}
    return {
        "data": {"values": rows}, "height": 360,
        "layer": [
            {"mark": {"type": "area", "opacity": 0.15}, "encoding": {"x": x, "y": {"field": "low", "type": "quantitative"},
                                                                       "y2": {"field": "high"}, "color": color}},
            {"mark": {"type": "line", "point": True},
             "encoding": {"x": x, "y": {"field": "value", "type": "quantitative", "title": "fraction solved",
                                        "scale": {"domain": [0, 1]}}, "color": color,
                          "tooltip": [{"field": "method"}, {"field": "k"}, {"field": "value", "format": ".3f"},
                                      {"field": "low", "format": ".3f"}, {"field": "high", "format": ".3f"},
                                      {"field": "problems"}]}},
        ],
    }  # fmt: skip


TREE_SELECTION = "node"
VALUE_COLORS = {"domain": [0, 0.5, 1], "range": ["#d62728", "#f2c744", "#2ca02c"]}  # wrong .. right


def tree_chart(nodes: Sequence[dict], edges: Sequence[dict], leaves: int) -> dict:
    """The rollout tree (rows from `core.views.tree.chart_rows`): depth across, nodes coloured by
    value (grey: no rollouts), sized by rollouts, the trajectory's path outlined and its edges
    bold; a click selects a node (parameter `node`, field `id`). Plain Vega-Lite with the rows
    inline: no Altair validation on each refresh, and nothing fetched from off the machine."""
    x = {"field": "x", "type": "quantitative", "title": "depth (steps)", "axis": {"tickMinStep": 1, "format": "d"}}
    y = {"field": "y", "type": "quantitative", "axis": None, "scale": {"reverse": True}}
    most = max([1, *(node["n"] for node in nodes)])
    return {
        # SVG: every node is an element with an aria-label (a reader, or a browser test, can find it).
        "usermeta": {"embedOptions": {"renderer": "svg"}},
        "height": max(200, min(1200, 16 * leaves)),
        "layer": [
            {"data": {"values": list(edges)}, "mark": {"type": "rule", "color": "#999"},
             "encoding": {"x": x, "y": y, "x2": {"field": "x2"}, "y2": {"field": "y2"},
                          "strokeWidth": {"condition": {"test": "datum.path", "value": 3}, "value": 1},
                          "opacity": {"condition": {"test": "datum.path", "value": 0.9}, "value": 0.4}}},
            {"data": {"values": list(nodes)}, "params": [{"name": TREE_SELECTION, "select": {
                "type": "point", "fields": ["id"], "on": "click", "clear": False}}],
             "mark": {"type": "circle", "opacity": 1, "cursor": "pointer"},
             "encoding": {
                 "x": x, "y": y,
                 "description": {"field": "label"},  # the node's aria-label
                 "size": {"field": "n", "type": "quantitative", "title": "rollouts",
                          # An explicit domain: a tree with no rollouts yet would give sizes of NaN.
                          "scale": {"type": "sqrt", "range": [60, 600], "domain": [0, most]}},
                 "color": {"condition": {"test": "datum.value === null", "value": "#bbbbbb"},
                           # `shade` is the value, -1 where there is none: Vega-Lite drops a mark whose
                           # field on a continuous scale is null, and a node without rollouts is still a node.
                           "field": "shade", "type": "quantitative", "title": "value",
                           "scale": {**VALUE_COLORS, "clamp": True}},
                 "stroke": {"condition": [{"test": "datum.selected", "value": "#1f77b4"},
                                          {"test": "datum.path", "value": "#000000"}], "value": None},
                 "strokeWidth": {"condition": [{"test": "datum.selected", "value": 4},
                                               {"test": "datum.path", "value": 2}], "value": 0},
                 "tooltip": [{"field": "id", "title": "node"}, {"field": "depth"}, {"field": "n", "title": "rollouts"},
                             {"field": "value", "format": ".2f"}, {"field": "visits", "title": "selected"},
                             {"field": "collapsed", "title": "children not shown"}, {"field": "text", "title": "step"}]}},
        ],
    }  # fmt: skip


def picked_node(event) -> int | None:
    """The node a tree-chart click selected."""
    picked = ((event or {}).get("selection") or {}).get(TREE_SELECTION) or []
    if picked and isinstance(picked[0], dict) and "id" in picked[0]:
        try:
            return int(picked[0]["id"])
        except (TypeError, ValueError):
            return None
    return None


# --- human latents (Compare) ---------------------------------------------------------------


def confidence_chart(rows: Sequence[dict]) -> dict:
    """Agreement with the automatic source (bars) and mean MC interval width (points) per confidence."""
    x = {"field": "confidence", "type": "ordinal", "title": "human confidence"}
    return {
        "data": {"values": list(rows)}, "height": SMALL_HEIGHT, "resolve": {"scale": {"y": "independent"}},
        "layer": [
            {"mark": {"type": "bar", "opacity": 0.7},
             "encoding": {"x": x, "y": {"field": "agreement", "type": "quantitative", "scale": {"domain": [0, 1]},
                                        "title": "agreement with the source"},
                          "tooltip": [{"field": "labels"}, {"field": "compared"}, {"field": "agreement", "format": ".2f"}]}},
            {"mark": {"type": "point", "filled": True, "color": "#d62728", "size": 80},
             "encoding": {"x": x, "y": {"field": "mean MC interval width", "type": "quantitative",
                                        "scale": {"domain": [0, 1]}, "axis": {"orient": "right"}}}},
        ],
    }  # fmt: skip


def dwell_chart(rows: Sequence[dict]) -> dict:
    """Disagreement with the automatic source per dwell-time bin."""
    return {
        "data": {"values": list(rows)}, "height": SMALL_HEIGHT, "mark": "bar",
        "encoding": {"x": {"field": "dwell bin", "type": "ordinal", "sort": {"field": "order"}},
                     "y": {"field": "disagreement", "type": "quantitative", "scale": {"domain": [0, 1]}},
                     "tooltip": [{"field": "labels"}, {"field": "median dwell s", "format": ".1f"}]},
    }  # fmt: skip


def category_position_chart(rows: Sequence[dict]) -> dict:
    """Error categories of -1 steps, stacked, by relative step position."""
    return {
        "data": {"values": list(rows)}, "height": SMALL_HEIGHT, "mark": "bar",
        "encoding": {"x": {"field": "position", "type": "ordinal",
                           "sort": ["first quarter", "second quarter", "third quarter", "last quarter"]},
                     "y": {"field": "steps", "type": "quantitative", "stack": True},
                     "color": {"field": "category", "type": "nominal"},
                     "tooltip": [{"field": "category"}, {"field": "steps"}]},
    }  # fmt: skip


THRESHOLD_CHART_TITLE = "ProcessBench F1 against the PRM threshold"


def threshold_chart(rows: Sequence[dict], chosen: float | None) -> dict:
    """ProcessBench F1 and its two parts against a scalar PRM's threshold, per split (rows from
    `views.prm.choose_threshold`), with the threshold chosen on the train split as a rule."""
    long = [{"threshold": r["threshold"], "split": r["split"], "measure": measure, "value": r[key]}
            for r in rows for key, measure in (("f1", "F1"), ("error_accuracy", "accuracy on erroneous"),
                                               ("correct_accuracy", "accuracy on correct"))
            if r[key] is not None]  # fmt: skip
    x = alt.X("threshold:Q", title="threshold (a step below it is wrong)", scale=alt.Scale(domain=[0, 1]))
    lines = alt.Chart(alt.Data(values=long)).mark_line(point=True).encode(
        x=x, y=alt.Y("value:Q", scale=alt.Scale(domain=[0, 1]), title=None),
        color=alt.Color("measure:N", title=None), strokeDash=alt.StrokeDash("split:N", title="problems"),
        tooltip=["threshold:Q", "split:N", "measure:N", alt.Tooltip("value:Q", format=".3f")])  # fmt: skip
    layers = [lines]
    if chosen is not None:
        layers.append(alt.Chart(alt.Data(values=[{"threshold": chosen}])).mark_rule(color="#f28e2b").encode(
            x="threshold:Q", tooltip=[alt.Tooltip("threshold:Q", title="chosen on train")]))  # fmt: skip
    return alt.layer(*layers).properties(height=300, title=THRESHOLD_CHART_TITLE).to_dict()
