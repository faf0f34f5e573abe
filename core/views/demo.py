"""A demo study for a first visit: one click queues the jobs that fill Compare and Best-of-N from
the sample set and the sidebar's policy (the embedded SmolLM2 by default), so the pages show what
they are for before a user has data of their own. The results are computed by the real jobs, on
this machine, like any other; nothing is bundled.

- Compare: Monte Carlo values (fixed N) and the policy's own step verdicts (P(Yes)) on the
  hand-written sample solutions (three of which carry a deliberate error): the judge against MC
  labels, no human labels needed.
- Best-of-N: DEMO_SAMPLES solutions per sample problem from the policy: pass@k and majority vote
  as soon as they are graded; verifier curves once an outcome judge has scored them.
"""

from __future__ import annotations

from dataclasses import replace

from core.errors import StepScopeError
from core.mcpe import FixedN
from core.sample_solutions import SOURCE as SAMPLE_SOURCE
from core.store import SAMPLE_DATASET, Store
from core.views.jobs import EstimateRequest, queue_estimate, queue_generate, queue_judges

DEMO_ROLLOUTS = 8  # MC rollouts per step: enough to tell 0 from "sometimes", a few minutes on a CPU
DEMO_SAMPLES = 8  # solutions per sample problem: pass@k and maj@k up to k = 8


def sample_trajectory_ids(store: Store) -> list[int]:
    return [row["id"] for row in store.list_trajectories(dataset=SAMPLE_DATASET, source=SAMPLE_SOURCE)]


def queue_compare_demo(store: Store, request: EstimateRequest) -> list[int]:
    """MC values and the policy's step verdicts on the hand-written sample solutions; job ids."""
    ids = sample_trajectory_ids(store)
    if not ids:
        raise StepScopeError("this database has no sample solutions (a new database file gets them)")
    estimate = queue_estimate(store, replace(request, strategy=FixedN.name, n=DEMO_ROLLOUTS), ids)
    return [estimate, *queue_judges(store, [request.policy], ["step"], ids, engine=request.engine,
                                    engine_options=request.engine_options)]  # fmt: skip


def queue_best_of_n_demo(store: Store, request: EstimateRequest) -> list[int]:
    """DEMO_SAMPLES solutions per sample problem from the policy; job ids."""
    return [queue_generate(store, request, SAMPLE_DATASET, DEMO_SAMPLES)]
