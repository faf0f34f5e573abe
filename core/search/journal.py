"""A search's journal: the result of every engine and scorer call, in order, so that a killed
search resumes to the identical tree.

A strategy is a deterministic function of what its calls return (seeds derive from the
search's seed and the call's place; scorers are stateless functions of their input and seed).
So a search rerun with the journal of a killed run makes the same calls in the same order:
each call the journal holds is answered from it (checked against a digest of the call's
input, so a journal is never replayed into a different search) and counted from it, tokens and
seconds as they were spent; the first call past its end runs live, and from there on the search
continues as the uninterrupted one would have. A job stores the events as they are emitted, in
batches (core.jobs.search.JournalWriter; `event_to_dict` is JSON), and hands the stored ones back
on resume (`event_from_dict`); events a kill kept from being stored are calls made again.

On resume, `total_seconds` is the resumed run's wall time plus the engine and scorer seconds of
the replayed calls; the killed run's own overhead is not recovered.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

from core.engines.base import Sample, SamplingParams
from core.errors import StepScopeError
from core.search.compute import ComputeRecord
from core.search.records import SearchRollout

# The counters a call adds to the compute record; an event carries its own additions.
_COUNTED = ("policy_tokens", "prompt_tokens", "prompt_tokens_cached", "verifier_tokens", "verifier_generated_tokens",
            "engine_calls", "scorer_calls", "engine_seconds", "scorer_seconds")  # fmt: skip


@dataclass(frozen=True)
class EngineCall:
    digest: str  # of the prompts and sampling parameters
    samples: tuple[tuple[tuple[str, int, str], ...], ...]  # per prompt: (text, num_tokens, finish_reason)
    counted: tuple[tuple[str, float | int | None], ...]  # what the call added to the compute record


@dataclass(frozen=True)
class ScorerCall:
    digest: str  # of the problem and the prefixes
    scores: tuple[float, ...]
    rollouts: tuple[SearchRollout, ...]  # the scorer's own rollouts (MC)
    counted: tuple[tuple[str, float | int | None], ...]
    verifier_parameters: int | None = None


Event = EngineCall | ScorerCall


def digest(*parts) -> str:
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=12).hexdigest()


def event_to_dict(event: Event) -> dict:
    return {"type": type(event).__name__, **asdict(event)}


def event_from_dict(entry: dict) -> Event:
    entry = dict(entry)
    kind = entry.pop("type")
    if kind == "EngineCall":
        samples = tuple(tuple(tuple(s) for s in row) for row in entry["samples"])
        return EngineCall(entry["digest"], samples, tuple(tuple(c) for c in entry["counted"]))
    if kind == "ScorerCall":
        rollouts = tuple(SearchRollout(**{**r, "prefix": tuple(r["prefix"])}) for r in entry["rollouts"])
        return ScorerCall(entry["digest"], tuple(entry["scores"]), rollouts, tuple(tuple(c) for c in entry["counted"]),
                          entry.get("verifier_parameters"))  # fmt: skip
    raise StepScopeError(f"not a search journal event: {kind!r}")


def _snapshot(record: ComputeRecord) -> dict:
    return {name: getattr(record, name) for name in _COUNTED}


def _difference(before: dict, record: ComputeRecord) -> tuple:
    """What a call added to each counter; None: the call made the counter uncountable (an engine
    without a tokenizer leaves prompt tokens unknown). A counter that was None counts from 0."""
    changes = []
    for name in _COUNTED:
        old, new = before[name], getattr(record, name)
        if new is None:
            if old is not None:
                changes.append((name, None))
        elif new != (old or 0):
            changes.append((name, new - (old or 0)))
    return tuple(changes)


def _add(record: ComputeRecord, counted: tuple) -> None:
    for name, value in counted:
        current = getattr(record, name)
        if value is None:
            setattr(record, name, None)
        elif current is None:
            if name != "prompt_tokens":  # unknown prompt tokens stay unknown
                setattr(record, name, value)
        else:
            setattr(record, name, current + value)


class Journal:
    """The events of a run so far: the replayed ones, then each live call's as it happens."""

    def __init__(self, record: ComputeRecord, replay: Sequence[Event] = (),
                 on_event: Callable[[Event], None] | None = None) -> None:  # fmt: skip
        self.record, self.replay, self.on_event = record, list(replay), on_event
        self.events: list[Event] = []

    def next_replayed(self, kind: type, call_digest: str) -> Event | None:
        position = len(self.events)
        if position >= len(self.replay):
            return None
        event = self.replay[position]
        if not isinstance(event, kind) or event.digest != call_digest:
            raise StepScopeError(
                f"the journal does not match this search at call {position}: it was made by another search "
                "(problem, parameters, seed or scorer)"
            )
        _add(self.record, event.counted)
        self.events.append(event)
        return event

    def emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)  # before the search goes on: a store that writes it can resume from it
        self.events.append(event)


class JournaledEngine:
    def __init__(self, counting_engine, journal: Journal) -> None:
        self.engine, self.journal = counting_engine, journal
        self.info = counting_engine.info

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Sample]]:
        call_digest = digest(list(prompts), params.as_manifest())
        replayed = self.journal.next_replayed(EngineCall, call_digest)
        if replayed is not None:
            return [[Sample(*sample) for sample in row] for row in replayed.samples]
        before = _snapshot(self.journal.record)
        results = self.engine.generate(prompts, params)
        samples = tuple(tuple((s.text, s.num_tokens, s.finish_reason) for s in row) for row in results)
        self.journal.emit(EngineCall(call_digest, samples, _difference(before, self.journal.record)))
        return results


def rollout_holder(scorer):
    """The layer of a (wrapped) scorer that keeps the rollouts it sampled, if any."""
    while scorer is not None:
        if isinstance(getattr(scorer, "rollouts", None), list):
            return scorer
        scorer = getattr(scorer, "scorer", None)
    return None


class JournaledScorer:
    def __init__(self, counting_scorer, journal: Journal) -> None:
        self.scorer, self.journal = counting_scorer, journal
        self.name, self.kind = counting_scorer.name, counting_scorer.kind
        self.rollouts: list[SearchRollout] = []

    @property
    def fingerprint(self) -> dict:
        return self.scorer.fingerprint

    def score(self, problem, prefixes) -> list[float]:
        call_digest = digest(asdict(problem), [list(p) for p in prefixes], self.scorer.fingerprint)
        replayed = self.journal.next_replayed(ScorerCall, call_digest)
        if replayed is not None:
            self.rollouts.extend(replayed.rollouts)
            if replayed.verifier_parameters is not None:
                self.journal.record.verifier_parameters = replayed.verifier_parameters
            return list(replayed.scores)
        before = _snapshot(self.journal.record)
        scores = self.scorer.score(problem, prefixes)
        holder = rollout_holder(self.scorer.scorer)
        sampled = tuple(holder.rollouts) if holder is not None else ()
        if holder is not None:
            holder.rollouts.clear()
        self.rollouts.extend(sampled)
        self.journal.emit(ScorerCall(call_digest, tuple(scores), sampled, _difference(before, self.journal.record),
                                     self.journal.record.verifier_parameters))  # fmt: skip
        return scores

