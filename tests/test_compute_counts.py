"""Compute accounting for every job kind (issue 25): what each engine says a call computed
(prompt tokens, of them cached, generated tokens), unknown where it cannot say, never 0; and the
tokens and FLOPs of the jobs that run a model themselves (train-orm, orm-score, train-verifier).

The OpenAI-compatible engine talks to a small scripted server on loopback here, because only a
scripted server can leave `usage` out or detail the cached prompt tokens on cue; vLLM's own
counts are checked in tests/test_engine_contract.py on the engines it starts anyway.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cli_runner import run_cli

from core.engines.base import SamplingParams
from core.engines.openai_engine import OpenAIEngine
from core.jobs.orm_score import OrmScoreSpec
from core.jobs.runner import EngineCache, claim_job, queue, run_job
from core.jobs.train_orm import TrainOrmSpec
from core.jobs.train_verifier import TrainVerifierSpec
from core.search.compute import ComputeRecord, MeteredEngine
from core.store import Store

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
MODEL = "scripted-model"
# A shared prefix longer than one of vLLM's CPU KV blocks (128 tokens), so a repeat hits its cache.
SHARED = "Question: Tom has 3 apples and buys 5 more. How many apples does he have? " * 9


def test_records_of_before_this_change_and_unknown_counts_read_back():
    old = ComputeRecord.from_manifest({"policy_tokens": 5, "prompt_tokens": 7, "verifier_tokens": 3,
                                       "policy_parameters": 10, "verifier_parameters": 10})  # fmt: skip
    assert (old.training_tokens, old.training_flops, old.flops) == (0, 0.0, 2.0 * 10 * 12 + 2.0 * 10 * 3)
    unknown = old.plus(ComputeRecord(verifier_tokens=None))
    assert unknown.verifier_tokens is None and unknown.verifier_flops is None and unknown.flops is None
    trained = ComputeRecord(training_tokens=100, training_parameters=50)
    assert trained.training_flops == 6.0 * 50 * 100 == trained.as_manifest()["flops"]
    assert ComputeRecord(training_tokens=1).flops is None  # a size nobody knows: no guess


# vLLM's own counts (the in-process engine and `vllm serve`) are checked on the engines the
# engine contract already starts: tests/test_engine_contract.py, test_*_counts_*.


class UsageServer:
    """Answers /v1/completions with 3 tokens per choice and a `usage` block as `usage` scripts it:
    "full" (prompt tokens = the prompt's words, 2 of them cached), "plain" (no cached detail) or
    "none" (no usage at all); /tokenize counts words."""

    def __init__(self, usage: str) -> None:
        self.usage = usage
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def completion(self, body: dict) -> dict:
        n, tokens = body.get("n", 1), ["a", "b", "c"][: min(3, body["max_tokens"])]
        logprobs = None
        if body.get("logprobs") is not None:
            top = [{" Yes": -0.5, " No": -1.5}] if body["logprobs"] > 0 else None
            logprobs = {"tokens": tokens, "token_logprobs": [-1.0] * len(tokens), "top_logprobs": top,
                        "text_offset": [0] * len(tokens)}  # fmt: skip
        answer = {"id": "c", "object": "text_completion", "created": 0, "model": body["model"],
                  "choices": [{"index": j, "text": "abc", "logprobs": logprobs, "finish_reason": "length"}
                              for j in range(n)]}  # fmt: skip
        prompt = len(body["prompt"].split())
        if self.usage != "none":
            answer["usage"] = {"prompt_tokens": prompt, "completion_tokens": n * len(tokens),
                               "total_tokens": prompt + n * len(tokens)}  # fmt: skip
        if self.usage == "full":
            answer["usage"]["prompt_tokens_details"] = {"cached_tokens": 2}
        return answer

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._reply({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0,
                                                         "owned_by": "test", "root": "/models/x"}]})  # fmt: skip

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/tokenize":
                    count = len(body["prompt"].split())
                    return self._reply({"count": count, "tokens": list(range(count))})
                self._reply(server.completion(body))

        return Handler


@pytest.fixture
def usage_server():
    started = []

    def start(usage: str, **options) -> OpenAIEngine:
        started.append(UsageServer(usage))
        engine = OpenAIEngine(MODEL, [started[-1].base_url], **options)
        started[-1].engine = engine
        return engine

    yield start
    for server in started:
        server.engine.close()
        server.stop()


PROMPTS = ["one two three four", "five six seven"]  # 4 + 3 words: the server's prompt tokens


def test_openai_engine_reports_the_servers_usage(usage_server):
    engine = usage_server("full", parameters=1000)  # a server does not say its size: declared
    record = ComputeRecord()
    samples = MeteredEngine(engine, record).generate(PROMPTS, SamplingParams(n=2, max_new_tokens=5, seed=1))
    last = engine.prompt_token_stats()["last_call"]
    assert last == {"call": "generate", "calls": 1, "prompt_tokens": 7, "prompt_tokens_cached": 4, "generated_tokens": 12}
    assert sum(s.num_tokens for row in samples for s in row) == 12
    assert (record.prompt_tokens, record.prompt_tokens_cached, record.policy_tokens) == (7, 4, 12)
    assert record.flops == 2.0 * 1000 * (7 + 12)
    judged = ComputeRecord()
    MeteredEngine(engine, judged, role="verifier").candidate_logprobs(PROMPTS, [" Yes"])
    assert judged.verifier_tokens == 7  # the server read the prompts; no local tokenizer needed


def test_openai_engine_without_cached_detail_says_cached_unknown(usage_server):
    engine = usage_server("plain")
    record = ComputeRecord()
    MeteredEngine(engine, record).generate(PROMPTS, SamplingParams(n=1, max_new_tokens=5))
    assert engine.prompt_token_stats()["last_call"]["prompt_tokens_cached"] is None
    assert record.prompt_tokens == 7 and record.prompt_tokens_cached is None and record.policy_tokens == 6


def test_openai_engine_without_usage_counts_unknown_not_zero(usage_server):
    engine = usage_server("none", parameters=1000)
    record = ComputeRecord()
    samples = MeteredEngine(engine, record).generate(PROMPTS, SamplingParams(n=2, max_new_tokens=5, seed=1))
    last = engine.prompt_token_stats()["last_call"]
    assert last["prompt_tokens"] is None and last["prompt_tokens_cached"] is None
    # Generated tokens are still known: each choice's logprob tokens count them.
    assert last["generated_tokens"] == sum(s.num_tokens for row in samples for s in row) == 12
    assert record.prompt_tokens is None and record.policy_flops is None and record.flops is None
    assert engine.prompt_token_stats()["total"]["prompt_tokens"] is None
    # A judge on a server that says nothing, with no local tokenizer: unknown, not 0.
    judged = ComputeRecord()
    MeteredEngine(engine, judged, role="verifier").candidate_logprobs(PROMPTS, [" Yes"])
    assert judged.verifier_tokens is None and judged.verifier_flops is None


# -- jobs that run a model themselves ------------------------------------------------------------


def add_marked_problems(store: Store, count: int, dataset: str = "toy") -> list[int]:
    """Four solutions per problem, correct exactly when the last word is Yes (as tests/test_orm.py)."""
    ids = []
    for p in range(count):
        problem_id = store.add_problem(dataset, f"What is {p} + {p + 7}?", str(2 * p + 7))
        for i, (word, correct) in enumerate((("Yes", True), ("No", False), ("Yes", True), ("No", False))):
            ids.append(store.add_trajectory(problem_id, f"{p} + {p + 7} = {2 * p + 7}.\nChecked {i}: {word}",
                                            source="policy", model="toy", correct=correct))  # fmt: skip
    return ids


def run(store: Store, spec) -> dict:
    job_id = queue(store, spec)
    status = run_job(store, claim_job(store, job_id), EngineCache())
    job = store.get_job(job_id)
    assert status == "done", job["error"]
    return job


def orm_tokens(store, tokenizer, trajectory_ids) -> int:
    from core.orm_training import build_examples

    return sum(len(e.token_ids) for e in build_examples(store, tokenizer, trajectory_ids))


@pytest.mark.usefixtures("one_torch_thread")
def test_train_orm_and_orm_score_count_tokens_and_flops(tmp_path, tiny_model_dir):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    db = tmp_path / "c.db"
    store = Store.open(db)
    ids = add_marked_problems(store, 8)
    output = tmp_path / "orm"
    job = run(store, TrainOrmSpec(base=str(tiny_model_dir), trajectory_ids=tuple(ids), output=str(output),
                                  engine_options={"device": "cpu"}, epochs=1.0, batch_size=8))  # fmt: skip
    compute = job["compute"]
    assert job["manifest"]["compute"] == compute
    split = json.loads((output / "manifest.json").read_text())["split"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    parameters = sum(p.numel() for p in AutoModelForSequenceClassification.from_pretrained(
        output, dtype=torch.float32).parameters())  # fmt: skip
    # One epoch: every train-split solution's tokens once; the test split's scored once, forward only.
    trained, scored = orm_tokens(store, tokenizer, split["train_trajectories"]), orm_tokens(store, tokenizer, split["test_trajectories"])  # fmt: skip
    assert compute["training_tokens"] == trained > 0 and compute["training_parameters"] == parameters
    assert compute["verifier_tokens"] == scored > 0 and compute["verifier_parameters"] == parameters
    assert compute["policy_tokens"] == 0 and compute["prompt_tokens"] == 0  # the base engine only tokenised
    assert compute["training_flops"] == 6.0 * parameters * trained
    assert compute["flops"] == pytest.approx(6.0 * parameters * trained + 2.0 * parameters * scored)
    assert compute["engine_seconds"] > 0

    # orm-score: the ORM's forward passes over the solutions it scores (before: 0 tokens).
    fresh = add_marked_problems(store, 1, dataset="fresh")
    scored_job = run(store, OrmScoreSpec(verifier=str(output), trajectory_ids=tuple(fresh)))
    assert scored_job["compute"]["verifier_tokens"] == orm_tokens(store, tokenizer, fresh) > 0
    assert scored_job["compute"]["verifier_parameters"] == parameters
    assert scored_job["compute"]["flops"] == 2.0 * parameters * scored_job["compute"]["verifier_tokens"]
    store.close()

    shown = run_cli("jobs", "show", str(job["id"]), "--db", str(db), env=ONE_THREAD)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert f"{compute['flops']:.3g}" in shown.stdout and f"{scored:,}" in shown.stdout
    assert re.search(rf"tokens trained on\s+{compute['training_tokens']:,}\b", shown.stdout), shown.stdout


@pytest.mark.usefixtures("one_torch_thread")
def test_train_verifier_counts_the_tokens_its_probe_features_read(tmp_path, tiny_model_dir):
    from core.probes import probe_text

    store = Store.open(tmp_path / "p.db")
    ids = add_marked_problems(store, 4)
    job = run(store, TrainVerifierSpec(base=str(tiny_model_dir), labels="outcome", trajectory_ids=tuple(ids), folds=2,
                                       engine_options={"device": "cpu"}))  # fmt: skip
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    read = sum(len(tokenizer(probe_text(store.get_trajectory(t))[0])["input_ids"]) for t in ids)
    compute = job["compute"]
    assert compute["verifier_tokens"] == read and compute["training_tokens"] == 0
    assert compute["flops"] == 2.0 * compute["verifier_parameters"] * read  # forward only: feature extraction
    store.close()


@pytest.mark.usefixtures("one_torch_thread")
def test_train_prm_counts_training_and_held_out_tokens(tmp_path, tiny_model_dir):
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from core.jobs.train_prm import TrainPrmSpec
    from core.prm_training import build_examples, step_labels

    store = Store.open(tmp_path / "prm.db")
    ids = []
    for i in range(6):  # as tests/test_prm.py's labelled_store: MC hard labels 1 on the right solution
        problem_id = store.add_problem("sorm", f"What is {i} + 13 then times 2?", str(2 * (13 + i)))
        for right in (True, False):
            total = 13 + i if right else 14 + i
            solution = f"{i} + 13 = {total}.\n{total} * 2 = {2 * total}.\nThe answer is {2 * total}."
            ids.append(store.add_trajectory(problem_id, solution, source="test", rule="line",
                                            final_answer=str(2 * total), correct=right))  # fmt: skip
            store.add_rollouts([{"step_id": s["id"], "text": "x", "correct": right, "model": "tiny"}
                                for s in store.steps(ids[-1])])  # fmt: skip
    output = tmp_path / "prm"
    job = run(store, TrainPrmSpec(base=str(tiny_model_dir), labels="mc-hard", trajectory_ids=tuple(ids),
                                  output=str(output), epochs=2.0, batch_size=4, test_fraction=0.4,
                                  engine_options={"device": "cpu"}))  # fmt: skip
    compute = job["compute"]
    split = json.loads((output / "manifest.json").read_text())["split"]
    examples = build_examples(store, AutoTokenizer.from_pretrained(tiny_model_dir), step_labels(store, ids, "mc-hard"), 1024)
    tokens = {side: sum(len(e.token_ids) for e in examples if e.trajectory_id in split[f"{side}_trajectories"])
              for side in ("train", "test")}  # fmt: skip
    parameters = sum(p.numel() for p in AutoModelForTokenClassification.from_pretrained(
        output, dtype=torch.float32).parameters())  # fmt: skip
    assert compute["training_tokens"] == 2 * tokens["train"] > 0  # two epochs: every example twice
    assert compute["training_parameters"] == parameters == compute["verifier_parameters"]
    assert compute["verifier_tokens"] == tokens["test"] > 0  # the held-out evaluation, forward only
    assert compute["flops"] == pytest.approx(6.0 * parameters * 2 * tokens["train"] + 2.0 * parameters * tokens["test"])
    store.close()
