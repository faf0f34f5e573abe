"""Every job kind's spec survives the trip through the stored job row, old rows still load, and
every manifest records the step splitter its per-step results depend on."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from core.engines.base import SamplingParams
from core.jobs.estimate import EstimateSpec
from core.jobs.generate import GenerateSpec
from core.jobs.judge import JudgeSpec, ProbeJudgeSpec
from core.jobs.orm_score import OrmScoreSpec
from core.jobs.prm_score import prm_score_spec
from core.jobs.train_orm import TrainOrmSpec
from core.jobs.registry import KINDS, spec_of
from core.jobs.runner import queue
from core.jobs.search import SearchSpec
from core.jobs.split import SplitSpec
from core.jobs.train_prm import TrainPrmSpec
from core.jobs.train_verifier import TrainVerifierSpec
from core.jobs.tree_search import TreeSearchSpec
from core.mcpe import Adaptive, FirstErrorSearch, FixedN
from core.search.config import SearchConfig
from core.store import Store

# The two trajectories are split by different rules, so a manifest that records one splitter
# for both (or none) is caught.
SOLUTIONS = [("6 * 4 = 24.\nThen 24 - 4 = 20.\nThe answer is 20.", "line"),
             ("First 6 * 4 = 24. Then 24 - 4 = 20. The answer is 20.", "sentence")]  # fmt: skip


@pytest.fixture
def store(tmp_path) -> Store:
    store = Store.open(tmp_path / "specs.db")
    problem = store.add_problem("specs-test", "What is 6 * 4 - 4?", "20")
    for solution, rule in SOLUTIONS:
        store.add_trajectory(problem, solution, source="test", rule=rule)
    return store


def trajectory_ids(store: Store) -> tuple[int, ...]:
    return tuple(t["id"] for t in store.list_trajectories())


def a_probe(folder: Path) -> str:
    """A saved probe verifier (a constant model: what it predicts does not matter here)."""
    from core.probes import ConstantProbe, save_probe

    manifest = {"base": "smollm2-135m", "judge": "probe:outcome@smollm2-135m", "kind": "outcome"}
    return str(save_probe(folder, ConstantProbe(0.5), manifest, {}).folder.resolve())


def an_orm(folder: Path) -> str:
    """A fine-tuned ORM's folder as far as queueing reads it: its manifest."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"verifier": "orm-finetune", "base": "random-init:tiny", "judge": "orm:random-init:tiny", "fingerprint": "f"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return str(folder.resolve())


# One spec per kind, every field away from its default where the kind uses it.
def specs(store: Store, tmp_path: Path) -> dict[str, list]:
    ids = trajectory_ids(store)
    sampling = SamplingParams(n=1, max_new_tokens=40, temperature=0.9, top_p=0.95, stop=("\n\n",), seed=3)
    return {
        "estimate": [
            EstimateSpec(policy="tiny", trajectory_ids=ids, strategy=FixedN(24), sampling=sampling, rows_per_call=16),
            EstimateSpec(policy="tiny", trajectory_ids=ids, strategy=Adaptive(round_size=8, max_per_step=32, width=0.2,
                         threshold=0.25), engine="vllm", engine_options={"kv_cache_gib": 2}),  # fmt: skip
            EstimateSpec(policy="tiny", trajectory_ids=ids[:1], strategy=FirstErrorSearch(round_size=2, max_per_step=48)),
        ],
        "generate": [GenerateSpec(policy="tiny", problem_ids=(1,), k=7, sampling=sampling, splitter="sentence")],
        "judge": [
            JudgeSpec(judge="tiny", verdict="step", trajectory_ids=ids, chat=True, targets_per_call=3, name="j",
                      template="judge_step"),
            JudgeSpec(judge="tiny", verdict="outcome", mode="generative", trajectory_ids=ids, samples=6,
                      max_new_tokens=64, temperature=1.1, seed=9),
            JudgeSpec(judge="tiny", verdict="critic", trajectory_ids=ids[1:]),
        ],
        "probe-judge": [ProbeJudgeSpec(verifier=a_probe(tmp_path / "verifiers" / "p"), trajectory_ids=ids)],
        "prm-score": [
            prm_score_spec("qwen2.5-math-prm-7b", ids, engine="server", batch_size=3, name="p",
                           engine_options={"base_urls": ["http://127.0.0.1:9/v1"]}),
            prm_score_spec("owner/some-prm", ids[:1], family="tag", template="chat-turns", separator="+"),
        ],
        "train-prm": [TrainPrmSpec(base="tiny", labels="mc-agree", judge="prm:p", trajectory_ids=ids, output="o",
                                   epochs=1.5, learning_rate=1e-4, batch_size=2, heldout_fraction=0.3, seed=2,
                                   lora=True, label_policy="tiny")],
        "train-orm": [TrainOrmSpec(base="random-init:tiny", trajectory_ids=ids, output="o", context="policy-prompt",
                                   epochs=1.5, learning_rate=1e-4, batch_size=2, test_fraction=0.3, seed=2, lora=True)],
        "orm-score": [OrmScoreSpec(verifier=an_orm(tmp_path / "orms" / "o"), trajectory_ids=ids)],
        "train-verifier": [TrainVerifierSpec(base="tiny", labels="mc-soft", trajectory_ids=ids, layer=1,
                                             context="policy", folds=3, seed=4, label_policy="tiny")],
        "tree-search": [TreeSearchSpec(policy="tiny", trajectory_id=ids[0], budget=32, k=4, alpha=0.4, c_puct=0.2,
                                       sampling=sampling),
                        TreeSearchSpec(policy="tiny", trajectory_id=ids[1], mode="expand", depth=2, k=3)],
        "search": [SearchSpec(policy="tiny", problem_ids=(1,), scorer="mc:3", template="policy_fewshot",
                              config=SearchConfig("mcts", n=6, beam_width=3, max_steps=5, temperature=0.6, top_p=0.9,
                                                  seed=8, step_delimiter="e", solution_stops=("Q",), max_step_tokens=9,
                                                  max_solution_tokens=99, token_budget=500, threshold=0.3,
                                                  max_resamples=2, expansions=7, c_puct=0.5, rollout_weight=0.2)),
                   SearchSpec(policy="tiny", problem_ids=(1,), engine="vllm")],
        "split": [SplitSpec(model="tiny", trajectory_ids=ids, chunk_chars=300, chat=True, max_new_tokens=20,
                            move_labels=True, chunks_per_call=2)],
    }  # fmt: skip


def test_every_kind_is_covered(store, tmp_path):
    assert set(specs(store, tmp_path)) == set(KINDS)


def as_recorded(spec):
    """A judge spec comes back naming the template it resolved to: the kind's default when it asked
    for none (None), and the critic's mode as generative, which the critic always is."""
    if isinstance(spec, JudgeSpec):
        template = spec.judge_template()
        return replace(spec, template=template.name, mode=template.mode)
    return spec


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_queued_spec_is_the_spec_the_runner_rebuilds(kind, store, tmp_path):
    for spec in specs(store, tmp_path)[kind]:
        job = store.get_job(queue(store, spec))
        assert job["kind"] == kind
        rebuilt = spec_of(job)
        assert rebuilt == as_recorded(spec)
        assert rebuilt.to_manifest(store) | {"code_version": None} == job["manifest"] | {"code_version": None}
        # Rebuilding from a rebuilt spec changes nothing either (nothing drifts across retries).
        assert spec_of({**job, "manifest": rebuilt.to_manifest(store)}) == rebuilt


# Kinds that read steps of stored trajectories; generate, tree search and search record the one
# splitter they cut new text with ("splitter").
ONE_SPLITTER = {"generate", "tree-search", "search"}


@pytest.mark.parametrize("kind", sorted(set(KINDS) - ONE_SPLITTER))
def test_the_manifest_records_the_step_splitters(kind, store, tmp_path):
    for spec in specs(store, tmp_path)[kind]:
        manifest = store.get_job(queue(store, spec))["manifest"]
        rules = {rule for (_, rule), t in zip(SOLUTIONS, trajectory_ids(store)) if t in spec.trajectory_ids}
        assert manifest["splitters"] == sorted(rules), (kind, manifest)


def test_a_tree_search_manifest_records_its_trajectory_splitter(store, tmp_path):
    for spec, (_, rule) in zip(specs(store, tmp_path)["tree-search"], SOLUTIONS):
        assert store.get_job(queue(store, spec))["manifest"]["splitter"] == rule


def test_a_generate_manifest_records_the_splitter_it_will_use(store, tmp_path):
    [spec] = specs(store, tmp_path)["generate"]
    assert store.get_job(queue(store, spec))["manifest"]["splitter"] == "sentence"


def test_manifests_written_before_the_specs_still_load(store, tmp_path):
    every = specs(store, tmp_path)
    # An estimate strategy described with make_strategy's old name for N.
    for spec in every["estimate"]:
        manifest = spec.to_manifest(store)
        strategy = dict(manifest["strategy"])
        strategy["max_per_step"] = strategy.pop("n")
        old = store.create_job("estimate", {**manifest, "strategy": strategy})
        assert spec_of(store.get_job(old)) == as_recorded(spec)
    # Probe judging stored as a mode of "judge", before it had a kind of its own.
    [probe] = every["probe-judge"]
    old = store.create_job("judge", probe.to_manifest(store))
    assert store.get_job(old)["kind"] == "judge"
    assert spec_of(store.get_job(old)) == probe
