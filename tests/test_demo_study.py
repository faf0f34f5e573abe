"""The first visit's demo study (issue 24): on a fresh database Compare and Best-of-N offer one
click that queues the real jobs filling them (core/views/demo.py); a viewer is not offered it."""

from __future__ import annotations

from test_access_pages import signed_in, store  # noqa: F401 - the fixture too: a remote viewer's store
from test_app_pages import db, no_exceptions, page, seeded  # noqa: F401 - the same page runner and fixture

from core.store import SAMPLE_DATASET
from core.views.demo import DEMO_ROLLOUTS, DEMO_SAMPLES, sample_trajectory_ids


def demo_button(at):
    return [b for b in at.button if b.label.startswith("Fill a demo study")]


def test_compares_demo_queues_mc_values_and_the_policys_step_verdicts_on_the_sample_solutions(db, tiny_model_dir):
    store = seeded(db)
    at = page("compare", db, policy_model=str(tiny_model_dir))
    at.run()
    no_exceptions(at)
    [button] = demo_button(at)
    button.click().run()
    no_exceptions(at)
    assert any("queued" in s.value for s in at.success), [e.value for e in at.error]
    jobs = {job["kind"]: job["manifest"] for job in store.list_jobs()}
    ids = sample_trajectory_ids(store)
    assert set(jobs) == {"estimate", "judge"} and len(ids) == 10
    assert jobs["estimate"]["trajectory_ids"] == ids and jobs["estimate"]["policy"] == str(tiny_model_dir)
    assert jobs["estimate"]["strategy"] == {"strategy": "fixed", "n": DEMO_ROLLOUTS}
    assert jobs["judge"]["kind"] == "step" and jobs["judge"]["model"] == str(tiny_model_dir)
    assert jobs["judge"]["trajectory_ids"] == ids


def test_best_of_ns_demo_queues_solutions_to_every_sample_problem(db, tiny_model_dir):
    store = seeded(db)
    at = page("best_of_n", db, policy_model=str(tiny_model_dir))
    at.run()
    no_exceptions(at)
    demo_button(at)[0].click().run()
    no_exceptions(at)
    [job] = store.list_jobs()
    problems = [p["id"] for p in store.list_problems(dataset=SAMPLE_DATASET)]
    assert job["kind"] == "generate" and job["manifest"]["k"] == DEMO_SAMPLES
    assert job["manifest"]["problem_ids"] == problems


def test_a_viewer_is_not_offered_a_demo_study(store):
    for name in ("compare", "best_of_n"):
        at = signed_in(store, f"viewer-{name}", "viewer", name)
        at.run()
        assert not at.exception and not demo_button(at)
    assert store.list_jobs() == []
