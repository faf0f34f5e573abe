"""The split job (issue 26): a model chooses where a trajectory's steps begin, on any engine.

The solution is cut into candidate units, its sentences and lines (core.steps.candidate_units),
and the units are taken in chunks of at most `chunk_chars` characters (and MAX_UNITS_PER_CHUNK
units). For each chunk the model is shown the chunk's units, numbered 1..n one per line with the
unit before the chunk as context, and asked which numbers start a new step (core/prompts/
split_boundaries.txt). Listing numbers, not copying the text with markers, is what a small model
gets right most often, and it reads back deterministically: the answer's first line must be
numbers within 1..n (or "none"), and nothing else of it is used. So the model only ever chooses
among the units' starts: its steps are runs of units, trimmed like every rule's, and cover the
solution exactly whatever it writes; its copy of the text, if it makes one, is never trusted.

An answer that does not read (no numbers, a number outside 1..n, text around them) falls back to
the `sentence` rule for that chunk: its units start a step where the unit before them ends a
sentence. How many chunks fell back is recorded in the job's manifest (`split.fallback_chunks`
of `split.chunks`), with the trajectories it split and those it found already split.

The steps are stored as a new segmentation whose rule is `model:FINGERPRINT` (core.steps), made
current; the fingerprint hashes the model, the prompt's text, the chunking and the decoding, all
of which the manifest records (with a version of how units are numbered and answers read), so the
same rule means the same splitter. A model's segmentation cannot be cut again by a rule:
resegmenting to it makes the stored one current (core.store.segmentations), and whatever
re-splits text by rule (a tree search) refuses it.

Decoding is greedy. Trajectories are split in groups, whole trajectories whose chunks fill one
engine call (or one trajectory, however many calls its chunks take); a group's segmentations are
stored once all its chunks are answered, with its counts added to the manifest in the same
transaction. A rerun skips the trajectories that already hold a segmentation by this rule (making
it current again), so a killed job redoes at most the group in flight, and greedy decoding answers
it the same. The runner counts the engine's calls (tokens read and written, seconds) as for a
judge: the splitter reads the text, it is not the policy.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

from core.engines.base import SamplingParams
from core.errors import StepScopeError
from core.jobs.spec import (
    MAX_NEW_TOKENS, JobContext, JobSpec, Progress, check_range, known_fields, require_ids, splitters_of,
)  # fmt: skip
from core.steps import StepSpan, candidate_units, model_rule, sentence_ends, spans_at
from core.verdicts import render_prompt

if TYPE_CHECKING:  # the CLI reads this module's defaults at start, before any store is loaded
    from core.store import Store

DEFAULT_TEMPLATE = "split_boundaries"
DEFAULT_CHUNK_CHARS = 1500
# Numbers a small model keeps straight; a chunk of very short lines stops here before chunk_chars.
MAX_UNITS_PER_CHUNK = 40
MAX_CHUNK_CHARS = 100_000
FALLBACK_RULE = "sentence"
CHUNKS_PER_CALL = 16
# The answer is one short line of numbers; a model that keeps writing is cut off here (and falls back).
DEFAULT_MAX_NEW_TOKENS = 64
# How the units are numbered and the answers read (chunk_prompt_text, read_boundaries): part of
# the fingerprint, so a change to either makes a new rule instead of passing for the old one.
FORMAT_VERSION = 1
# The job manifest's counts (summed over its runs): what was split, and how many chunks fell back.
COUNTS = "split"

_ANSWER_LABEL = re.compile(r"^\s*(?:numbers?|answer|steps?)\s*:\s*", re.IGNORECASE)
_NUMBER_LIST = re.compile(r"\[?\d+\]?(?:\s*(?:,|;|\band\b|\s)\s*\[?\d+\]?)*")


# --- the template -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitTemplate:
    name: str  # a file name under core/prompts without .txt, or a path to a .txt file
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def fill(self, before: str, units: Sequence[str]) -> str:
        """Fields: {before} (the unit before the chunk, or a note that the chunk starts the
        solution), {sentences} ("[i] unit" lines), {count} (how many). Plain replacement: math has braces."""
        fields = {
            "{before}": before.strip() or "(none: this is the start of the solution)",
            "{sentences}": "\n".join(f"[{i}] {unit.strip()}" for i, unit in enumerate(units, 1)),
            "{count}": str(len(units)),
        }
        text = self.text
        for name, value in fields.items():
            text = text.replace(name, value)
        return text

    def as_manifest(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "text": self.text}


def load_split_template(name: str = DEFAULT_TEMPLATE) -> SplitTemplate:
    """A split template by name (core/prompts/NAME.txt) or by path to a .txt file."""
    path = Path(name).expanduser()
    try:
        if path.suffix == ".txt" and path.is_file():
            text = path.read_text(encoding="utf-8")
        else:
            text = resources.files("core.prompts").joinpath(f"{name}.txt").read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, UnicodeDecodeError) as error:
        raise StepScopeError(f"cannot read split template {name!r}: {error}") from None
    text = text.rstrip("\n")
    if "{sentences}" not in text:
        raise StepScopeError(f"split template {name!r} has no {{sentences}} field: the model would see no text")
    return SplitTemplate(name, text)


# --- chunks, answers, steps -----------------------------------------------------------------------


@dataclass(frozen=True)
class SplitPlan:
    """A solution's candidate units and the chunks (unit index ranges) the model is asked about."""

    solution: str
    units: tuple[StepSpan, ...]
    chunks: tuple[tuple[int, int], ...]  # (first unit, one past the last unit)


def plan_split(solution: str, chunk_chars: int, max_units: int = MAX_UNITS_PER_CHUNK) -> SplitPlan:
    """Units in order, grouped greedily: a chunk takes units while their characters stay within
    `chunk_chars` and their count within `max_units` (a unit longer than `chunk_chars` is a chunk alone)."""
    units = tuple(candidate_units(solution))
    chunks, first, size = [], 0, 0
    for index, unit in enumerate(units):
        length = unit.end - unit.start
        if index > first and (size + length > chunk_chars or index - first >= max_units):
            chunks.append((first, index))
            first, size = index, 0
        size += length
    if first < len(units):
        chunks.append((first, len(units)))
    return SplitPlan(solution, units, tuple(chunks))


def chunk_prompt_text(template: SplitTemplate, plan: SplitPlan, chunk: tuple[int, int]) -> str:
    first, end = chunk
    before = plan.units[first - 1].text if first else ""
    return template.fill(before, [unit.text for unit in plan.units[first:end]])


def read_boundaries(answer: str, count: int) -> frozenset[int] | None:
    """The numbers (1..count) an answer says start a step, or None when it does not read as a list
    of them: its first non-blank line, after an optional "Numbers:", must be numbers separated by
    commas, semicolons, spaces or "and" (each optionally in brackets), or "none"; the lines right
    after it that read so too belong to the list (small models write one number per line), and
    the first line that does not ends it."""
    lines = [line.strip() for line in answer.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    if not lines:
        return None
    first = _ANSWER_LABEL.sub("", lines[0]).strip().rstrip(".").strip()
    if first.lower() == "none":
        return frozenset()
    listed = []
    for line in [first, *lines[1:]]:
        line = line.rstrip(".").strip()
        if not _NUMBER_LIST.fullmatch(line):
            break
        listed.append(line)
    if not listed:
        return None
    numbers = frozenset(int(number) for line in listed for number in re.findall(r"\d+", line))
    if not all(1 <= number <= count for number in numbers):
        return None
    return numbers


@dataclass(frozen=True)
class SplitResult:
    spans: list[StepSpan]
    chunks: int
    fallback_chunks: int


def assemble_split(plan: SplitPlan, answers: Sequence[str]) -> SplitResult:
    """The steps the answers (one per chunk) choose; a chunk whose answer does not read takes the
    sentence rule's starts. The first unit of the solution always starts a step."""
    if len(answers) != len(plan.chunks):
        raise ValueError(f"{len(answers)} answers for {len(plan.chunks)} chunks")
    ends = sentence_ends(plan.solution)
    starts: set[int] = set()
    fallbacks = 0
    for (first, end), answer in zip(plan.chunks, answers):
        chosen = read_boundaries(answer, end - first)
        if chosen is None:
            fallbacks += 1
            starts.update(i for i in range(max(first, 1), end) if plan.units[i - 1].end in ends)
        else:
            starts.update(first + number - 1 for number in chosen)
    cuts = [plan.units[i].start for i in sorted(starts) if i > 0]
    return SplitResult(spans_at(plan.solution, cuts), len(plan.chunks), fallbacks)


def split_fingerprint(model: str, template: SplitTemplate, chunk_chars: int, sampling: SamplingParams,
                      chat: bool | None) -> str:  # fmt: skip
    """What decides the steps a split job cuts, hashed: the same fingerprint, the same splitter."""
    parts = ["split", FORMAT_VERSION, model, template.sha256, chunk_chars, MAX_UNITS_PER_CHUNK, sampling.as_manifest(),
             chat, FALLBACK_RULE]  # fmt: skip
    return hashlib.sha256(json.dumps(parts, ensure_ascii=True).encode("ascii")).hexdigest()[:16]


# --- the job ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SplitSpec(JobSpec):
    """Model `model` chooses the step boundaries of the trajectories: a `model:FINGERPRINT` segmentation each."""

    kind: ClassVar[str] = "split"
    unit: ClassVar[str] = "trajectories"
    engine_role: ClassVar[str] = "verifier"  # it reads the text and writes a short answer, as a judge does

    model: str
    trajectory_ids: tuple[int, ...]
    chunk_chars: int = DEFAULT_CHUNK_CHARS
    template: str = DEFAULT_TEMPLATE
    chat: bool | None = None  # None: the model's chat template when it has one
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    move_labels: bool = False
    chunks_per_call: int = CHUNKS_PER_CALL
    # The template as the job recorded it, so that a resumed job asks exactly the same question.
    recorded_template: Mapping[str, Any] | None = field(default=None, compare=False)

    def model_to_load(self) -> str:
        return self.model

    def split_template(self) -> SplitTemplate:
        if self.recorded_template is not None:
            return SplitTemplate(self.recorded_template["name"], self.recorded_template["text"])
        return load_split_template(self.template)

    def rule(self) -> str:
        return model_rule(split_fingerprint(self.model, self.split_template(), self.chunk_chars, self.sampling(),
                                            self.chat))  # fmt: skip

    def sampling(self) -> SamplingParams:
        return SamplingParams(n=1, max_new_tokens=self.max_new_tokens, temperature=0.0, stop=("\n\n",), seed=0)

    def validate(self, store: Store) -> None:
        if not self.model.strip():
            raise StepScopeError("name the model that splits (--model)")
        check_range("chunk characters", self.chunk_chars, 1, MAX_CHUNK_CHARS)
        check_range("max new tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS)
        check_range("chunks per call", self.chunks_per_call, 1, 4096)
        self.split_template()  # a missing template file is named now, not when the job runs
        require_ids(self.trajectory_ids, "trajectories to split")
        for trajectory_id in self.trajectory_ids:
            if store.get_trajectory(trajectory_id) is None:
                raise StepScopeError(f"trajectory {trajectory_id} does not exist")

    def planned(self) -> int:
        return len(self.trajectory_ids)

    def to_manifest(self, store: Store) -> dict:
        template = self.split_template()
        return {
            "model": self.model, "policy": self.model, **self.common_manifest(), "rule": self.rule(),
            "template": template.as_manifest(), "chunk_chars": self.chunk_chars,
            "max_units_per_chunk": MAX_UNITS_PER_CHUNK, "max_new_tokens": self.max_new_tokens, "chat": self.chat,
            "sampling": self.sampling().as_manifest(), "fallback": FALLBACK_RULE, "move_labels": self.move_labels,
            "chunks_per_call": self.chunks_per_call, "trajectory_ids": list(self.trajectory_ids),
            "splitters": splitters_of(store, self.trajectory_ids),
        }  # fmt: skip

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> "SplitSpec":
        template = manifest["template"]
        return cls(**known_fields(
            cls, manifest, trajectory_ids=tuple(manifest["trajectory_ids"]), template=template["name"],
            recorded_template=template,
        ))  # fmt: skip

    def run(self, context: JobContext) -> bool:
        return run_split(context.store, context.engine, self, job_id=context.job_id, should_stop=context.should_stop,
                         on_progress=context.report).cancelled  # fmt: skip


def run_split(
    store: Store,
    engine,
    spec: SplitSpec,
    *,
    job_id: int | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[Progress], None] = lambda progress: None,
) -> Progress:
    """Split every trajectory of the spec not yet split by its rule: a group of whole trajectories
    per round of engine calls, the group stored (with its counts) in one transaction once its
    chunks are answered."""
    rule, template, sampling = spec.rule(), spec.split_template(), spec.sampling()
    progress = Progress(planned=len(spec.trajectory_ids))
    done = {t for t in spec.trajectory_ids if store.segmentation_by_rule(t, rule) is not None}
    if done:
        # Split before (by an earlier run of this job, or another job with the same fingerprint):
        # current again, as resegmenting to it makes it.
        with store.transaction():
            store.resegment_many(sorted(done), rule, move_labels=spec.move_labels)
            _add_counts(store, job_id, reused=len(done))
        progress.done += len(done)
    on_progress(progress)
    for group in _groups(store, [t for t in spec.trajectory_ids if t not in done], spec):
        prompts = [
            render_prompt(engine, chunk_prompt_text(template, plan, chunk), spec.chat)[0]
            for _, plan in group for chunk in plan.chunks
        ]  # fmt: skip
        answers: list[str] = []
        for start in range(0, len(prompts), spec.chunks_per_call):
            if should_stop():
                progress.cancelled = True
                return progress
            began = time.perf_counter()
            results = engine.generate(prompts[start : start + spec.chunks_per_call], sampling)
            answers += [samples[0].text if samples else "" for samples in results]
            progress.tokens += sum(sample.num_tokens for samples in results for sample in samples)
            progress.calls += 1
            progress.seconds += time.perf_counter() - began
        offset, counts = 0, {"trajectories": 0, "chunks": 0, "fallback_chunks": 0}
        with store.transaction():  # the segmentations and their counts together: a kill leaves both or neither
            for trajectory_id, plan in group:
                result = assemble_split(plan, answers[offset : offset + len(plan.chunks)])
                offset += len(plan.chunks)
                store.add_split(trajectory_id, rule, result.spans, move_labels=spec.move_labels)
                counts["trajectories"] += 1
                counts["chunks"] += result.chunks
                counts["fallback_chunks"] += result.fallback_chunks
            _add_counts(store, job_id, **counts)
        progress.done += len(group)
        on_progress(progress)
    return progress


def _groups(store: Store, trajectory_ids: Sequence[int], spec: SplitSpec):
    """Whole trajectories with their plans, as many as fill a call with chunks (at least one)."""
    group: list[tuple[int, SplitPlan]] = []
    chunks = 0
    for trajectory_id in trajectory_ids:
        trajectory = store.get_trajectory(trajectory_id)
        if trajectory is None:
            raise StepScopeError(f"trajectory {trajectory_id} does not exist (deleted since the job was queued?)")
        plan = plan_split(trajectory["solution"], spec.chunk_chars)
        if group and chunks + len(plan.chunks) > spec.chunks_per_call:
            yield group
            group, chunks = [], 0
        group.append((trajectory_id, plan))
        chunks += len(plan.chunks)
    if group:
        yield group


def _add_counts(store: Store, job_id: int | None, **counts: int) -> None:
    if job_id is None:
        return
    manifest = store.get_job(job_id)["manifest"]
    recorded = dict(manifest.get(COUNTS) or {})
    for name, value in counts.items():
        recorded[name] = recorded.get(name, 0) + value
    store.update_job(job_id, manifest={**manifest, COUNTS: recorded})


def split_counts(manifest: Mapping[str, Any]) -> dict[str, int]:
    """A split job's counts: trajectories split, reused (already split by the rule), chunks, fallback_chunks."""
    recorded = manifest.get(COUNTS) or {}
    return {name: int(recorded.get(name, 0)) for name in ("trajectories", "reused", "chunks", "fallback_chunks")}
