"""The transformers engine's prefix cache across calls (issue 26): the probes of one trajectory
(question + steps 1..k) come in successive calls of an estimate job, and each is prefilled only
past what an earlier probe computed.

What the cache must not change: greedy continuations, and seeded samples, are those of each
prompt prefilled from scratch, alone in its call on an engine that keeps nothing between calls.
What it counts (`prompt_token_stats`): every prompt of a call is prefilled once; its tokens are
computed or taken from a kept prompt's cache, and the cached ones are exactly the tokens it
shares with the best kept prompt (at most all but its last token, whose logits the prefill must
give); a prefix shorter than 16 tokens is computed again. On the tiny random model (2 layers).
"""

from __future__ import annotations

import pytest

from core.engines import load_engine
from core.engines.base import SamplingParams
from core.engines.transformers_decode import MIN_SHARED_PREFIX, PrefixCache

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUESTION = "Question: Tom has 3 apples and buys 5 more. How many apples does he have? Answer: "
STEPS = [f"Step {k}: {k} + {k + 1} = {2 * k + 1}. " for k in range(1, 13)]
GREEDY = SamplingParams(n=2, max_new_tokens=8, temperature=0)
SEEDED = SamplingParams(n=4, max_new_tokens=8, temperature=1.0, top_p=0.9, seed=17)


def probe(k: int) -> str:
    """The prompt of a probe at step k: the question and the trajectory's first k steps."""
    return QUESTION + "".join(STEPS[:k])


@pytest.fixture(scope="module")
def cached(tiny_model_dir):
    engine = load_engine("transformers", str(tiny_model_dir), device="cpu", prefix_cache_mib=64)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def uncached(tiny_model_dir):
    engine = load_engine("transformers", str(tiny_model_dir), device="cpu", prefix_cache_mib=0)
    yield engine
    engine.close()


@pytest.fixture
def engine(cached):
    cached.clear_prefix_cache()
    return cached


def tokens(engine, text: str) -> list[int]:
    return engine.tokenizer(text)["input_ids"]


def shared(a: list[int], b: list[int]) -> int:
    length = 0
    while length < min(len(a), len(b)) and a[length] == b[length]:
        length += 1
    return length


def from_scratch(uncached, prompt: str, params: SamplingParams):
    """The samples of a prompt prefilled whole: alone in a call, nothing kept from before."""
    [row] = uncached.generate([prompt], params)
    assert uncached.prompt_token_stats()["last_call"]["prompt_tokens_cached"] == 0
    return row


# A first-error search's probes on one 12-step trajectory: the middle, then each half's middle.
PROBES = [6, 3, 9, 4, 12]


@pytest.mark.parametrize("params", [GREEDY, SEEDED], ids=["greedy", "seeded"])
def test_probes_over_the_cache_sample_what_a_prefill_from_scratch_does(engine, uncached, params):
    for k in PROBES:
        assert engine.generate([probe(k)], params)[0] == from_scratch(uncached, probe(k), params), f"probe at step {k}"
    assert engine.prompt_token_stats()["total"]["from_earlier_calls"] > 0


def test_a_probe_takes_what_earlier_probes_computed_and_counts_it(engine):
    seen: list[list[int]] = []
    for k in PROBES:
        ids = tokens(engine, probe(k))
        engine.generate([probe(k)], GREEDY)
        stats = engine.prompt_token_stats()["last_call"]
        best = max((shared(ids, earlier) for earlier in seen), default=0)
        expected = min(best, len(ids) - 1)  # the last token is computed: its logits start the samples
        expected = expected if expected >= MIN_SHARED_PREFIX else 0
        assert stats["prompt_tokens"] == len(ids)
        assert stats["prompt_tokens_cached"] == stats["from_earlier_calls"] == expected, f"probe at step {k}"
        seen.append(ids)
    # The later probes reused all but what they add: step 3's prompt lies inside step 6's.
    assert engine.prompt_token_stats()["total"]["prompt_tokens_cached"] > 0
    assert (engine.prompt_token_stats()["total"]["prompt_tokens_cached"]
            > sum(len(tokens(engine, probe(k))) for k in PROBES) / 2)  # fmt: skip


def test_requests_of_one_call_share_their_common_prefix(engine, uncached):
    """r prompts that differ only after a shared prefix of L tokens: L x (r - 1) cached tokens
    (the first one computes the prefix; each later one reuses it), the same greedy text."""
    tails = ["Tom has 8 apples.", "3 + 5 = 8", "He buys 5 more", "The answer is 8."]
    prompts = [probe(10) + tail for tail in tails]
    ids = [tokens(engine, p) for p in prompts]
    common = min(shared(ids[0], other) for other in ids[1:])
    assert all(shared(a, b) == common for i, a in enumerate(ids) for b in ids[:i]), "tails must differ from the start"
    got = engine.generate(prompts, GREEDY)
    stats = engine.prompt_token_stats()["last_call"]
    assert stats["prompt_tokens"] == sum(len(i) for i in ids)
    assert stats["prompt_tokens_cached"] == common * (len(prompts) - 1)
    assert stats["from_earlier_calls"] == 0
    assert got == [from_scratch(uncached, p, GREEDY) for p in prompts]


def test_prompts_with_no_shared_prefix_use_no_cache(engine):
    prompts = ["The quick brown fox jumps over the lazy dog", "Is this step correct? Yes No", "0123456789 + - * /"]
    engine.generate(prompts, GREEDY)
    assert engine.prompt_token_stats()["last_call"]["prompt_tokens_cached"] == 0
    engine.generate(["Step 1: 12 * 4 = 48. Step 2: 48 - 6 = 42. #### 42"], GREEDY)
    assert engine.prompt_token_stats()["last_call"]["prompt_tokens_cached"] == 0
    # Fewer shared tokens than MIN_SHARED_PREFIX are computed again rather than copied.
    short = "Question: Tom"
    assert len(tokens(engine, short)) < MIN_SHARED_PREFIX
    engine.generate([short + " has 3 apples", short + " buys 5 more apples"], GREEDY)
    assert engine.prompt_token_stats()["last_call"]["prompt_tokens_cached"] == 0


def test_an_engine_with_the_cache_off_keeps_nothing_between_calls(uncached):
    uncached.generate([probe(8)], GREEDY)
    uncached.generate([probe(9)], GREEDY)
    assert uncached.prompt_token_stats()["last_call"]["prompt_tokens_cached"] == 0
    assert uncached.prompt_token_stats()["cache"]["max_bytes"] is None
    assert uncached.info.extra["prefix_cache_mib"] == 0


def test_one_trajectory_keeps_one_entry_and_the_budget_holds(engine, tiny_model_dir):
    """Probes of one trajectory extend each other: the longest serves them all, so it is the only
    entry kept; a byte budget evicts the least recently used trajectory first."""
    for k in PROBES:
        engine.generate([probe(k)], GREEDY)
    cache = engine.prompt_token_stats()["cache"]
    assert (cache["entries"], cache["tokens"]) == (1, len(tokens(engine, probe(12))))  # one entry: the longest
    entry_bytes = cache["bytes"]

    small = load_engine("transformers", str(tiny_model_dir), device="cpu",
                        prefix_cache_mib=2.5 * entry_bytes / 2**20)  # fmt: skip
    try:
        # Other trajectories' prompts, each about as long as the first: the budget holds two.
        others = [f"Problem {i}: Sam has {i} pears. " + "".join(reversed(STEPS)) for i in range(4)]
        sizes = [len(tokens(small, o)) / len(tokens(small, probe(12))) for o in others]
        assert all(1 <= size < 1.2 for size in sizes), sizes
        for text in [probe(12), *others]:
            small.generate([text], GREEDY)
        cache = small.prompt_token_stats()["cache"]
        assert cache["entries"] == 2 and cache["bytes"] <= 2.5 * entry_bytes
        small.generate([probe(12) + "More."], GREEDY)  # the trajectory was evicted: computed again
        assert small.prompt_token_stats()["last_call"]["prompt_tokens_cached"] == 0
        newest = others[-1] + "More."  # the newest is kept
        small.generate([newest], GREEDY)
        want = shared(tokens(small, others[-1]), tokens(small, newest))
        assert small.prompt_token_stats()["last_call"]["prompt_tokens_cached"] == want >= MIN_SHARED_PREFIX
    finally:
        small.close()


def test_prefix_cache_drops_prefixes_of_a_longer_entry():
    """An entry that another extends (but for its last COVERED_SLACK tokens, where BPE merges a
    step's trailing space with the next step's first word) is dropped; another prompt's is kept."""
    import torch

    from core.engines.transformers_decode import COVERED_SLACK, _Prefill

    def prefill(length: int) -> _Prefill:
        return _Prefill([(torch.zeros(1, 1, length, 2), torch.zeros(1, 1, length, 2))], torch.zeros(3), length)

    trajectory = list(range(100, 140))
    other = list(range(200, 230))
    cache = PrefixCache(max_entries=4)
    cache.add(trajectory[:20], prefill(20))
    cache.add(trajectory[:19] + [7] + trajectory[20:30], prefill(30))  # differs in the first one's last token
    assert (len(cache), cache.tokens) == (1, 30)
    cache.add(trajectory[:15], prefill(15))  # inside the kept one: not kept
    cache.add(other, prefill(30))
    cache.add(trajectory[:30 - COVERED_SLACK - 1] + [1] * 20, prefill(45))  # shares too little to cover it
    assert (len(cache), cache.tokens) == (3, 105)
    base, length = cache.longest(trajectory[:19] + [7, 120, 121, 5], limit=22)
    assert (base.length, length) == (30, 22)
    assert cache.longest([6, 6], limit=1) == (None, 0)
    cache.add(list(range(300, 340)), prefill(40))  # a fourth: the least recently used goes (`other`)
    cache.add(list(range(400, 440)), prefill(40))
    assert len(cache) == 4 and cache.longest(other, limit=29) == (None, 0)


def test_a_jobs_compute_record_counts_the_cache_across_calls(engine):
    """core.search.compute's counting wrapper (every job's engine) takes the engine's own counts:
    the probes' prompt tokens once each, and the cached part of each probe's prefill."""
    from core.search.compute import ComputeRecord, CountingEngine

    record = ComputeRecord()
    counting = CountingEngine(engine, record)
    generated_before = engine.prompt_token_stats()["total"]["generated_tokens"]
    calls = []
    for k in (8, 4, 12):
        counting.generate([probe(k)], GREEDY)
        calls.append(engine.prompt_token_stats()["last_call"])
    assert [c["call"] for c in calls] == ["generate"] * 3
    assert record.prompt_tokens == sum(len(tokens(engine, probe(k))) for k in (8, 4, 12))
    assert record.prompt_tokens_cached == sum(c["prompt_tokens_cached"] for c in calls) > 0
    assert calls[0]["prompt_tokens_cached"] == 0 and calls[1]["from_earlier_calls"] == calls[1]["prompt_tokens_cached"]
    # Greedy: a prompt's 2 samples are decoded once.
    generated = engine.prompt_token_stats()["total"]["generated_tokens"] - generated_before
    assert generated == sum(c["generated_tokens"] for c in calls) == record.policy_tokens // GREEDY.n
