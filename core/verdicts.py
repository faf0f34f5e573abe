"""Judge verdicts: prompts as files, P(Yes) from next-token log-probabilities, the first-error critic.

Three kinds of verdict, one prompt file each under core/prompts (editable; a template is
identified by its name and the sha256 of its text, both stored with every verdict, and the full
text goes into the job manifest):

- step (`judge_step.txt`): the problem and steps 1..k; is step k correct?
- outcome (`judge_outcome.txt`): the problem and the whole solution; is it correct?
- critic (`judge_critic.txt`, the ProcessBench prompt): the index of the earliest wrong step
  (0-based, as ProcessBench and the store count), or -1.

A prompt is the template filled in, sent as one user turn through the judge's chat template when
it has one (`engine.render_chat`), else as raw text (the templates end in "Answer (Yes or No):"
so that a base model continues with " Yes" or " No").

Scores. P(Yes) = P_yes / (P_yes + P_no), where P_yes sums the next-token probabilities of every
spelling of "yes" that is a single token in the judge's vocabulary ("Yes", " Yes", "yes", ...;
two spellings that are the same token count once), likewise P_no. `mass` = P_yes + P_no is
stored beside it: a judge that puts 40% of its next token on neither answer is not confident,
whatever the ratio says. Engines that only see the top 20 next tokens (vLLM, servers) give
-inf for a spelling outside them, so there `mass` is a lower bound, and P(Yes) is undefined
(None) when no spelling is in the top 20.

Generative mode (`judge_*_generative.txt`): the judge reasons, then ends with "Verdict: Yes|No";
k sampled verdicts give P(Yes) = the fraction of Yes among those that state one, and `mass` =
the fraction that state one. The critic is always generative (greedy by default); an answer
that names no index, or an index outside the solution, is stored as unparseable (index None)
and counted, never guessed.

`raw` holds a JSON object: the candidate log-probabilities, or the generated texts and what
was read from them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Sequence

from core.engines.base import Engine, SamplingParams
from core.errors import StepScopeError

JUDGE_KINDS = ("step", "outcome", "critic")
JUDGE_MODES = ("logprob", "generative")
YES_SPELLINGS = ("Yes", " Yes", "yes", " yes", "YES", " YES")
NO_SPELLINGS = ("No", " No", "no", " no", "NO", " NO")
# Probed to find which spellings are single tokens on engines without a local tokenizer.
_PROBE_PROMPT = "Answer (Yes or No):"


# --- templates --------------------------------------------------------------------------------


@dataclass(frozen=True)
class JudgeTemplate:
    kind: str
    name: str  # a file name under core/prompts without .txt, or a path to a .txt file
    text: str
    mode: str = "logprob"  # or "generative"; the critic is always generative

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    @property
    def generative(self) -> bool:
        return self.kind == "critic" or self.mode == "generative"

    def fill(self, problem: str, solution: str, steps: Sequence[str], k: int | None = None) -> str:
        """The template with its fields filled in (plain replacement: math text has braces).

        Fields: {problem}, {solution}, {steps} ("Step 1: ..." lines up to step k, or all),
        {step} (the text of step k), {step_number} (k + 1), {tagged_steps} (ProcessBench's
        <paragraph_i> blocks for every step).
        """
        shown = list(steps) if k is None else list(steps[: k + 1])
        fields = {
            "{problem}": problem.strip(),
            "{solution}": solution.strip(),
            "{steps}": "\n".join(f"Step {i + 1}: {s.strip()}" for i, s in enumerate(shown)),
            "{step}": steps[k].strip() if k is not None else "",
            "{step_number}": str(k + 1) if k is not None else "",
            "{tagged_steps}": "\n\n".join(
                f"<paragraph_{i}>\n{s.strip()}\n</paragraph_{i}>" for i, s in enumerate(steps)
            ),
        }
        text = self.text
        for field, value in fields.items():
            text = text.replace(field, value)
        return text

    def as_manifest(self) -> dict:
        return {"kind": self.kind, "name": self.name, "mode": self.mode, "sha256": self.sha256,
                "text": self.text}


def default_template_name(kind: str, mode: str = "logprob") -> str:
    check_kind(kind)
    if mode not in JUDGE_MODES:
        raise StepScopeError(f"judge mode is one of {', '.join(JUDGE_MODES)}, not {mode!r}")
    if kind == "critic" or mode == "logprob":
        return f"judge_{kind}"
    return f"judge_{kind}_generative"


def load_judge_template(kind: str, name: str | None = None, mode: str = "logprob") -> JudgeTemplate:
    """A judge template by name (core/prompts/NAME.txt) or by path to a .txt file."""
    default = default_template_name(kind, mode)  # checks kind and mode
    name = name or default
    path = Path(name).expanduser()
    try:
        if path.suffix == ".txt" and path.is_file():
            text = path.read_text(encoding="utf-8")
        else:
            text = resources.files("core.prompts").joinpath(f"{name}.txt").read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError) as error:
        raise StepScopeError(f"cannot read judge template {name!r}: {error}") from None
    return JudgeTemplate(kind, name, text.rstrip("\n"), "generative" if kind == "critic" else mode)


def template_from_manifest(entry: dict) -> JudgeTemplate:
    return JudgeTemplate(entry["kind"], entry["name"], entry["text"], entry.get("mode", "logprob"))


def check_kind(kind: str) -> None:
    if kind not in JUDGE_KINDS:
        raise StepScopeError(f"a verdict kind is one of {', '.join(JUDGE_KINDS)}, not {kind!r}")


def render_prompt(engine: Engine, text: str, chat: bool | None = None) -> tuple[str, bool]:
    """(prompt, whether the chat template was used). chat=None uses it when the judge has one."""
    if chat is False:
        return text, False
    try:
        return engine.render_chat([{"role": "user", "content": text}]), True
    except StepScopeError:
        if chat:
            raise
        return text, False


# --- P(Yes) from next-token log-probabilities -------------------------------------------------


@dataclass(frozen=True)
class Spellings:
    """The spellings of yes and no that are single tokens for one judge (one per token id)."""

    yes: tuple[str, ...]
    no: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        return self.yes + self.no

    def as_manifest(self) -> dict:
        return {"yes": list(self.yes), "no": list(self.no)}


def yes_no_spellings(engine: Engine) -> Spellings:
    """The judge's own single-token spellings of yes and no.

    With a local tokenizer (transformers, vLLM) each spelling is encoded, and spellings that
    give the same token id keep the first (SentencePiece may spell "Yes" and " Yes" alike);
    otherwise each is asked of the engine, which refuses a multi-token candidate.
    """
    tokenizer = getattr(engine, "tokenizer", None)
    sides = []
    for spellings in (YES_SPELLINGS, NO_SPELLINGS):
        kept, seen = [], set()
        for spelling in spellings:
            if tokenizer is not None:
                ids = tokenizer.encode(spelling, add_special_tokens=False)
                if len(ids) != 1 or ids[0] in seen:
                    continue
                seen.add(ids[0])
            else:
                try:
                    engine.candidate_logprobs([_PROBE_PROMPT], [spelling])
                except StepScopeError as error:
                    if "exactly one token" not in str(error):
                        raise  # a server that is down is not a multi-token spelling
                    continue
            kept.append(spelling)
        sides.append(tuple(kept))
    if not sides[0] or not sides[1]:
        raise StepScopeError(
            f"judge {engine.info.model!r} has no single-token spelling of "
            f"{'yes' if not sides[0] else 'no'}; use the generative mode"
        )
    return Spellings(*sides)


@dataclass(frozen=True)
class YesNo:
    p_yes: float | None
    mass: float
    logprobs: dict[str, float]


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


def yes_no(logprobs: dict[str, float], spellings: Spellings) -> YesNo:
    log_yes = _logsumexp([logprobs[s] for s in spellings.yes])
    log_no = _logsumexp([logprobs[s] for s in spellings.no])
    log_mass = _logsumexp([log_yes, log_no])
    if log_mass == -math.inf:
        return YesNo(None, 0.0, logprobs)
    return YesNo(math.exp(log_yes - log_mass), math.exp(log_mass), logprobs)


def score_yes_no(engine: Engine, prompts: Sequence[str], spellings: Spellings) -> list[YesNo]:
    rows = engine.candidate_logprobs(list(prompts), list(spellings.all))
    return [yes_no(row, spellings) for row in rows]


# --- generative verdicts ----------------------------------------------------------------------

_VERDICT_LINE = re.compile(r"verdict\s*[:\-]?\s*[*_`\"']*\s*(yes|no)\b", re.IGNORECASE)


def parse_verdict(text: str) -> bool | None:
    """The last "Verdict: Yes|No" in a generated answer; None when it states none."""
    matches = _VERDICT_LINE.findall(text)
    return None if not matches else matches[-1].lower() == "yes"


@dataclass(frozen=True)
class SampledVerdict:
    p_yes: float | None  # fraction of Yes among the samples that state a verdict
    mass: float  # fraction of samples that state one
    texts: tuple[str, ...]
    answers: tuple[bool | None, ...]


def sampled_verdicts(texts: Sequence[str]) -> SampledVerdict:
    answers = tuple(parse_verdict(t) for t in texts)
    stated = [a for a in answers if a is not None]
    p_yes = sum(stated) / len(stated) if stated else None
    return SampledVerdict(p_yes, len(stated) / len(texts) if texts else 0.0, tuple(texts), answers)


# --- the first-error critic -------------------------------------------------------------------

_BOXED = re.compile(r"\\boxed\s*\{")
_INTEGER = re.compile(r"^[-\u2212]?\d+$")
_TEXT_WRAPPER = re.compile(r"^\\(?:text|mathrm|textbf)\s*\{(.*)\}$")
# "the earliest error is in paragraph 2", "Final answer: -1", "index: 3"
_STATED_INDEX = re.compile(
    r"(?:earliest error|first error|final answer|answer is|index)[^\d\n\-\u2212]{0,40}"
    r"(?:paragraph[_ ]?)?([-\u2212]?\d+)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class CriticAnswer:
    index: int | None  # -1 = no error; None = unparseable
    method: str  # boxed, stated, bare, or unparseable / out-of-range


def _boxed_contents(text: str) -> list[str]:
    contents = []
    for match in _BOXED.finditer(text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                contents.append(text[start:i])
                break
    return contents


def _as_index(value: str) -> int | None:
    value = value.strip().strip("$").strip()
    inner = _TEXT_WRAPPER.match(value)
    if inner:
        value = inner.group(1).strip()
    if not _INTEGER.match(value):
        return None
    return int(value.replace("\u2212", "-"))


def parse_first_error(text: str, n_steps: int) -> CriticAnswer:
    """The earliest-error index a critic stated, read conservatively.

    In order: the last \\boxed{N}; else the last "earliest error / final answer / index ... N";
    else an answer that is only a number. An index outside [-1, n_steps) is out of range.
    Anything else is unparseable: free text like "no mistakes" is not read as -1.
    """
    index, method = None, "unparseable"
    boxed = [_as_index(b) for b in _boxed_contents(text)]
    boxed = [b for b in boxed if b is not None]
    if boxed:
        index, method = boxed[-1], "boxed"
    else:
        stated = _STATED_INDEX.findall(text)
        if stated:
            index, method = int(stated[-1].replace("\u2212", "-")), "stated"
        else:
            bare = _as_index(text.strip().rstrip("."))
            if bare is not None:
                index, method = bare, "bare"
    if index is not None and not -1 <= index < n_steps:
        return CriticAnswer(None, "out-of-range")
    return CriticAnswer(index, method)


# --- judging trajectories ---------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One verdict to ask for: a whole trajectory (outcome, critic) or one of its steps."""

    trajectory_id: int
    step_id: int | None
    prompt: str
    n_steps: int
    chat: bool


def targets_for(
    store, trajectory_ids: Sequence[int], template: JudgeTemplate, engine: Engine, chat: bool | None = None
) -> list[Target]:
    """The prompts for every verdict a job asks for: one per trajectory, or one per step."""
    targets = []
    for trajectory_id in trajectory_ids:
        trajectory = store.get_trajectory(trajectory_id)
        if trajectory is None:
            raise StepScopeError(f"trajectory {trajectory_id} does not exist")
        steps = store.steps(trajectory_id)
        texts = [s["text"] for s in steps]
        if template.kind == "step":
            for k, step in enumerate(steps):
                text = template.fill(trajectory["question"], trajectory["solution"], texts, k)
                prompt, used_chat = render_prompt(engine, text, chat)
                targets.append(Target(trajectory_id, step["id"], prompt, len(steps), used_chat))
        else:
            text = template.fill(trajectory["question"], trajectory["solution"], texts)
            prompt, used_chat = render_prompt(engine, text, chat)
            targets.append(Target(trajectory_id, None, prompt, len(steps), used_chat))
    return targets


def _critic_step_id(store, target: Target, index: int | None) -> int | None:
    if index is None or index < 0:
        return None
    steps = store.steps(target.trajectory_id)
    return steps[index]["id"]


def judge_targets(
    store,
    engine: Engine,
    targets: Sequence[Target],
    template: JudgeTemplate,
    judge: str,
    *,
    spellings: Spellings | None = None,
    sampling: SamplingParams | None = None,
    job_id: int | None = None,
) -> tuple[list[dict], int]:
    """Verdict rows for `targets` (ready for `store.add_verdicts`) and the tokens generated.

    Log-prob mode needs `spellings`; generative mode and the critic need `sampling`.
    A critic verdict points at the step it names as the earliest error (step_id), or at none
    for -1 and for unparseable answers; raw tells those two apart, and p_yes is 1 for -1 (the
    critic calls the solution correct), 0 for an index, None when unparseable.
    """
    base = {"judge": judge, "kind": template.kind, "template": template.name,
            "template_hash": template.sha256, "job_id": job_id}  # fmt: skip
    prompts = [t.prompt for t in targets]
    rows, tokens = [], 0
    if not template.generative:
        if spellings is None:
            raise StepScopeError("log-prob verdicts need the judge's yes/no spellings")
        for target, score in zip(targets, score_yes_no(engine, prompts, spellings)):
            raw = {"logprobs": _finite(score.logprobs), "chat": target.chat}
            rows.append({**base, "trajectory_id": target.trajectory_id, "step_id": target.step_id,
                         "p_yes": score.p_yes, "mass": score.mass, "raw": json.dumps(raw)})  # fmt: skip
        return rows, 0
    if sampling is None:
        raise StepScopeError("generative verdicts need sampling parameters")
    if template.kind == "critic":
        sampling = replace(sampling, n=1)
    results = engine.generate(prompts, sampling)
    for target, samples in zip(targets, results):
        tokens += sum(s.num_tokens for s in samples)
        texts = [s.text for s in samples]
        if template.kind == "critic":
            answer = parse_first_error(texts[0], target.n_steps)
            p_yes = None if answer.index is None else float(answer.index == -1)
            raw = {"text": texts[0], "index": answer.index, "parse": answer.method, "chat": target.chat}
            rows.append({**base, "trajectory_id": target.trajectory_id,
                         "step_id": _critic_step_id(store, target, answer.index),
                         "p_yes": p_yes, "mass": None, "raw": json.dumps(raw)})  # fmt: skip
        else:
            verdict = sampled_verdicts(texts)
            raw = {"texts": list(verdict.texts), "answers": list(verdict.answers), "chat": target.chat}
            rows.append({**base, "trajectory_id": target.trajectory_id, "step_id": target.step_id,
                         "p_yes": verdict.p_yes, "mass": verdict.mass, "raw": json.dumps(raw)})  # fmt: skip
    return rows, tokens


def _finite(logprobs: dict[str, float]) -> dict[str, float | None]:
    # JSON has no -inf: a spelling outside an engine's top 20 is stored as null.
    return {k: (v if math.isfinite(v) else None) for k, v in logprobs.items()}
