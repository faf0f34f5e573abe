"""PRM verifiers (core/prm.py, the prm-score and train-prm jobs): for each family, StepScope's step
scores equal an independent computation written here (a plain forward pass and a softmax at the
tag or separator positions, the way each model's card computes them) to 1e-5; bad input fails
with one clear message and stores nothing; aggregation and weighted voting."""

from __future__ import annotations

import json
import math

import pytest
import torch

from core.errors import StepScopeError
from core.jobs.prm_score import prm_score_spec
from core.jobs.runner import EngineCache, claim_job, queue, run_job
from core.prm import aggregate, prm_format, prm_step_scores, solution_scores
from core.store import Store
from tiny_prm import build_reward_head_prm, build_tag_prm, build_token_classification_prm

TOLERANCE = 1e-5
QUESTIONS = [
    ("Tom has 3 apples and buys 5 more. How many apples does he have?", "Tom has 3 + 5 = 8 apples.\nThe answer is 8.", "8"),
    ("What is 12 * 4 - 6?", "12 * 4 = 48.\n48 - 6 = 42.\n#### 42", "42"),
    ("What is 12 * 4 - 6?", "12 * 4 = 46.\n46 - 6 = 40.\n#### 40", "42"),
]


@pytest.fixture(scope="module")
def prm_dirs(tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp("tiny-prms")
    return {
        "tag": build_tag_prm(root / "tag"),
        "token-classification": build_token_classification_prm(root / "token-classification"),
        "reward-head": build_reward_head_prm(root / "reward-head"),
    }


@pytest.fixture()
def store(tmp_path):
    store = Store.open(tmp_path / "prm.db")
    for question, solution, gold in QUESTIONS:
        problem_id = store.add_problem("prm-test", question, gold)
        answer = solution.rsplit(" ", 1)[-1].rstrip(".")
        store.add_trajectory(problem_id, solution, source="test", rule="line", final_answer=answer,
                             correct=answer == gold)  # fmt: skip
    yield store
    store.close()


def _trajectories(store):
    return [(t["id"], t["question"], [s["text"].strip() for s in store.steps(t["id"])])
            for t in store.list_trajectories(dataset="prm-test")]  # fmt: skip


def _score_with_job(store, prm_dir, family, engine_options=None, **options):
    spec = prm_score_spec(str(prm_dir), [t for t, _, _ in _trajectories(store)], family=family, name="tiny",
                          engine_options={"device": "cpu"} if engine_options is None else engine_options, **options)  # fmt: skip
    job_id, engines = queue(store, spec), EngineCache()
    try:
        status = run_job(store, claim_job(store, job_id), engines)
    finally:
        engines.drop()  # a vLLM engine's worker process ends here, not at interpreter exit
    job = store.get_job(job_id)
    assert status == "done", job["error"]
    return job_id, {t: [row["p_yes"] for row in prm_step_scores(store, t, "tiny")["tiny"]] for t, _, _ in _trajectories(store)}


def _softmax(logits):
    return torch.softmax(logits.double(), dim=-1)


# --- one independent computation per family, written the way each model card computes ----------


def test_math_shepherd_tag_scores_equal_a_plain_forward_pass(store, prm_dirs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, scored = _score_with_job(store, prm_dirs["tag"], "tag", tag=" ки")
    tokenizer = AutoTokenizer.from_pretrained(prm_dirs["tag"])
    model = AutoModelForCausalLM.from_pretrained(prm_dirs["tag"], dtype=torch.float32).eval()
    good, bad = tokenizer.encode("+", add_special_tokens=False)[0], tokenizer.encode("-", add_special_tokens=False)[0]
    tag_id = tokenizer.encode(" ки", add_special_tokens=False)[0]
    for trajectory_id, question, steps in _trajectories(store):
        # Math-Shepherd's card: question + " " + steps joined by "\n", " ки" after each; the
        # score is softmax over (+, -) of the logits at every tag position.
        ids = torch.tensor([tokenizer.encode(question + " " + "\n".join(s + " ки" for s in steps))])
        with torch.no_grad():
            logits = model(ids).logits[0]
        expected = _softmax(logits[ids[0] == tag_id][:, [good, bad]])[:, 0].tolist()
        assert len(expected) == len(steps)
        assert scored[trajectory_id] == pytest.approx(expected, abs=TOLERANCE)
    spread = [s for v in scored.values() for s in v]
    assert max(spread) - min(spread) > 0.05  # the check above is sharp: scores differ by step


def test_rlhflow_chat_turn_scores_equal_one_forward_pass_per_step(store, prm_dirs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, scored = _score_with_job(store, prm_dirs["tag"], "tag", template="chat-turns", separator="+")
    tokenizer = AutoTokenizer.from_pretrained(prm_dirs["tag"])
    model = AutoModelForCausalLM.from_pretrained(prm_dirs["tag"], dtype=torch.float32).eval()
    good, bad = tokenizer.encode("+", add_special_tokens=False)[0], tokenizer.encode("-", add_special_tokens=False)[0]
    for trajectory_id, question, steps in _trajectories(store):
        # RLHFlow's card: the conversation up to step k, then the next token of the assistant's
        # turn: one forward pass per step (StepScope does all steps in one).
        conversation, expected = [], []
        for k, step in enumerate(steps):
            conversation.append({"role": "user", "content": f"{question} {step}" if k == 0 else step})
            ids = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True)["input_ids"]  # fmt: skip
            with torch.no_grad():
                logits = model(ids).logits[0, -1]
            expected.append(_softmax(logits[[good, bad]])[0].item())
            conversation.append({"role": "assistant", "content": "+"})
        assert scored[trajectory_id] == pytest.approx(expected, abs=TOLERANCE)


def test_token_classification_scores_equal_trl_layout_forward_pass(store, prm_dirs):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    _, scored = _score_with_job(store, prm_dirs["token-classification"], None)  # family from its config
    tokenizer = AutoTokenizer.from_pretrained(prm_dirs["token-classification"])
    model = AutoModelForTokenClassification.from_pretrained(prm_dirs["token-classification"], dtype=torch.float32).eval()
    for trajectory_id, question, steps in _trajectories(store):
        # TRL's PRM trainer: [BOS] + prompt ids, then each step's ids + the separator's ids, the
        # label on the last token of each.
        ids, positions = [tokenizer.bos_token_id] + tokenizer(question, add_special_tokens=False)["input_ids"], []
        for step in steps:
            ids += tokenizer(step, add_special_tokens=False)["input_ids"] + tokenizer("\n", add_special_tokens=False)["input_ids"]
            positions.append(len(ids) - 1)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        expected = _softmax(logits[positions])[:, 1].tolist()
        assert scored[trajectory_id] == pytest.approx(expected, abs=TOLERANCE)


def test_reward_head_scores_equal_qwen_prm_computation(store, prm_dirs):
    from safetensors.torch import load_file
    from torch import nn
    from transformers import AutoConfig, AutoTokenizer, Qwen2Model

    _, scored = _score_with_job(store, prm_dirs["reward-head"], None)
    directory = prm_dirs["reward-head"]
    tokenizer = AutoTokenizer.from_pretrained(directory)
    config = AutoConfig.from_pretrained(directory)
    state = load_file(str(directory / "model.safetensors"))
    backbone = Qwen2Model(config).float().eval()
    backbone.load_state_dict({k.removeprefix("model."): v.float() for k, v in state.items() if k.startswith("model.")})
    head = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    head.load_state_dict({k.removeprefix("score."): v.float() for k, v in state.items() if k.startswith("score.")})
    step_sep_id = tokenizer.encode("<extra_0>")[0]
    for trajectory_id, question, steps in _trajectories(store):
        # Qwen2.5-Math-PRM's card: system, user, assistant = steps joined by <extra_0> and one
        # after the last; softmax over the two logits at each <extra_0>, class 1.
        messages = [
            {"role": "system", "content": "Please reason step by step, and put your final answer within \\boxed{}."},
            {"role": "user", "content": question},
            {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"},
        ]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        ids = torch.tensor([tokenizer.encode(text)])
        with torch.no_grad():
            logits = head(backbone(input_ids=ids).last_hidden_state)[0]
        expected = _softmax(logits[ids[0] == step_sep_id])[:, 1].tolist()
        assert len(expected) == len(steps)
        assert scored[trajectory_id] == pytest.approx(expected, abs=TOLERANCE)


# --- resumable, aggregated on read ----------------------------------------------------------------


def test_a_rerun_job_skips_what_it_scored_and_solutions_aggregate_on_read(store, prm_dirs):
    job_id, scored = _score_with_job(store, prm_dirs["reward-head"], None)
    count = len(store.verdict_targets_of_job(job_id))
    store.update_job(job_id, status="queued")
    assert run_job(store, claim_job(store, job_id), EngineCache()) == "done"
    assert len(store.verdict_targets_of_job(job_id)) == count  # nothing scored twice
    manifest = store.get_job(job_id)["manifest"]
    assert manifest["format_sha256"] and manifest["engine_info"]["extra"]["fingerprint"].startswith("dir:")
    for how, expected in (("min", min), ("last", lambda v: v[-1]), ("mean", lambda v: sum(v) / len(v)),
                          ("product", math.prod)):  # fmt: skip
        assert solution_scores(store, "tiny", how) == pytest.approx({t: expected(v) for t, v in scored.items()})


def test_aggregations_and_weighted_majority_vote():
    from core.metrics import weighted_majority_vote

    assert aggregate([0.9, 0.5, 0.8], "min") == 0.5
    assert aggregate([0.9, 0.5, 0.8], "last") == 0.8
    assert aggregate([0.5, 0.5], "product") == 0.25
    assert aggregate([0.2, 0.4], "mean") == pytest.approx(0.3)
    with pytest.raises(StepScopeError, match="aggregation is one of"):
        aggregate([0.5], "max")
    # Two votes for "7" weigh 0.2 together; one vote for "8" weighs 0.9: the weighted vote picks 8.
    answers, correct, weights = ["7", "7", "8"], [False, False, True], [0.1, 0.1, 0.9]
    assert weighted_majority_vote(answers, correct, weights) == 1.0
    assert weighted_majority_vote(answers, correct, [1, 1, 1]) == 0.0  # plain majority
    assert weighted_majority_vote(answers, correct, weights, k=1) == pytest.approx(1 / 3)


# --- bad input: one clear message, nothing stored -------------------------------------------------


def _fails_with(store, spec, match):
    job_id = queue(store, spec)
    assert run_job(store, claim_job(store, job_id), EngineCache()) == "failed"
    assert match in store.get_job(job_id)["error"], store.get_job(job_id)["error"]
    assert store.verdict_targets_of_job(job_id) == []


def test_a_causal_lm_is_not_a_prm(store, tiny_model_dir):
    with pytest.raises(StepScopeError, match="causal LM .* not a PRM"):
        prm_score_spec(str(tiny_model_dir), [1])
    spec = prm_score_spec(str(tiny_model_dir), [t for t, _, _ in _trajectories(store)], family="reward-head",
                          engine_options={"device": "cpu"})  # fmt: skip
    _fails_with(store, spec, "is not a reward-head PRM")


def test_a_separator_missing_from_the_tokenizer(store, tmp_path):
    no_extra = build_reward_head_prm(tmp_path / "no-extra", special=())
    spec = prm_score_spec(str(no_extra), [t for t, _, _ in _trajectories(store)], engine_options={"device": "cpu"})
    _fails_with(store, spec, "'<extra_0>' is not a token of this tokenizer")


def test_a_trajectory_longer_than_the_context_stores_nothing(store, prm_dirs):
    problem_id = store.add_problem("prm-test", "Long? " + "1 + 1 = 2. " * 200, "2")
    long_id = store.add_trajectory(problem_id, "1 + 1 = 2.\nThe answer is 2.", source="test", rule="line")
    ids = [t for t, _, _ in _trajectories(store)]
    assert ids[-1] == long_id  # the long one last: the others would be scored first if not checked up front
    spec = prm_score_spec(str(prm_dirs["reward-head"]), ids, engine_options={"device": "cpu"}, batch_size=1)
    _fails_with(store, spec, f"trajectory {long_id} is")


def test_format_options_and_presets(prm_dirs):
    qwen = prm_format(preset="qwen2.5-math-prm-7b")
    assert (qwen.family, qwen.separator, qwen.template) == ("reward-head", "<extra_0>", "chat-assistant")
    shepherd = prm_format(preset="math-shepherd-prm")
    assert (shepherd.family, shepherd.tag_token, shepherd.good, shepherd.bad) == ("tag", "ки", "+", "-")
    assert prm_format("tag", preset="math-shepherd-prm", separator=" X").separator == " X"
    with pytest.raises(StepScopeError, match="PRM family is one of"):
        prm_format("regression")
    with pytest.raises(StepScopeError, match="say which PRM family"):
        prm_format()


# --- training a PRM from the store (SORM) ---------------------------------------------------------


@pytest.fixture()
def labelled_store(tmp_path):
    """Six problems, two solutions each; every step has two rollouts: from a step of the right
    solution one reaches the gold answer (MC hard label 1), from the wrong one's none does."""
    store = Store.open(tmp_path / "sorm.db")
    for i in range(6):
        problem_id = store.add_problem("sorm-test", f"What is {i} + 13 then times 2?", str(2 * (13 + i)))
        for right in (True, False):
            total = 13 + i if right else 14 + i
            solution = f"{i} + 13 = {total}.\n{total} * 2 = {2 * total}.\nThe answer is {2 * total}."
            trajectory_id = store.add_trajectory(problem_id, solution, source="test", rule="line",
                                                 final_answer=str(2 * total), correct=right)  # fmt: skip
            rollouts = []
            for step in store.steps(trajectory_id):
                for n in range(2):  # a wrong first step makes every step of the solution wrong
                    rollouts.append({"step_id": step["id"], "text": "x", "correct": right and n == 0, "model": "tiny"})
            store.add_rollouts(rollouts)
    yield store
    store.close()


def test_train_prm_end_to_end_and_its_folder_scores_as_a_token_classification_prm(labelled_store, tiny_model_dir, tmp_path):
    from cli_runner import run_cli

    db, output = str(labelled_store.path), tmp_path / "sorm"
    common = ("--db", db, "--dataset", "sorm-test")
    result = run_cli("train-prm", "--base", str(tiny_model_dir), "--labels", "mc-hard", "--epochs", "2",
                     "--batch-size", "4", "--output", str(output), "--device", "cpu", *common,
                     env={"OMP_NUM_THREADS": "1"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "held-out step AUROC" in result.stdout
    manifest = json.loads((output / "manifest.json").read_text())
    split = manifest["split"]
    # The split is core.splits' (by problem, from meta or question hash), the test side held out.
    assert set(split["train_problems"]).isdisjoint(split["test_problems"]) and split["test_problems"]
    assert manifest["metrics"]["heldout_steps"] and not set(split["train_trajectories"]) & set(split["test_trajectories"])
    assert manifest["data_hash"] and manifest["training"]["steps"] > 0 and any((output / "checkpoints").iterdir())
    # A rerun resumes from its checkpoint (same data), and the folder is a family-2 PRM.
    result = run_cli("train-prm", "--base", str(tiny_model_dir), "--labels", "mc-hard", "--epochs", "2",
                     "--batch-size", "4", "--output", str(output), "--device", "cpu", *common)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_cli("prm", "score", "--prm", str(output), "--device", "cpu", *common)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "AUROC vs final-answer correctness" in result.stdout
    store = Store.open(db)
    [judge] = [j for j in store.judges() if j.startswith("prm:")]
    scores = solution_scores(store, judge, "min")
    assert len(scores) == 12 and all(0 < s < 1 for s in scores.values())


def test_mc_agree_keeps_the_steps_where_mc_and_a_judge_agree(labelled_store):
    from core.prm_training import step_labels

    store = labelled_store
    rows, agree, compared = [], 0, 0
    for t in store.list_trajectories(dataset="sorm-test"):
        for value in store.step_values(t["id"]):
            p_yes = 0.9 if value["step_id"] % 3 else 0.1  # a judge that agrees on two steps in three
            rows.append({"step_id": value["step_id"], "judge": "j", "kind": "step", "p_yes": p_yes})
            compared += 1
            agree += (p_yes >= 0.5) == value["hard"]
    store.add_verdicts(rows)
    labels = step_labels(store, [t["id"] for t in store.list_trajectories(dataset="sorm-test")], "mc-agree", judge="j")
    assert labels.compared == compared and labels.kept_fraction == pytest.approx(agree / compared)
    assert sum(len(v) for v in labels.by_trajectory.values()) == agree
    with pytest.raises(StepScopeError, match="no step verdicts"):
        step_labels(store, [t["id"] for t in store.list_trajectories(dataset="sorm-test")], "mc-agree", judge="none")


# --- vLLM in-process and served: agree with transformers -----------------------------------------

# vLLM computes in bf16 on the CPU (transformers here in fp32): a step score of the tiny models
# moved by up to ~3e-3 between the two when measured; 0.02 leaves room and still fails a wrong
# position (scores of neighbouring steps differ by more).
VLLM_TOLERANCE = 0.02


def _transformers_scores(prm_dir, family, store):
    from core.engines.prm import load_prm_engine
    from core.prm import build_input, readout_for, scores_from_logits

    fmt = prm_format(family)
    engine = load_prm_engine("transformers", str(prm_dir), family=family, device="cpu")
    readout = readout_for(fmt, engine.tokenizer)
    inputs = [build_input(fmt, engine.tokenizer, q, steps) for _, q, steps in _trajectories(store)]
    return [scores_from_logits(rows, readout)[0] for rows in engine.position_logits(inputs, readout)]


# Without vLLM: skipped, or failed where the run requires it (CI: tests/required.py).
@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_in_process_reward_head_agrees_with_transformers(store, prm_dirs):
    expected = _transformers_scores(prm_dirs["reward-head"], "reward-head", store)
    _, scored = _score_with_job(store, prm_dirs["reward-head"], None, engine="vllm", engine_options={})
    for got, want in zip(scored.values(), expected):
        assert got == pytest.approx(want, abs=VLLM_TOLERANCE)


@pytest.mark.vllm
@pytest.mark.slow
def test_served_reward_head_agrees_with_transformers_over_two_urls(store, prm_dirs):
    from transformers import AutoTokenizer
    from vllm_server import vllm_server

    expected = _transformers_scores(prm_dirs["reward-head"], "reward-head", store)
    # As vLLM serves Qwen2.5-Math-PRM by default: STEP pooling at the <extra_0> token only.
    step_tag_id = AutoTokenizer.from_pretrained(prm_dirs["reward-head"]).convert_tokens_to_ids("<extra_0>")
    pooler = json.dumps({"tok_pooling_type": "STEP", "step_tag_id": step_tag_id})
    # A generous start-up limit: on 2 cores shared with other jobs the server took over 180 s.
    with vllm_server(prm_dirs["reward-head"], "tiny-prm", timeout_s=600, max_model_len=256,
                     extra_args=("--runner", "pooling", "--pooler-config", pooler)) as server:
        spec = prm_score_spec("tiny-prm", [t for t, _, _ in _trajectories(store)], family="reward-head", name="tiny",
                              engine="server", batch_size=1,
                              engine_options={"base_urls": [server.base_url, server.root_url],
                                              "tokenizer": str(prm_dirs["reward-head"])})  # fmt: skip
        job_id = queue(store, spec)
        assert run_job(store, claim_job(store, job_id), EngineCache()) == "done", store.get_job(job_id)["error"]
    for (t, _, _), want in zip(_trajectories(store), expected):
        got = [row["p_yes"] for row in prm_step_scores(store, t, "tiny")["tiny"]]
        assert got == pytest.approx(want, abs=VLLM_TOLERANCE)


def test_the_old_consensus_training_labels_are_refused_with_their_new_name(labelled_store):
    """'consensus' names annotators who agree (core.formats.labels); PRM training's MC-and-judge
    agreement is 'mc-agree', and the old spelling says so instead of meaning something else."""
    from core.prm_training import step_labels

    ids = [t["id"] for t in labelled_store.list_trajectories(dataset="sorm-test")]
    with pytest.raises(StepScopeError, match="now called 'mc-agree'"):
        step_labels(labelled_store, ids, "consensus", judge="j")
    with pytest.raises(StepScopeError, match="need a judge or PRM"):
        step_labels(labelled_store, ids, "mc-agree")
