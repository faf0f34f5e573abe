"""A compact decode loop for Monte Carlo rollouts on a transformers model.

Rollouts are short (a few tokens to a step's end) but many, all continuing the same prefix.
`model.generate` would prefill the prefix once per sample and keep computing every row until
the longest one ends. Here:

- each distinct prompt is prefilled once, alone (no padding), and its KV cache rows are
  repeated for its n samples; a prompt that shares a token prefix with one prefilled before it
  in the call (the few-shot examples, the question, the steps before: step k+1's prompt
  extends step k's) reuses that prompt's cache and is prefilled only past the shared part;
- with a `PrefixCache` that outlives the call (the engine's), prompts prefilled by earlier
  calls are bases too: the probes of a first-error search on one trajectory come in successive
  calls (step 32, then 16, then 24, ...), all sharing the question and the steps before the
  earlier probe, and each is prefilled only past what an earlier probe already computed;
- a row leaves the batch, and its KV cache rows with it, the moment it finishes (end of
  sequence, a stop string in its generated text, or `max_new_tokens`);
- freed slots are refilled with the next prompts' samples, so the batch stays full while
  there is work (continuous batching on a left-padded dynamic cache);
- each sample draws from its own seeded generator, so a seeded call gives the same samples
  whatever the batch size or the order in which rows finish;
- greedy decoding is deterministic, so a prompt's n greedy samples are decoded once;
- the batch's cache has room for the next tokens: a decode step writes one column in place
  instead of copying the whole cache to append it, as transformers' dynamic cache does.

transformers' own continuous batching (`generate_batch`) runs on a CPU but was 10x slower than
`generate` here (paged attention) and has no stop strings; see the engine's notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from transformers import AttentionInterface, AttentionMaskInterface, DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.generation.logits_process import TopPLogitsWarper
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

GROUPED_DECODE_ATTENTION = "stepscope_grouped_sdpa"
# A shared prefix shorter than this is computed again rather than copied.
MIN_SHARED_PREFIX = 16
# An entry sharing all but this many of its last tokens with a longer one is dropped (PrefixCache).
COVERED_SLACK = 4
# Decode columns allocated at a time: one reallocation per this many steps, not one per step.
CACHE_ROOM = 32
# Prefilled prompts kept as bases for later prompts that share a prefix with them (memory: each
# is one prompt's cache). A decoder without a cache of its own keeps this many, for one call.
KEPT_PREFIXES = 8


@dataclass
class Rollout:
    """The tokens one sample generated, and why it ended."""

    tokens: list[int]
    ended_by_eos: bool = False
    ended_by_stop: bool = False


@dataclass
class DecodeStats:
    """Work done by the last `run`, for tests and benchmarks: how the batch was used.

    Every prompt of a call is prefilled once (its n samples share it): its tokens are either
    computed (`prefill_tokens`) or taken from the cache of an earlier prompt, of this call or,
    with a cache that outlives calls, of an earlier one (`reused_prefix_tokens`); the two add up
    to the call's prompt tokens. `reused_from_earlier_calls` is the part of the reused tokens
    whose base was prefilled by an earlier call."""

    prefills: int = 0  # forward passes over a prompt
    prefill_tokens: int = 0  # prompt tokens computed (not taken from an earlier prompt's cache)
    reused_prefix_tokens: int = 0  # prompt tokens taken from an earlier prompt's cache
    reused_from_earlier_calls: int = 0  # of those, from a prompt prefilled by an earlier call
    steps: int = 0  # batched decode forward passes
    row_steps: int = 0  # rows computed over all decode steps


@dataclass
class _Row:
    prompt_index: int
    sample_index: int
    generator: torch.Generator | None
    rollout: Rollout = field(default_factory=lambda: Rollout([]))
    checked_chars: int = 0  # generated text already searched for stop strings, minus overlap


@dataclass
class _Prefill:
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [1, heads, L, dim]
    last_logits: torch.Tensor  # [vocab], fp32
    length: int
    call: int = 0  # the decoder's call that computed it

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for pair in self.layers for t in pair)


class PrefixCache:
    """Prefilled prompts' KV caches, found by the longest token prefix a new prompt shares with one.

    Entries are never written to: a prompt that reuses one takes views of its first columns and
    its own prefill appends by copy. An entry whose tokens are a prefix of another's (up to its
    last COVERED_SLACK tokens) is redundant (the longer one serves about every prompt it would)
    and is dropped, so the probes of one trajectory, whose prompts extend each other, keep one
    entry: the longest. The least recently used entries go first when there are more than
    `max_entries` or they hold more than `max_bytes` (the newest is always kept, so one prompt
    over the budget still serves its call).
    Valid for one model's weights only: the decoder (and the engine) that owns it.
    """

    def __init__(self, max_bytes: int | None = None, max_entries: int | None = None) -> None:
        self.max_bytes, self.max_entries = max_bytes, max_entries
        self._entries: list[tuple[np.ndarray, _Prefill]] = []  # least recently used first

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return sum(prefill.nbytes for _, prefill in self._entries)

    @property
    def tokens(self) -> int:
        return sum(len(tokens) for tokens, _ in self._entries)

    def clear(self) -> None:
        self._entries = []

    def longest(self, prompt_ids: Sequence[int], limit: int) -> tuple[_Prefill | None, int]:
        """The entry sharing the longest token prefix (at most `limit` tokens) with the prompt,
        and that length; the entry becomes the most recently used."""
        prompt = np.asarray(prompt_ids[:limit], dtype=np.int64)
        best, best_length = None, 0
        for index, (tokens, _) in enumerate(self._entries):
            length = _common_length(tokens, prompt)
            if length > best_length:
                best, best_length = index, length
        if best is None:
            return None, 0
        entry = self._entries.pop(best)
        self._entries.append(entry)
        return entry[1], best_length

    def add(self, prompt_ids: Sequence[int], prefill: _Prefill) -> None:
        tokens = np.asarray(prompt_ids, dtype=np.int64)
        kept = []
        for index, entry in enumerate(self._entries):
            old = entry[0]
            common = _common_length(old, tokens)
            if len(old) >= len(tokens) and _covers(common, len(tokens)):
                # The new prompt is (about) a prefix of a kept one, which serves all it would.
                self._entries.append(self._entries.pop(index))
                return
            if not _covers(common, len(old)):
                kept.append(entry)  # else the kept one is (about) a prefix of the new one: redundant
        kept.append((tokens, prefill))
        while len(kept) > 1 and (
            (self.max_entries is not None and len(kept) > self.max_entries)
            or (self.max_bytes is not None and sum(p.nbytes for _, p in kept) > self.max_bytes)
        ):
            kept.pop(0)
        self._entries = kept


def _covers(common: int, length: int) -> bool:
    """Whether an entry of `length` tokens sharing `common` leading tokens with a longer one is
    redundant: all of it, or all but its last few. A step prefix's tokens are not always a
    prefix of the next step's (BPE merges its trailing space or newline with the next step's
    first word), so an entry counts as covered up to COVERED_SLACK tokens: a prompt that would
    have matched it whole recomputes those few tokens instead, and one entry per trajectory is
    kept instead of one per probe."""
    return common > 0 and common >= length - COVERED_SLACK


def _common_length(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading tokens two token arrays share."""
    length = min(len(a), len(b))
    differ = np.flatnonzero(a[:length] != b[:length])
    return int(differ[0]) if len(differ) else length


def supports_fast_decode(model) -> bool:
    """Whether the model's cache is plain per-layer keys and values that can be sliced by row.

    Sliding-window, linear-attention and quantized layers keep other state; those models use
    `model.generate` instead.
    """
    cache = DynamicCache(config=model.config)
    return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)


def grouped_decode_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """SDPA that, for one query token, attends each key/value head once for all its query heads.

    transformers' SDPA path copies every cached key and value `num_key_value_groups` times per
    step when a padding mask is present (3x for SmolLM2): a copy of the whole cache per layer
    and token, which cost more than the attention itself. With a single query token the query
    heads that share a key/value head can stand side by side as if they were positions of one
    head: the same arithmetic, no copy. Anything else (prefill, scoring, dropout, biases) goes
    to transformers' own SDPA unchanged.
    """
    groups = getattr(module, "num_key_value_groups", 1)
    plain = query.shape[2] != 1 or groups == 1 or kwargs.get("position_bias") is not None
    if plain or kwargs.get("dropout", 0.0) or kwargs.get("output_attentions"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    rows, heads, _, dim = query.shape
    # Query head h uses key/value head h // groups (as in transformers' repeat_kv).
    grouped = query.reshape(rows, heads // groups, groups, dim)
    output = torch.nn.functional.scaled_dot_product_attention(
        grouped, key, value, attn_mask=attention_mask, scale=scaling
    )
    return output.reshape(rows, heads, 1, dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(GROUPED_DECODE_ATTENTION, grouped_decode_attention)
AttentionMaskInterface.register(GROUPED_DECODE_ATTENTION, sdpa_mask)


def use_grouped_decode_attention(model) -> bool:
    """Switch an SDPA model to the grouped decode attention; False if it uses another kind."""
    if model.config._attn_implementation != "sdpa":
        return False
    model.set_attn_implementation(GROUPED_DECODE_ATTENTION)
    return True


class _RoomyLayer(DynamicLayer):
    """A cache layer over preallocated buffers [rows, heads, capacity, dim], the first `length`
    columns in use: `update` writes the new columns in place and returns views of the used part."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        super().__init__()
        self.dtype, self.device = keys.dtype, keys.device
        self.buffers, self.length = (keys, values), length
        self.keys, self.values = keys[:, :, :length], values[:, :, :length]
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        self.buffers[0][:, :, self.length : end] = key_states
        self.buffers[1][:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self.buffers[0][:, :, :end], self.buffers[1][:, :, :end]
        return self.keys, self.values


class RolloutDecoder:
    """Samples continuations of tokenized prompts with one model, many rows at a time."""

    def __init__(
        self, model, eos_token_id: int | None, max_rows: int, decode_text, prefix_cache: PrefixCache | None = None
    ) -> None:
        """`prefix_cache`: prompts prefilled by earlier calls stay bases for later ones (the
        engine passes one); without it, a prompt reuses only prompts of its own call."""
        self.model = model
        self.eos_token_id = eos_token_id
        self.max_rows = max_rows
        self.decode_text = decode_text  # token ids -> generated text, as samples report it
        self.device = model.device
        self.stats = DecodeStats()
        self.keeps_prefixes_between_calls = prefix_cache is not None
        self.prefix_cache = prefix_cache if prefix_cache is not None else PrefixCache(max_entries=KEPT_PREFIXES)
        self._calls = 0

    @torch.inference_mode()
    def run(
        self,
        prompts: Sequence[list[int]],
        n: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stops: Sequence[str],
        seed: int | None,
    ) -> list[list[Rollout]]:
        """For each tokenized prompt, n rollouts in sample order."""
        greedy = temperature == 0
        self._temperature, self._greedy = temperature, greedy
        self._top_p = TopPLogitsWarper(top_p) if (not greedy and top_p < 1) else None
        self._stops = [s for s in stops if s]
        self._longest_stop = max((len(s) for s in self._stops), default=0)
        self._max_new_tokens = max_new_tokens
        self.stats = DecodeStats()
        self._calls += 1
        if not self.keeps_prefixes_between_calls:
            self.prefix_cache.clear()
        # Greedy samples of one prompt are identical: decode one and copy it.
        distinct_samples = 1 if greedy else n
        # SeedSequence takes non-negative entropy; a negative seed maps to its 64-bit pattern.
        seeds = np.random.SeedSequence(seed % 2**64) if seed is not None else np.random.SeedSequence()
        pending = [(p, s) for p in range(len(prompts)) for s in range(distinct_samples)]
        pending.reverse()  # popped from the end, in prompt order
        prefills: dict[int, _Prefill] = {}
        rows_left = {p: distinct_samples for p in range(len(prompts))}
        done: dict[tuple[int, int], Rollout] = {}

        self._rows: list[_Row] = []
        # Per layer: [keys, values], [rows, heads, capacity, dim]; the mask's width is the part in use.
        self._layers: list[list[torch.Tensor]] | None = None
        self._mask: torch.Tensor | None = None  # [rows, columns] 1 for a real token
        self._positions: torch.Tensor | None = None  # [rows] position of each row's next token

        while pending or self._rows:
            if pending and self._should_admit(pending, rows_left):
                admitted = self._admit(pending, prompts, prefills, rows_left, seeds, seed)
                self._retire(done, admitted)
            if self._rows:
                self._step()
                self._retire(done, self._rows)
        return [[done[p, 0 if greedy else s] for s in range(n)] for p in range(len(prompts))]

    # -- admission ------------------------------------------------------------------------

    def _should_admit(self, pending, rows_left) -> bool:
        free = self.max_rows - len(self._rows)
        if free <= 0:
            return False
        if not self._rows:
            return True
        # Admitting costs a prefill and a copy of the cache, so wait until the next prompt's
        # rows fit (or a quarter of the batch is free, for prompts with more rows than that).
        next_prompt = pending[-1][0]
        return free >= min(rows_left[next_prompt], max(1, self.max_rows // 4))

    def _admit(self, pending, prompts, prefills, rows_left, seeds, seed) -> list[_Row]:
        free = self.max_rows - len(self._rows)
        admitted: list[_Row] = []
        while pending and len(admitted) < free:
            prompt_index, sample_index = pending.pop()
            if prompt_index not in prefills:
                prefills[prompt_index] = self._prefill(prompts[prompt_index])
            admitted.append(_Row(prompt_index, sample_index, self._generator(seeds, seed, prompt_index, sample_index)))
        self._join(admitted, prefills)
        for row in admitted:
            prefill = prefills[row.prompt_index]
            self._accept(row, self._choose(prefill.last_logits[None], [row])[0])
            rows_left[row.prompt_index] -= 1
            if rows_left[row.prompt_index] == 0:
                del prefills[row.prompt_index]  # its rows hold their own copies now
        return admitted

    def _generator(self, seeds, seed, prompt_index: int, sample_index: int) -> torch.Generator | None:
        if self._greedy:
            return None
        # One stream per (call seed, prompt, sample): a sample does not depend on its batch.
        child = np.random.SeedSequence(seeds.entropy, spawn_key=(prompt_index, sample_index))
        generator = torch.Generator(device=self.device)
        generator.manual_seed(int(child.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))
        return generator

    def _longest_shared_prefix(self, prompt_ids: list[int]) -> tuple[_Prefill | None, int]:
        """Of the kept caches, the one sharing the longest token prefix with the prompt, and that
        length; at least one token of the prompt is left to compute, so its prefill yields the
        logits of its next token."""
        best, best_length = self.prefix_cache.longest(prompt_ids, limit=len(prompt_ids) - 1)
        if best_length < MIN_SHARED_PREFIX:
            return None, 0
        return best, best_length

    def _prefill(self, prompt_ids: list[int]) -> _Prefill:
        """Prompt tokens through the model, past the longest prefix it shares with an earlier one."""
        self.stats.prefills += 1
        cache = DynamicCache(config=self.model.config)
        base, start = self._longest_shared_prefix(prompt_ids)
        if base is not None:
            for layer, (keys, values) in zip(cache.layers, base.layers):
                layer.lazy_initialization(keys, values)
                # Views of the shared part; the prefill appends by copy, so the base stays as it is.
                layer.keys, layer.values = keys[:, :, :start], values[:, :, :start]
        self.stats.prefill_tokens += len(prompt_ids) - start
        self.stats.reused_prefix_tokens += start
        if base is not None and base.call != self._calls:
            self.stats.reused_from_earlier_calls += start
        input_ids = torch.tensor([prompt_ids[start:]], device=self.device)
        output = self.model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        layers = [(layer.keys, layer.values) for layer in output.past_key_values.layers]
        prefill = _Prefill(layers, output.logits[0, -1].float(), len(prompt_ids), self._calls)
        self.prefix_cache.add(prompt_ids, prefill)
        return prefill

    def _join(self, admitted: list[_Row], prefills: dict[int, _Prefill]) -> None:
        """Add the admitted rows' caches to the batch, left-padding whichever side is shorter."""
        groups: dict[int, int] = {}
        for row in admitted:
            groups[row.prompt_index] = groups.get(row.prompt_index, 0) + 1
        width = max([prefills[p].length for p in groups] + ([self._mask.shape[1]] if self._rows else []))
        new_layers = None
        new_masks, new_positions = [], []
        for prompt_index, count in groups.items():
            prefill = prefills[prompt_index]
            pad = width - prefill.length
            mask = torch.ones(count, prefill.length, dtype=torch.long, device=self.device)
            new_masks.append(torch.nn.functional.pad(mask, (pad, 0)))
            new_positions.append(torch.full((count,), prefill.length, dtype=torch.long, device=self.device))
            expanded = [
                [_left_pad(tensor.expand(count, -1, -1, -1), pad) for tensor in pair] for pair in prefill.layers
            ]
            new_layers = expanded if new_layers is None else [
                [torch.cat([old, new]) for old, new in zip(old_pair, new_pair)]
                for old_pair, new_pair in zip(new_layers, expanded)
            ]  # fmt: skip
        new_mask, new_position = torch.cat(new_masks), torch.cat(new_positions)
        if not self._rows:
            # The new rows may still be views of a prefill (expanded over its samples): they get
            # buffers of their own, which decode steps and retiring rows write into.
            self._layers = [[_with_room(tensor, width) for tensor in pair] for pair in new_layers]
            self._mask, self._positions = new_mask, new_position
        else:
            used = self._mask.shape[1]
            pad = width - used
            self._layers = [
                [torch.cat([_left_pad(old[:, :, :used], pad), new]) for old, new in zip(old_pair, new_pair)]
                for old_pair, new_pair in zip(self._layers, new_layers)
            ]
            self._mask = torch.cat([torch.nn.functional.pad(self._mask, (pad, 0)), new_mask])
            self._positions = torch.cat([self._positions, new_position])
        self._rows.extend(admitted)

    # -- decoding -------------------------------------------------------------------------

    def _step(self) -> None:
        """One token for every row in the batch."""
        self.stats.steps += 1
        self.stats.row_steps += len(self._rows)
        used = self._mask.shape[1]
        if self._layers[0][0].shape[2] <= used:
            self._layers = [[_with_room(tensor, used) for tensor in pair] for pair in self._layers]
        cache = DynamicCache(config=self.model.config)
        cache.layers = [_RoomyLayer(keys, values, used) for keys, values in self._layers]
        last_tokens = torch.tensor([[row.rollout.tokens[-1]] for row in self._rows], device=self.device)
        self._mask = torch.nn.functional.pad(self._mask, (0, 1), value=1)
        output = self.model(
            input_ids=last_tokens,
            attention_mask=self._mask,
            position_ids=self._positions[:, None],
            past_key_values=cache,
            use_cache=True,
        )
        self._positions = self._positions + 1  # the new column is in self._layers' buffers already
        for row, token in zip(self._rows, self._choose(output.logits[:, -1].float(), self._rows)):
            self._accept(row, token)

    def _choose(self, logits: torch.Tensor, rows: list[_Row]) -> list[int]:
        """The next token of each row: argmax, or a draw from the tempered, top-p distribution."""
        if self._greedy:
            return logits.argmax(-1).tolist()
        scores = logits / self._temperature
        if self._top_p is not None:
            scores = self._top_p(None, scores)
        # Inverse-CDF draws: one uniform number from each row's own generator, one batched
        # search. torch.multinomial with a generator took ~4 ms a row over SmolLM2's 49k tokens.
        cumulative = torch.softmax(scores, dim=-1).double().cumsum(-1)
        uniform = torch.cat([torch.rand(1, generator=row.generator, dtype=torch.float64) for row in rows])
        uniform = uniform.to(cumulative.device) * cumulative[:, -1]
        # side="right": the first token whose cumulative probability exceeds the draw, so a
        # token of probability 0 (cut by top-p) is never chosen.
        chosen = torch.searchsorted(cumulative, uniform[:, None], right=True)[:, 0]
        return chosen.clamp(max=cumulative.shape[1] - 1).tolist()

    def _accept(self, row: _Row, token: int) -> None:
        rollout = row.rollout
        if token == self.eos_token_id:
            rollout.tokens.append(token)
            rollout.ended_by_eos = True
            return
        rollout.tokens.append(token)
        if self._stops:
            # Stop strings match generated text only; search only where a new one can be.
            text = self.decode_text(rollout.tokens)
            start = max(0, row.checked_chars - self._longest_stop)
            if any(stop in text[start:] for stop in self._stops):
                rollout.ended_by_stop = True
            row.checked_chars = len(text)

    def _finished(self, row: _Row) -> bool:
        rollout = row.rollout
        return rollout.ended_by_eos or rollout.ended_by_stop or len(rollout.tokens) >= self._max_new_tokens

    def _retire(self, done: dict, candidates: list[_Row]) -> None:
        """Record finished rows and drop them, and their cache rows, from the batch.

        The live rows at the end of the batch move into the finished rows' places, so only
        those rows are copied; the batch is then a view of the first rows of the buffers, and
        columns that are padding in every remaining row are cut off the same way.
        """
        finished = [row for row in candidates if self._finished(row)]
        if not finished:
            return
        for row in finished:
            done[row.prompt_index, row.sample_index] = row.rollout
        live = len(self._rows) - len(finished)
        if live == 0:
            self._rows, self._layers = [], None
            self._mask = self._positions = None
            return
        holes = [i for i in range(live) if self._finished(self._rows[i])]
        movers = [i for i in range(live, len(self._rows)) if not self._finished(self._rows[i])]
        if holes:
            to, source = torch.tensor(holes, device=self.device), torch.tensor(movers, device=self.device)
            for pair in self._layers:
                for tensor in pair:
                    tensor[to] = tensor[source]
            self._mask[to] = self._mask[source]
            self._positions[to] = self._positions[source]
            for hole, mover in zip(holes, movers):
                self._rows[hole] = self._rows[mover]
        self._rows = self._rows[:live]
        mask = self._mask[:live]
        first = int(mask.any(0).nonzero()[0])
        self._mask = mask[:, first:]
        self._positions = self._positions[:live]
        self._layers = [[tensor[:live, :, first:] for tensor in pair] for pair in self._layers]


def _with_room(tensor: torch.Tensor, used: int) -> torch.Tensor:
    """The first `used` columns of a [rows, heads, seq, dim] cache tensor, with CACHE_ROOM more."""
    rows, heads, _, dim = tensor.shape
    roomy = tensor.new_empty(rows, heads, used + CACHE_ROOM, dim)
    roomy[:, :, :used] = tensor[:, :, :used]
    return roomy


def _left_pad(tensor: torch.Tensor, pad: int) -> torch.Tensor:
    """Zeros before the sequence axis of a [rows, heads, seq, dim] cache tensor."""
    if pad == 0:
        return tensor
    return torch.nn.functional.pad(tensor, (0, 0, pad, 0))
