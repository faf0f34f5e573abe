"""The Explore chart: MC value per step with its interval band, judge P(yes) and human ratings.

Defined in Altair, but built once per shape (number of steps, which layers are present) with
named datasets, and filled with each trajectory's rows as plain Vega-Lite: building and
validating the Altair objects takes most of a second, filling the spec a millisecond.

Clicking a step's column selects it: the selection parameter is `pick`, over the field `step`.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Sequence

import altair as alt

SELECTION = "pick"


@lru_cache(maxsize=256)
def _template(n_steps: int, values: bool, verdicts: bool, labels: bool) -> dict:
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
    if labels:
        layers.append(alt.Chart(alt.NamedData("labels")).mark_point(shape="triangle-up", size=140).encode(
            x=x, y=alt.Y("y:Q", scale=y), shape=alt.Shape("annotator:N", title="human rating (+1 top, −1 bottom)"),
            tooltip=["step:Q", "annotator:N", "rating:Q", "first_error:N"]))
    chart = alt.layer(*layers).properties(height=260).resolve_scale(color="independent")
    return chart.to_dict()


def chart_spec(
    n_steps: int, selected: int, values: Sequence[dict], verdicts: Sequence[dict], labels: Sequence[dict]
) -> dict:
    """A Vega-Lite spec with this trajectory's rows (from `explore_view.chart_rows`)."""
    spec = copy.deepcopy(_template(n_steps, bool(values), bool(verdicts), bool(labels)))
    spec["datasets"] = {
        "columns": [{"step": i, "left": i - 0.5, "right": i + 0.5} for i in range(n_steps)],
        "selected": [{"step": selected}],
        "values": list(values),
        "verdicts": list(verdicts),
        "labels": list(labels),
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
