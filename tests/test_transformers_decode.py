"""The transformers engine's rollout decoder against plain `model.generate`, on tiny models.

Greedy decoding must agree token for token with `generate` (prompt alone, no padding), also
when rows finish at different times, leave the batch and are replaced by other prompts' rows.
Sampling must draw from the same distribution as `generate` with the same temperature and
top_p: a chi-square test on token frequencies over thousands of seeded samples, which also
shows (by rejecting a wrong temperature or a missing top-p cut) that it can fail.

Two tiny models: the shared one (as many key/value heads as query heads) and one built here
with grouped-query attention (one key/value head for two query heads, as SmolLM2 has 3 for 9)
so that the grouped decode attention runs.
"""

from __future__ import annotations

import copy
import warnings
import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency

from core.engines.base import SamplingParams
from core.engines.transformers_decode import RolloutDecoder, supports_fast_decode, use_grouped_decode_attention

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = [
    "0123456789 + - * / = (",
    "Is this step correct?",
    "Step 2: 48 - 6 = 42. ####",
    "Tom has 3 apples",
    "The quick brown fox jumps over the lazy dog",
]
# Chi-square p-value under which two samples are called different distributions. The samples
# are seeded, so each comparison gives the same p-value on every run.
REJECT_BELOW = 1e-3


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module", params=["heads-2-kv-2", "heads-2-kv-1"])
def models(request, tiny_model_dir):
    """(the decoder's model, an independent copy with transformers' own attention) for the
    references, so that no reference runs through code under test."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if request.param == "heads-2-kv-2":
        loaded = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    else:
        config = AutoConfig.from_pretrained(tiny_model_dir)
        config.num_key_value_heads = 1
        torch.manual_seed(1)
        loaded = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        with torch.no_grad():  # the same sharper-than-default scales as the shared tiny model
            loaded.model.embed_tokens.weight.normal_(0.0, 1.0)
            loaded.lm_head.weight.normal_(0.0, 0.25)
    loaded.eval()
    reference = copy.deepcopy(loaded)
    assert supports_fast_decode(loaded)
    assert use_grouped_decode_attention(loaded)
    assert reference.config._attn_implementation == "sdpa"
    return loaded, reference


@pytest.fixture(scope="module")
def model(models):
    return models[0]


@pytest.fixture(scope="module")
def reference_model(models):
    return models[1]


def decoder(model, tokenizer, max_rows: int = 32) -> RolloutDecoder:
    return RolloutDecoder(
        model, tokenizer.eos_token_id, max_rows, lambda ids: tokenizer.decode(ids, skip_special_tokens=True)
    )


def ids(tokenizer, prompt: str) -> list[int]:
    return tokenizer(prompt)["input_ids"]


def reference_greedy(model, tokenizer, prompt: str, max_new_tokens: int, stop: str | None = None) -> list[int]:
    """Greedy tokens from `model.generate` on the prompt alone, cut where the decoder stops:
    after the EOS token, or after the token that completes `stop` in the generated text."""
    encoded = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(
            **encoded, max_new_tokens=max_new_tokens, do_sample=False,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
    tokens = output[0, encoded["input_ids"].shape[1] :].tolist()
    for end in range(1, len(tokens) + 1):
        if tokens[end - 1] == tokenizer.eos_token_id:
            return tokens[:end]
        if stop and stop in tokenizer.decode(tokens[:end], skip_special_tokens=True):
            return tokens[:end]
    return tokens


def test_greedy_matches_generate_token_for_token(model, reference_model, tokenizer):
    run = decoder(model, tokenizer).run
    got = run([ids(tokenizer, p) for p in PROMPTS], n=2, max_new_tokens=16, temperature=0, top_p=1, stops=(), seed=None)
    for prompt, rollouts in zip(PROMPTS, got):
        want = reference_greedy(reference_model, tokenizer, prompt, 16)
        assert [r.tokens for r in rollouts] == [want, want]


def test_greedy_matches_generate_while_rows_leave_and_join(model, reference_model, tokenizer):
    """Two rows at a time over five prompts: each row that stops early (at a stop string it
    generates) is replaced by the next prompt's, which joins a cache of another length."""
    stop = "e"
    greedy = decoder(model, tokenizer, max_rows=2)
    got = greedy.run([ids(tokenizer, p) for p in PROMPTS], 1, 24, 0, 1, (stop,), None)
    wanted = [reference_greedy(reference_model, tokenizer, prompt, 24, stop) for prompt in PROMPTS]
    assert [row[0].tokens for row in got] == wanted
    lengths = {len(tokens) for tokens in wanted}
    assert len(lengths) > 1 and min(lengths) < 24, f"rows must end at different times: {lengths}"
    for row, tokens in zip(got, wanted):
        assert row[0].ended_by_stop == (len(tokens) < 24 and tokens[-1] != tokenizer.eos_token_id)


def test_finished_rows_leave_and_a_prompt_is_prefilled_once(model, tokenizer):
    run = decoder(model, tokenizer, max_rows=64)
    prompts = [ids(tokenizer, p) for p in PROMPTS[:3]]
    rollouts = run.run(prompts, n=16, max_new_tokens=24, temperature=1.0, top_p=1, stops=("e", " "), seed=7)
    lengths = [len(r.tokens) for row in rollouts for r in row]
    assert min(lengths) < max(lengths), "the test needs rows that end at different times"
    # Each row is computed for its own tokens only: its first token comes from the prefill, every
    # further one from one decode step; none after it finished.
    assert run.stats.row_steps == sum(length - 1 for length in lengths)
    assert (run.stats.prefills, run.stats.prefill_tokens) == (3, sum(len(p) for p in prompts))


SHARED = "Question: Tom has 3 apples and buys 4 more. How many apples does he have now? Answer: "
SHARED_PROMPTS = [SHARED + tail for tail in ("3 + 4 = 7", "Tom has", "7. The answer is", "He buys 4")]


def common_length(a: list[int], b: list[int]) -> int:
    length = 0
    while length < min(len(a), len(b)) and a[length] == b[length]:
        length += 1
    return length


def test_a_prefix_shared_with_an_earlier_prompt_is_not_computed_again(model, reference_model, tokenizer):
    prompts = [ids(tokenizer, p) for p in SHARED_PROMPTS]
    run = decoder(model, tokenizer)
    got = run.run(prompts, n=2, max_new_tokens=12, temperature=0, top_p=1, stops=(), seed=None)
    # Greedy over a reused cache is still generate's, prompt by prompt.
    for prompt, rollouts in zip(SHARED_PROMPTS, got):
        want = reference_greedy(reference_model, tokenizer, prompt, 12)
        assert [r.tokens for r in rollouts] == [want, want]
    reused = [max(common_length(p, q) for q in prompts[:i]) for i, p in enumerate(prompts) if i]
    assert min(reused) >= len(ids(tokenizer, SHARED.rstrip())) - 1, "the shared question was not found"
    assert run.stats.prefills == len(prompts)
    assert run.stats.reused_prefix_tokens == sum(reused)
    assert run.stats.prefill_tokens == sum(len(p) for p in prompts) - sum(reused)


def test_a_prompt_that_extends_an_earlier_one_is_prefilled_past_it(model, reference_model, tokenizer):
    """Step k+1's prompt extends step k's: only the new step's tokens go through the model."""
    texts = [SHARED + "3 + 4", SHARED + "3 + 4 = 7.", SHARED + "3 + 4 = 7. The answer is"]
    prompts = [ids(tokenizer, t) for t in texts]
    run = decoder(model, tokenizer)
    got = run.run(prompts, n=1, max_new_tokens=8, temperature=0, top_p=1, stops=(), seed=None)
    assert [row[0].tokens for row in got] == [reference_greedy(reference_model, tokenizer, t, 8) for t in texts]
    computed = len(prompts[0]) + sum(len(later) - common_length(earlier, later)
                                     for earlier, later in zip(prompts, prompts[1:]))  # fmt: skip
    assert run.stats.prefill_tokens == computed < sum(len(p) for p in prompts) - 2 * len(ids(tokenizer, SHARED))


def test_seeded_samples_with_a_shared_prefix_are_those_of_each_prompt_alone(model, tokenizer):
    prompts = [ids(tokenizer, p) for p in SHARED_PROMPTS]
    args = dict(n=6, max_new_tokens=10, temperature=1.0, top_p=0.9, stops=(), seed=5)
    together = decoder(model, tokenizer).run(prompts, **args)
    alone = decoder(model, tokenizer)
    for index, prompt in enumerate(prompts):
        # The same per-sample streams: prompt `index` of the call seeds as index, so the
        # lone prompt is placed at its index behind prompts that share nothing with it.
        fillers = [ids(tokenizer, f"{k} unrelated") for k in range(index)]
        assert alone.run([*fillers, prompt], **args)[index] == together[index]
        assert alone.stats.reused_prefix_tokens == 0


def test_rows_that_end_on_their_first_token_leave_the_prefill_untouched(model, tokenizer):
    """Rows that stop as they are admitted are replaced in place before any decode step: that
    must write into the batch's own buffers, not into the prompt's prefill, which is shared by
    its samples (an expanded view) and reused by later prompts of the call."""
    prompts = [ids(tokenizer, SHARED + "Tom has"), ids(tokenizer, SHARED + "He buys")]
    args = dict(n=16, max_new_tokens=6, temperature=1.0, top_p=1, stops=tuple("aeiou "), seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when index_put_ writes into an expanded tensor
        together = decoder(model, tokenizer, max_rows=16).run(prompts, **args)
    first = [len(r.tokens) for r in together[0]]
    assert 1 in first[:-1] and max(first) > 1, f"the test needs rows that stop at once, early in the batch: {first}"
    # The second prompt reused the first one's prefill: its samples are those it gets alone.
    alone = decoder(model, tokenizer, max_rows=16).run([ids(tokenizer, "0 unrelated"), prompts[1]], **args)
    assert together[1] == alone[1]


def test_seeded_samples_do_not_depend_on_the_batch(model, tokenizer):
    prompts = [ids(tokenizer, p) for p in PROMPTS]
    args = dict(n=4, max_new_tokens=10, temperature=1.0, top_p=0.9, stops=("e",))
    wide = decoder(model, tokenizer, max_rows=64).run(prompts, seed=3, **args)
    narrow = decoder(model, tokenizer, max_rows=3).run(prompts, seed=3, **args)
    assert [[r.tokens for r in row] for row in wide] == [[r.tokens for r in row] for row in narrow]
    other = decoder(model, tokenizer, max_rows=64).run(prompts, seed=4, **args)
    assert [[r.tokens for r in row] for row in other] != [[r.tokens for r in row] for row in wide]


# -- sampling: the same distribution as generate --------------------------------------------

SAMPLES = 3000
POSITIONS = 3  # compare the token frequencies at each of the first three positions


def decoder_samples(model, tokenizer, prompt: str, temperature: float, top_p: float) -> np.ndarray:
    run = decoder(model, tokenizer, max_rows=512).run
    [rollouts] = run([ids(tokenizer, prompt)], SAMPLES, POSITIONS, temperature, top_p, (), seed=2024)
    return np.array([(r.tokens + [-1] * POSITIONS)[:POSITIONS] for r in rollouts])


def generate_samples(model, tokenizer, prompt: str, temperature: float, top_p: float) -> np.ndarray:
    encoded = tokenizer([prompt] * SAMPLES, return_tensors="pt")
    torch.manual_seed(99)
    with torch.inference_mode():
        output = model.generate(
            **encoded, max_new_tokens=POSITIONS, do_sample=True, temperature=temperature, top_p=top_p,
            top_k=0, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
    tokens = output[:, encoded["input_ids"].shape[1] :].numpy()
    # After EOS, generate pads; the decoder stops. Both count as "no token" (-1).
    ended = np.cumsum(tokens == tokenizer.eos_token_id, axis=1) - (tokens == tokenizer.eos_token_id) > 0
    return np.where(ended, -1, tokens)


def smallest_p_value(first: np.ndarray, second: np.ndarray) -> float:
    """The smallest, over positions, chi-square p-value of "same token frequencies".

    Tokens seen fewer than 10 times in both samples together (under 5 expected in each) are
    pooled into one category, so that the chi-square approximation holds.
    """
    p_values = []
    for position in range(POSITIONS):
        a, b = first[:, position], second[:, position]
        tokens, counts = np.unique(np.concatenate([a, b]), return_counts=True)
        common = set(tokens[counts >= 10].tolist())
        table = [[np.sum(a == t) for t in common] + [np.sum(~np.isin(a, list(common)))],
                 [np.sum(b == t) for t in common] + [np.sum(~np.isin(b, list(common)))]]  # fmt: skip
        table = np.array(table)
        table = table[:, table.sum(0) > 0]
        p_values.append(chi2_contingency(table).pvalue)
    return min(p_values)


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.8)])
def test_sampling_draws_from_the_same_distribution_as_generate(model, reference_model, tokenizer, temperature, top_p):
    prompt = PROMPTS[1]
    ours = decoder_samples(model, tokenizer, prompt, temperature, top_p)
    assert len({tuple(row) for row in ours}) > 20, "samples must vary for the test to mean anything"
    same = smallest_p_value(ours, generate_samples(reference_model, tokenizer, prompt, temperature, top_p))
    assert same > REJECT_BELOW, f"decoder and generate differ (p = {same:.2g})"

    # The same test tells a wrong temperature or a missing top-p cut apart, so it can fail.
    wrong_temperature = smallest_p_value(ours, generate_samples(reference_model, tokenizer, prompt, temperature * 1.4, top_p))
    assert wrong_temperature < REJECT_BELOW, f"temperature x1.4 not detected (p = {wrong_temperature:.2g})"
    if top_p < 1:
        no_cut = smallest_p_value(ours, generate_samples(reference_model, tokenizer, prompt, temperature, 1.0))
        assert no_cut < REJECT_BELOW, f"missing top-p not detected (p = {no_cut:.2g})"


# -- the engine on top of the decoder ---------------------------------------------------------


def test_engine_samples_are_generate_text_with_stop_strings_cut(tiny_engine):
    tokenizer, model = tiny_engine.tokenizer, tiny_engine.model
    assert tiny_engine.info.extra["decode"] == "rollout decoder"
    for prompt in PROMPTS[:3]:
        full = reference_greedy(model, tokenizer, prompt, 12)
        text = tokenizer.decode(full, skip_special_tokens=True)
        [[sample]] = tiny_engine.generate([prompt], SamplingParams(max_new_tokens=12, temperature=0))
        assert sample.text == text and sample.num_tokens == len(full)
        stop = text[2:4]
        if not stop.strip() or stop not in text[2:]:
            continue
        [[stopped]] = tiny_engine.generate([prompt], SamplingParams(max_new_tokens=12, temperature=0, stop=(stop,)))
        assert stopped.text == text[: text.index(stop)] and stopped.finish_reason == "stop"
        assert stopped.num_tokens == len(reference_greedy(model, tokenizer, prompt, 12, stop))
