"""End to end (issue 24, items 5 and 6): a real `streamlit run app.py` under headless Chromium on a
store shaped like GSM8K's model solutions: 1,319 problems x (4 model solutions + the reference) =
6,595 trajectories, built before the server starts through the batch import path
(core.formats.import_file), with an outcome judge on every model solution, MC rollouts and a step
judge on the first 40, two policy solutions of one problem, and no human label at all.

- Best-of-N reranks the imported solutions (chosen in the picker over the policy's own);
- Compare measures the step judge against MC hard without any human label;
- a deep link to trajectory 6,000 opens it (not the first of the 300 listed).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from e2e_server import choose, chromium, settle, streamlit_server
from test_any_source import IMPORTED, OUTCOME_JUDGE, POLICY, STEP_JUDGE, add_step_sources, imported_store

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ARTIFACTS = Path(__file__).parent / "artifacts"
LOAD_TIMEOUT = 120_000  # ms: the first run imports the scientific stack on a busy 2-core box
PROBLEMS = 1319  # GSM8K's test split, as in OpenAI's example_model_solutions.jsonl
LINKED = 6000


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    ARTIFACTS.mkdir(exist_ok=True)
    db = tmp_path_factory.mktemp("e2e-any-source") / "any-source.db"
    store = imported_store(db, problems=PROBLEMS)
    written = add_step_sources(store, 40)
    problem = store.add_problem("own", "What is 2 + 2?", "4")
    for i, answer in enumerate(("4", "5")):
        store.add_trajectory(problem, f"Try {i}: 2 + 2 = {answer}.", source="policy", model="pol",
                             final_answer=answer, correct=answer == "4")  # fmt: skip
    facts = {
        "trajectories": store.count_trajectories(),
        "linked_question": store.get_trajectory(LINKED)["question"],
        "both": sum(1 for step in written["mc"] if step in written["judge"]),
    }
    store.close()
    env = {"STEPSCOPE_DEFAULT_POLICY": POLICY}
    with streamlit_server(db, env=env, log=ARTIFACTS / "e2e-any-source-server.log") as url:
        with chromium() as browser:
            yield url, browser, facts


@pytest.fixture
def page(app):
    _, browser, _ = app
    context = browser.new_context(viewport={"width": 1400, "height": 1600})
    page = context.new_page()
    yield page
    context.close()


def expect(locator):
    """Playwright's web-first assertions (they wait for the condition), imported where used as the
    browser itself is (tests/e2e_server.py), so collecting this module needs no browser."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def test_a_deep_link_opens_trajectory_6000_of_6595(app, page):
    url, _, facts = app
    assert facts["trajectories"] == 6595 + 2
    try:
        page.goto(url + f"/?trajectory={LINKED}")
        page.get_by_text(f"trajectory #{LINKED} · dataset gsm8k").wait_for(timeout=LOAD_TIMEOUT)
        settle(page)
        assert facts["linked_question"] in page.inner_text("main")
        # The picker lists the first 300 and shows the linked one as chosen.
        page.get_by_text("Trajectory (6,597 match; the first 300 listed)").wait_for(timeout=30_000)
        expect(page.get_by_role("combobox", name=re.compile(r"^Trajectory \("))).to_have_value(
            re.compile(rf"^#{LINKED} · {IMPORTED} · correct|^#{LINKED} · {IMPORTED} · wrong"), timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "any-source-deep-link.png"), full_page=True)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "any-source-deep-link-failed.png"), full_page=True)
        raise


def test_b_best_of_n_reranks_imported_solutions(app, page):
    url, _, _ = app
    try:
        page.goto(url + "/best_of_n")
        page.get_by_text("Solutions").first.wait_for(timeout=LOAD_TIMEOUT)
        settle(page)
        # The policy's own set comes first; its two solutions have no outcome judge.
        expect(page.get_by_role("combobox", name="Solutions")).to_have_value("policy · pol (1 problem, 2 solutions)")
        assert page.get_by_text(f"best-of-k: {OUTCOME_JUDGE}").count() == 0
        imported = f"{IMPORTED} · every model (1,319 problems, 5,276 solutions)"
        choose(page, "Solutions", imported)
        page.get_by_text("1319 problems with at least 4 solutions each; k up to 4.").wait_for(timeout=120_000)
        page.get_by_text(f"{OUTCOME_JUDGE} — judge").first.wait_for(timeout=30_000)  # the verifier picker
        page.locator("[data-testid='stVegaLiteChart']").first.wait_for(timeout=30_000)
        table = page.locator("[data-testid='stDataFrame']").first
        table.wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "any-source-best-of-n.png"), full_page=True)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "any-source-best-of-n-failed.png"), full_page=True)
        raise


def test_c_compare_a_judge_against_mc_hard_without_human_labels(app, page):
    url, _, facts = app
    try:
        page.goto(url + "/compare")
        page.get_by_text("No human labels yet").wait_for(timeout=LOAD_TIMEOUT)
        settle(page)
        choose(page, "Automatic labels", f"judge:{STEP_JUDGE}")
        choose(page, "Reference labels", "mc-hard")
        metric = page.locator("[data-testid='stMetric']").filter(has_text="Steps compared")
        metric.locator("[data-testid='stMetricValue']").filter(
            has_text=re.compile(rf"^\s*{facts['both']}\s*$")).wait_for(timeout=60_000)
        for label in ("Accuracy", "Cohen's kappa", "AUROC"):
            value = page.locator("[data-testid='stMetric']").filter(has_text=label).first
            assert re.search(r"\d\.\d\d", value.locator("[data-testid='stMetricValue']").inner_text()), label
        assert page.get_by_text("the unit is a step both sources labelled").count() == 1
        page.get_by_role("heading", name=re.compile(r"Disagreements \(\d+\)")).wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "any-source-compare.png"), full_page=True)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "any-source-compare-failed.png"), full_page=True)
        raise
