"""Judge verdicts on real models and a real SQLite file: P(Yes) with its mass, critic parsing, jobs."""

from __future__ import annotations

import hashlib
import json
import math
from importlib import resources
from pathlib import Path

import pytest

from cli_runner import run_cli
from core.engines import load_engine
from core.errors import StepScopeError
from core.jobs.runner import EngineCache, claim_job, run_job
from core.jobs.judge import JudgeSpec, run_judge
from core.jobs.runner import queue
from core.store import Store
from core.verdicts import (
    JudgeTemplate,
    Spellings,
    load_judge_template,
    parse_first_error,
    sampled_verdicts,
    targets_for,
    yes_no,
    yes_no_spellings,
)

QUESTION = "A baker has 24 muffins and sells 9. How many muffins are left?"
RIGHT = "The baker has 24 - 9 = 15 muffins left.\nThe answer is 15."
WRONG = "The baker has 24 - 9 = 16 muffins left.\nThe answer is 16."  # one wrong number

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # for the CLI in a subprocess
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def hand_built_pair(store: Store) -> tuple[int, int]:
    problem_id = store.add_problem("verdicts-test", QUESTION, "15")
    right = store.add_trajectory(problem_id, RIGHT, source="hand", correct=True, final_answer="15")
    wrong = store.add_trajectory(problem_id, WRONG, source="hand", correct=False, final_answer="16")
    return right, wrong


# --- templates --------------------------------------------------------------------------------


def test_templates_are_files_versioned_by_their_content(tmp_path):
    for kind in ("step", "outcome", "critic"):
        template = load_judge_template(kind)
        text = resources.files("core.prompts").joinpath(f"judge_{kind}.txt").read_text().rstrip("\n")
        assert template.text == text and template.name == f"judge_{kind}"
        assert template.sha256 == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert load_judge_template("critic").generative and not load_judge_template("outcome").generative
    assert load_judge_template("outcome", mode="generative").name == "judge_outcome_generative"
    edited = tmp_path / "my_outcome.txt"
    edited.write_text(load_judge_template("outcome").text + "\nBe strict.")
    custom = load_judge_template("outcome", str(edited))
    assert custom.sha256 != load_judge_template("outcome").sha256 and custom.name == str(edited)
    with pytest.raises(StepScopeError, match="cannot read judge template"):
        load_judge_template("outcome", "no_such_template")
    with pytest.raises(StepScopeError, match="verdict kind"):
        load_judge_template("answer")


def test_fill_keeps_math_braces_and_numbers_steps():
    template = JudgeTemplate("step", "t", "{problem}|{steps}|{step}|{step_number}|\\boxed{}|{tagged_steps}")
    filled = template.fill("What is $\\frac{1}{2}$?", "a\nb", ["a = {x}", "b"], 1)
    problem, steps, step, number, boxed, tagged = filled.split("|")
    assert problem == "What is $\\frac{1}{2}$?"
    assert steps == "Step 1: a = {x}\nStep 2: b" and step == "b" and number == "2" and boxed == "\\boxed{}"
    assert tagged == "<paragraph_0>\na = {x}\n</paragraph_0>\n\n<paragraph_1>\nb\n</paragraph_1>"


def test_step_prompts_show_the_steps_up_to_the_judged_one(tmp_path, tiny_engine):
    store = Store.open(tmp_path / "v.db")
    right, _ = hand_built_pair(store)
    targets = targets_for(store, [right], load_judge_template("step"), tiny_engine, chat=False)
    steps = store.steps(right)
    assert [t.step_id for t in targets] == [s["id"] for s in steps] and len(steps) == 2
    assert "Step 1: The baker has 24 - 9 = 15" in targets[0].prompt
    assert "The answer is 15" not in targets[0].prompt and "Is Step 1 correct" in targets[0].prompt
    assert "Step 2: The answer is 15." in targets[1].prompt and "Is Step 2 correct" in targets[1].prompt
    chat = targets_for(store, [right], load_judge_template("outcome"), tiny_engine)
    assert chat[0].chat and chat[0].prompt.startswith("<|im_start|>user\n")
    assert chat[0].prompt.endswith("<|im_start|>assistant\n")


# --- P(Yes) -----------------------------------------------------------------------------------


def test_p_yes_and_mass_hand_computed():
    spellings = Spellings(("Yes", " Yes"), ("No", " No"))
    score = yes_no({"Yes": math.log(0.3), " Yes": math.log(0.1), "No": math.log(0.2), " No": -math.inf}, spellings)
    assert score.p_yes == pytest.approx(0.4 / 0.6) and score.mass == pytest.approx(0.6)
    # An engine that sees only the top 20 tokens may see neither answer: undefined, no mass.
    none = yes_no({"Yes": -math.inf, " Yes": -math.inf, "No": -math.inf, " No": -math.inf}, spellings)
    assert none.p_yes is None and none.mass == 0.0


def test_spellings_are_the_judges_own_single_tokens(tiny_engine):
    spellings = yes_no_spellings(tiny_engine)
    assert spellings.yes == ("Yes", " Yes", "yes", " yes")  # "YES" is several tokens here
    assert spellings.no == ("No", " No", "no", " no")
    ids = [tiny_engine.tokenizer.encode(s, add_special_tokens=False) for s in spellings.all]
    assert all(len(i) == 1 for i in ids) and len({i[0] for i in ids}) == len(ids)


def reference_yes_no(model_dir: Path, prompt: str, spellings: Spellings) -> tuple[float, float]:
    """P(Yes) and mass straight from the model's full next-token distribution."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        logits = model(**tokenizer(prompt, return_tensors="pt")).logits[0, -1]
    probabilities = torch.softmax(logits.float(), -1)
    ids = lambda words: [tokenizer.encode(w, add_special_tokens=False)[0] for w in words]  # noqa: E731
    p_yes, p_no = probabilities[ids(spellings.yes)].sum().item(), probabilities[ids(spellings.no)].sum().item()
    return p_yes / (p_yes + p_no), p_yes + p_no


def test_p_yes_on_a_hand_built_pair_is_stored_with_its_mass(tmp_path, tiny_model_dir):
    store = Store.open(tmp_path / "v.db")
    right, wrong = hand_built_pair(store)
    job_id = queue(store, JudgeSpec(judge=str(tiny_model_dir), verdict="outcome", trajectory_ids=(right, wrong),
                                    engine_options={"device": "cpu"}))  # fmt: skip
    cache = EngineCache()
    assert run_job(store, claim_job(store, job_id), cache) == "done"
    engine = cache._engine
    spellings = yes_no_spellings(engine)
    template = load_judge_template("outcome")
    scores = {}
    for trajectory_id, solution in ((right, RIGHT), (wrong, WRONG)):
        [verdict] = store.verdicts(trajectory_id, kind="outcome")
        assert verdict["judge"] == str(tiny_model_dir) and verdict["job_id"] == job_id
        assert verdict["template"] == "judge_outcome" and verdict["template_hash"] == template.sha256
        prompt = engine.render_chat([{"role": "user", "content": template.fill(QUESTION, solution, [])}])
        p_yes, mass = reference_yes_no(tiny_model_dir, prompt, spellings)
        assert verdict["p_yes"] == pytest.approx(p_yes, abs=1e-4)
        assert verdict["mass"] == pytest.approx(mass, rel=1e-3) and 0 < verdict["mass"] <= 1
        raw = json.loads(verdict["raw"])
        assert set(raw["logprobs"]) == set(spellings.all) and raw["chat"] is True
        scores[trajectory_id] = verdict["p_yes"]
    assert scores[right] != scores[wrong]  # one changed number changes the verdict
    manifest = store.get_job(job_id)["manifest"]
    assert manifest["template"]["text"] == template.text and manifest["kind"] == "outcome"
    cache.drop()


@pytest.mark.smollm2
@pytest.mark.slow
def test_embedded_model_judges_the_hand_built_pair(tmp_path, smollm2_dense_dir):
    store = Store.open(tmp_path / "v.db")
    right, wrong = hand_built_pair(store)
    engine = load_engine("transformers", "smollm2-135m")
    try:
        manifest = {"judge": "smollm2-135m", "template": load_judge_template("outcome").as_manifest(),
                    "trajectory_ids": [right, wrong]}  # fmt: skip
        assert run_judge(store, engine, manifest).done == 2
        spellings = yes_no_spellings(engine)
        assert spellings.yes == ("Yes", " Yes", "yes", " yes")  # "YES" is two tokens here, "NO" one
        assert spellings.no == ("No", " No", "no", " no", "NO", " NO")
    finally:
        engine.close()
    verdicts = {t: store.verdicts(t, kind="outcome")[0] for t in (right, wrong)}
    for verdict in verdicts.values():
        assert 0 <= verdict["p_yes"] <= 1 and 0 < verdict["mass"] <= 1
        assert json.loads(verdict["raw"])["chat"] is True  # SmolLM2-Instruct has a chat template
    print(f"\nSmolLM2 P(Yes): right {verdicts[right]['p_yes']:.3f} (mass {verdicts[right]['mass']:.3f}), "
          f"wrong {verdicts[wrong]['p_yes']:.3f} (mass {verdicts[wrong]['mass']:.3f})")  # fmt: skip


# --- generative verdicts and the critic -------------------------------------------------------


@pytest.mark.parametrize(
    "text, n_steps, index, method",
    [
        ("The first paragraph is fine. The second is wrong.\n\\boxed{1}", 3, 1, "boxed"),
        ("All paragraphs are correct, so \\boxed{-1}.", 3, -1, "boxed"),
        ("$\\boxed{\\text{2}}$", 3, 2, "boxed"),
        ("I think \\boxed{0}. On reflection: \\boxed{2}", 3, 2, "boxed"),
        ("The earliest error occurs in paragraph 2.", 3, 2, "stated"),
        ("Final answer: -1", 2, -1, "stated"),
        ("  1. ", 2, 1, "bare"),
        ("\\boxed{7}", 3, None, "out-of-range"),
        ("\\boxed{-2}", 3, None, "out-of-range"),
        ("There are no mistakes in this solution.", 3, None, "unparseable"),
        ("Paragraph 1 computes 24 - 9 = 15, which is right.", 3, None, "unparseable"),
        ("\\boxed{paragraph one}", 3, None, "unparseable"),
        ("", 3, None, "unparseable"),
    ],
)
def test_critic_answers_are_read_conservatively(text, n_steps, index, method):
    answer = parse_first_error(text, n_steps)
    assert (answer.index, answer.method) == (index, method)


def test_sampled_verdicts_count_only_stated_answers():
    verdict = sampled_verdicts(["Looks right.\nVerdict: Yes", "verdict: **no**", "I am not sure.", "Verdict: Yes"])
    assert verdict.answers == (True, False, None, True)
    assert verdict.p_yes == pytest.approx(2 / 3) and verdict.mass == pytest.approx(3 / 4)
    assert sampled_verdicts(["no idea"]).p_yes is None


def test_generative_and_critic_jobs_store_what_they_read(tmp_path, tiny_model_dir, tiny_engine):
    store = Store.open(tmp_path / "v.db")
    right, wrong = hand_built_pair(store)
    judge = str(tiny_model_dir)
    for kind, mode in (("outcome", "generative"), ("critic", "logprob")):
        job_id = queue(store, JudgeSpec(judge=judge, verdict=kind, mode=mode, trajectory_ids=(right, wrong),
                                        samples=3, max_new_tokens=12, seed=1))  # fmt: skip
        manifest = store.get_job(job_id)["manifest"]
        assert run_judge(store, tiny_engine, manifest, job_id=job_id).done == 2
    generative = store.verdicts(right, judge=f"{judge}:generative")
    assert len(generative) == 1 and generative[0]["template"] == "judge_outcome_generative"
    raw = json.loads(generative[0]["raw"])
    assert len(raw["texts"]) == 3 and len(raw["answers"]) == 3
    stated = [a for a in raw["answers"] if a is not None]
    assert generative[0]["mass"] == pytest.approx(len(stated) / 3)
    critic = store.verdicts(wrong, kind="critic")
    assert len(critic) == 1
    read = json.loads(critic[0]["raw"])
    # A random model writes no index: the answer is stored as unparseable, not guessed.
    assert read["parse"] == "unparseable" and read["index"] is None
    assert critic[0]["p_yes"] is None and critic[0]["step_id"] is None and read["text"]


def test_a_stopped_judge_job_resumes_without_redoing(tmp_path, tiny_model_dir, tiny_engine):
    store = Store.open(tmp_path / "v.db")
    right, wrong = hand_built_pair(store)
    job_id = queue(store, JudgeSpec(judge=str(tiny_model_dir), verdict="step", trajectory_ids=(right, wrong),
                                    targets_per_call=1))  # fmt: skip
    manifest = store.get_job(job_id)["manifest"]
    calls = []

    def stop_after_two() -> bool:
        calls.append(1)
        return len(calls) > 2

    first = run_judge(store, tiny_engine, manifest, job_id=job_id, should_stop=stop_after_two)
    assert first.cancelled and first.done == 2 and first.planned == 4
    second = run_judge(store, tiny_engine, manifest, job_id=job_id)
    assert not second.cancelled and second.planned == 2 and second.done == 2
    step_ids = [v["step_id"] for t in (right, wrong) for v in store.verdicts(t, kind="step")]
    assert sorted(step_ids) == sorted(s["id"] for t in (right, wrong) for s in store.steps(t))


def test_cli_judge_reports_unparseable_critic_answers(tmp_path, tiny_model_dir):
    db = tmp_path / "cli.db"
    store = Store.open(db)
    hand_built_pair(store)
    store.close()
    result = run_cli("judge", "--judge", str(tiny_model_dir), "--kind", "critic", "--dataset", "verdicts-test",
                     "--max-new-tokens", "8", "--device", "cpu", "--db", str(db), env=ONE_THREAD)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "2 critic verdicts" in result.stdout
    assert "unparseable critic answers: 2 of 2" in result.stdout
    missing = run_cli("judge", "--kind", "outcome", "--dataset", "verdicts-test", "--db", str(db), env=ONE_THREAD)
    assert missing.returncode == 1 and "name a judge model" in missing.stderr
