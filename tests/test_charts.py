"""The app's charts (core/views/charts.py): each spec is valid Vega-Lite and carries the rows it
was given. Streamlit draws whatever spec it gets, and a bad one only shows in the browser."""

from __future__ import annotations

import pytest
from jsonschema import ValidationError
from altair.vegalite.v6.schema.core import TopLevelSpec

from core import metrics
from core.views.best_of_n import Sample, curves
from core.views.charts import best_of_n_chart, calibration_chart, chart_spec, confusion_chart, position_chart


def valid(spec: dict) -> dict:
    TopLevelSpec.validate(spec)
    return spec


def test_a_bad_spec_is_caught():
    with pytest.raises(ValidationError, match="bars"):
        valid({**position_chart([]), "mark": {"type": "bars"}})


def test_confusion_has_one_cell_per_human_and_automatic_pair():
    spec = valid(confusion_chart({(True, True): 5, (True, False): 2, (False, False): 1}))
    assert spec["data"]["values"] == [
        {"human": "fine", "automatic": "fine", "steps": 5}, {"human": "fine", "automatic": "wrong", "steps": 2},
        {"human": "wrong", "automatic": "wrong", "steps": 1},
    ]  # fmt: skip


def test_calibration_draws_only_bins_with_steps():
    bins, _ = metrics.calibration_bins([0.05, 0.08, 0.9, 0.95, 0.92], [False, True, True, True, False], n_bins=10)
    spec = valid(calibration_chart(bins))
    rows = spec["data"]["values"]
    assert [row["steps"] for row in rows] == [2, 3]  # 8 empty bins left out
    assert rows[1]["fraction fine"] == pytest.approx(2 / 3) and rows[1]["low"] < 2 / 3 < rows[1]["high"]


def test_position_chart_keeps_the_rows():
    rows = [{"step": 0, "n": 4, "accuracy": 0.75}, {"step": 1, "n": 2, "accuracy": 0.5}]
    assert valid(position_chart(rows))["data"]["values"] == rows


def test_best_of_n_has_every_method_and_k_on_the_axis():
    def solutions(correct: list[bool]) -> list[Sample]:
        return [Sample(i, str(i % 2), ok, {"judge": 0.9 if ok else 0.2}) for i, ok in enumerate(correct)]

    points, largest = curves({1: solutions([True, False, False, False]), 2: solutions([False, True, True, False])})
    spec = valid(best_of_n_chart(points))
    assert largest == 4 and spec["layer"][0]["encoding"]["x"]["axis"]["values"] == [1, 2, 4]
    rows = spec["data"]["values"]
    assert {row["method"] for row in rows} == {"pass@k", "majority vote", "best-of-k: judge"}
    assert len(rows) == len(points) and all(set(row) == {"method", "k", "value", "low", "high", "problems"} for row in rows)
    best = {row["k"]: row["value"] for row in rows if row["method"] == "best-of-k: judge"}
    assert best[4] == 1.0  # the judge ranks the right solutions first


def test_explore_chart_is_valid_vega_lite():
    values = [{"step": 0, "value": 0.5, "low": 0.1, "high": 0.9, "n": 2}]
    verdicts = [{"step": 1, "judge": "j", "p_yes": 0.3}]
    labels = [{"step": 0, "annotator": "a", "rating": 1, "y": 1.0, "first_error": "no"}]
    valid(chart_spec(2, 1, values, verdicts, labels))
    valid(chart_spec(3, 0, [], [], []))
