"""End to end (issue 11): a PRM's verdicts in a real `streamlit run app.py` under headless Chromium.

The database is prepared before the server starts: a real prm-score job of a tiny PRM on
trajectory 1 (Explore), human labels and PRM step verdicts on problems on both sides of the
split (Compare), and scored policy samples (Best-of-N), as in tests/test_prm_pages.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e_server import chromium, streamlit_server
from test_prm_pages import PRM, PRM_SOURCE, add_scored_samples, compare_store

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ARTIFACTS = Path(__file__).parent / "artifacts"
LOAD_TIMEOUT = 120_000  # ms: the first run imports the scientific stack on a busy box


def prepare(db: Path, prm_dir: Path) -> None:
    from core.jobs.prm_score import prm_score_spec
    from core.jobs.runner import EngineCache, claim_job, queue, run_job

    store = compare_store(db)
    spec = prm_score_spec(str(prm_dir), [1], family="token-classification", name=PRM, engine_options={"device": "cpu"})
    job_id = queue(store, spec)
    assert run_job(store, claim_job(store, job_id), EngineCache()) == "done", store.get_job(job_id)["error"]
    add_scored_samples(store)
    store.close()


def test_a_prm_appears_in_explore_compare_and_best_of_n(tmp_path, one_torch_thread):
    from tiny_prm import build_token_classification_prm

    ARTIFACTS.mkdir(exist_ok=True)
    db = tmp_path / "data" / "e2e-prm.db"
    db.parent.mkdir()
    prepare(db, build_token_classification_prm(tmp_path / "prm"))
    with streamlit_server(db, log=ARTIFACTS / "e2e-prm-server.log") as url, chromium() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 1600})
        page = context.new_page()
        try:
            page.goto(url + "/?trajectory=1&step=0")
            page.get_by_text(f"{PRM}: PRM score").first.wait_for(timeout=LOAD_TIMEOUT)  # a step card
            page.screenshot(path=str(ARTIFACTS / "prm-explore.png"), full_page=True)

            page.goto(url + "/compare")
            page.get_by_text("Automatic labels").wait_for(timeout=LOAD_TIMEOUT)  # mc-soft has no values here: the page stops
            page.locator("[data-testid='stSelectbox']").filter(has_text="Automatic labels").click()
            page.get_by_role("option", name=PRM_SOURCE, exact=True).click()
            page.get_by_role("heading", name=f"Threshold for {PRM_SOURCE}").wait_for(timeout=60_000)
            page.get_by_text("Chosen threshold (train problems)").wait_for(timeout=30_000)
            section = page.locator("[data-testid='stVerticalBlock']").filter(
                has=page.get_by_role("heading", name=f"Threshold for {PRM_SOURCE}")).last
            section.locator("[data-testid='stVegaLiteChart']").first.wait_for(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "prm-compare.png"), full_page=True)

            page.goto(url + "/best_of_n")
            page.get_by_text("PRM aggregation").wait_for(timeout=LOAD_TIMEOUT)
            page.get_by_text(f"{PRM} · min").first.wait_for(timeout=60_000)  # the verifier picker
            page.locator("[data-testid='stVegaLiteChart']").first.wait_for(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "prm-best-of-n.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "prm-failed.png"), full_page=True)
            raise
        finally:
            context.close()
