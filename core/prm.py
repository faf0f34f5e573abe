"""Process reward models (PRMs) as verifiers: their input formats, step scores and aggregation.

Three families are in use, and all score every step of a trajectory in one forward pass:

- "tag": a causal LM that reads a tag after each step and predicts a good or a bad token there
  (Math-Shepherd: " ки" after each step, "+" / "-"; RLHFlow: each step a user turn and "+" the
  assistant's answer). Score = P(good) / (P(good) + P(bad)) from the next-token distribution at
  the tag (Math-Shepherd) or at the token before the assistant's "+" (RLHFlow); `mass` =
  P(good) + P(bad) over the whole vocabulary, as for judges.
- "token-classification": a *ForTokenClassification model (what TRL's PRM trainer saves);
  score = the positive class's softmax probability at the last token of the separator after
  each step. Inputs are tokenised piece by piece exactly as TRL's trainer does: [BOS] +
  question + for each step (step + separator), so a PRM trained there (or here, by
  `stepscope train-prm`) is read the way it was trained.
- "reward-head": a backbone with a two-class head (Qwen2.5-Math-PRM: the chat with the steps
  as the assistant's turn, "<extra_0>" after each step); score = softmax over the two logits
  at each "<extra_0>", class 1.

A `PrmFormat` says how a family's model reads a trajectory. A preset in models/presets.toml
gives one (keys prm_family, prm_template, prm_separator, prm_tag, prm_good, prm_bad, ...);
any directory or hub id works with the same keys as explicit options.

Scores are stored as step verdicts (judge = `prm_judge_name`), with the format and the model's
fingerprint; solution scores are aggregations computed on read (`AGGREGATIONS`), so a new
aggregation never needs a rescoring.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable, Mapping, Sequence

from core.errors import StepScopeError

PRM_FAMILIES = ("tag", "token-classification", "reward-head")
PRM_TEMPLATES = ("plain", "chat-turns", "chat-assistant")
TOKENIZATIONS = ("text", "pieces")
AGGREGATIONS = ("min", "product", "last", "mean")
PRM_JUDGE_PREFIX = "prm:"

# Qwen2.5-Math-PRM's system prompt (its model card).
QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class PrmFormat:
    """How a PRM reads a trajectory and where its step scores are read."""

    family: str
    # plain: question + question_join + (step + separator) joined by step_join, one string;
    # chat-turns: a user turn per step (the question before the first) and `separator` as the
    #   assistant's answer to each (RLHFlow), scored at the token before that answer;
    # chat-assistant: system + the question as the user turn, the steps each followed by
    #   `separator` as the assistant turn (Qwen2.5-Math-PRM).
    template: str = "plain"
    separator: str = "\n"
    # The token that must sit at the end of each separator ("ки", "<extra_0>", "+"); its id is
    # checked at every scored position, so a separator the tokenizer splits or merges fails
    # loudly instead of scoring the wrong token. Default: the separator without spaces.
    tag: str | None = None
    good: str = "+"  # tag family: the good and bad tokens
    bad: str = "-"
    positive_class: int = 1  # class families: the index of "this step is good"
    system: str | None = None  # chat-assistant: the system turn
    question_join: str = " "  # plain: between the question and the first step
    step_join: str = ""  # plain: between one step's separator and the next step
    tokenization: str = "text"  # "text": render, then tokenise; "pieces": TRL's piecewise ids

    def __post_init__(self) -> None:
        if self.family not in PRM_FAMILIES:
            raise StepScopeError(f"a PRM family is one of {', '.join(PRM_FAMILIES)}, not {self.family!r}")
        if self.template not in PRM_TEMPLATES:
            raise StepScopeError(f"a PRM template is one of {', '.join(PRM_TEMPLATES)}, not {self.template!r}")
        if self.tokenization not in TOKENIZATIONS:
            raise StepScopeError(f"PRM tokenization is one of {', '.join(TOKENIZATIONS)}, not {self.tokenization!r}")
        if self.tokenization == "pieces" and self.template != "plain":
            raise StepScopeError("piecewise tokenization (TRL's) goes with the plain template")
        if not self.separator:
            raise StepScopeError("a PRM format needs a non-empty separator")
        if self.positive_class < 0:
            raise StepScopeError("the positive class is an index (0 or more)")

    @property
    def tag_token(self) -> str:
        return self.tag if self.tag is not None else (self.separator.strip() or self.separator)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> "PrmFormat":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in entry.items() if k in names})


# Defaults per family when no preset says otherwise: the conventions of the models named above.
FAMILY_DEFAULTS: Mapping[str, PrmFormat] = {
    "tag": PrmFormat("tag", "plain", separator=" ки", tag="ки", step_join="\n"),
    "token-classification": PrmFormat("token-classification", "plain", separator="\n", question_join="",
                                      tokenization="pieces"),  # fmt: skip
    "reward-head": PrmFormat("reward-head", "chat-assistant", separator="<extra_0>", system=QWEN_PRM_SYSTEM),
}


def prm_format(family: str | None = None, preset: str | None = None, **options: Any) -> PrmFormat:
    """The format from a preset's prm_* keys, else the family's defaults, with explicit options
    (None = not given) taking precedence."""
    base: dict[str, Any] = {}
    if preset is not None:
        base = preset_format_keys(preset)
    family = family or base.get("family")
    if family is None:
        raise StepScopeError("say which PRM family this model is (--family tag|token-classification|reward-head)")
    if family not in FAMILY_DEFAULTS:
        PrmFormat(family)  # names the allowed families
    if base.get("family", family) != family:
        base = {}  # an explicit family different from the preset's starts from that family
    merged = {**FAMILY_DEFAULTS[family].as_dict(), **base, **{k: v for k, v in options.items() if v is not None}}
    merged["family"] = family
    return PrmFormat.from_dict(merged)


def preset_format_keys(name: str) -> dict:
    """The prm_* keys of a preset in models/presets.toml, without the prefix; {} if none."""
    from core.models import load_presets

    preset = load_presets().get(name)
    if preset is None:
        return _folder_format_keys(name)
    return {key.removeprefix("prm_"): value for key, value in preset.settings.items() if key.startswith("prm_")}


def _folder_format_keys(name: str) -> dict:
    """A model folder trained here (`stepscope train-prm`) says its format in stepscope_prm.json."""
    from pathlib import Path

    path = Path(name).expanduser() / "stepscope_prm.json"
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as error:
        raise StepScopeError(f"cannot read {path}: {error}") from None


def is_prm_preset(name: str) -> bool:
    return bool(preset_format_keys(name))


def prm_judge_name(prm: str, name: str | None = None) -> str:
    """The judge name a PRM's verdicts are stored under."""
    return name or f"{PRM_JUDGE_PREFIX}{prm}"


def family_from_architectures(architectures: Sequence[str] | None, model: str) -> str:
    """A PRM's family from its config's architectures; a plain causal LM is not a PRM by itself."""
    names = list(architectures or [])
    if any(a.endswith("ProcessRewardModel") for a in names):
        return "reward-head"
    if any(a.endswith("ForTokenClassification") for a in names):
        return "token-classification"
    if any(a.endswith("ForCausalLM") for a in names):
        raise StepScopeError(
            f"{model} is a causal LM ({', '.join(names)}), not a PRM by its config: if it is a tag-token PRM "
            "(Math-Shepherd, RLHFlow), say --family tag and its separator and good/bad tokens"
        )
    raise StepScopeError(f"{model} is not a PRM: its config names {', '.join(names) or 'no architecture'}")


# --- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrmInput:
    """One trajectory as the PRM reads it: token ids and the position scored for each step."""

    token_ids: tuple[int, ...]
    positions: tuple[int, ...]  # one per step, in step order


@dataclass(frozen=True)
class Readout:
    """What to read at the scored positions: two vocabulary tokens, or a class of the head."""

    good_id: int | None = None  # tag family
    bad_id: int | None = None
    positive_class: int | None = None  # class families

    @property
    def vocab(self) -> bool:
        return self.good_id is not None


def token_id(tokenizer, text: str, what: str) -> int:
    """The id of `text` as one token: its own encoding if one token, else its vocabulary entry
    (a sentencepiece tokenizer encodes "ки" with a leading "▁" piece, but has "ки" itself)."""
    encoded = tokenizer.encode(text, add_special_tokens=False)
    if len(encoded) == 1:
        return int(encoded[0])
    vocab_id = tokenizer.get_vocab().get(text)
    if vocab_id is not None:
        return int(vocab_id)
    raise StepScopeError(
        f"the PRM's {what} {text!r} is not a token of this tokenizer (it encodes as {len(encoded)} tokens): "
        "wrong separator for this model, or the model's special tokens are missing"
    )


def readout_for(fmt: PrmFormat, tokenizer) -> Readout:
    if fmt.family == "tag":
        good, bad = token_id(tokenizer, fmt.good, "good token"), token_id(tokenizer, fmt.bad, "bad token")
        if good == bad:
            raise StepScopeError(f"the good and bad tokens {fmt.good!r} and {fmt.bad!r} are the same token")
        return Readout(good_id=good, bad_id=bad)
    return Readout(positive_class=fmt.positive_class)


def build_input(fmt: PrmFormat, tokenizer, question: str, steps: Sequence[str]) -> PrmInput:
    """Token ids for a trajectory and the scored position of each step, checked token by token."""
    steps = [s.strip() for s in steps]
    if not steps:
        raise StepScopeError("a trajectory without steps has nothing for a PRM to score")
    if fmt.tokenization == "pieces":
        return _pieces_input(fmt, tokenizer, question, steps)
    text, ends, add_special = _render(fmt, tokenizer, question.strip(), steps)
    try:
        encoded = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)
    except NotImplementedError:
        raise StepScopeError("PRM scoring needs a fast tokenizer (with offsets); this model has a slow one") from None
    ids, offsets = list(encoded["input_ids"]), encoded["offset_mapping"]
    tag_id = token_id(tokenizer, fmt.tag_token if fmt.template != "chat-turns" else fmt.good, "separator tag")
    positions = []
    for end in ends:  # the index of the separator's last character
        index = _token_covering(offsets, end)
        if index is None or ids[index] != tag_id:
            found = tokenizer.convert_ids_to_tokens(ids[index]) if index is not None else None
            raise StepScopeError(
                f"the separator {fmt.separator!r} does not end in the token {tokenizer.convert_ids_to_tokens(tag_id)!r} "
                f"in context (found {found!r}): the tokenizer merges it with its neighbours, or it is the wrong separator"
            )
        positions.append(index - 1 if fmt.template == "chat-turns" else index)
    return PrmInput(tuple(ids), tuple(positions))


def _pieces_input(fmt: PrmFormat, tokenizer, question: str, steps: Sequence[str]) -> PrmInput:
    """TRL's PRM trainer's layout: [BOS] + question + for each step (step + separator), each piece
    tokenised on its own; the label (here: the score) sits on the separator's last token."""
    def piece(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    ids = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    ids += piece(question.strip() + fmt.question_join)
    separator = piece(fmt.separator)
    if not separator:
        raise StepScopeError(f"the separator {fmt.separator!r} encodes to no tokens")
    positions = []
    for step in steps:
        ids += piece(step) + separator
        positions.append(len(ids) - 1)
    return PrmInput(tuple(ids), tuple(positions))


def _render(fmt: PrmFormat, tokenizer, question: str, steps: Sequence[str]) -> tuple[str, list[int], bool]:
    """(text, index of each separator's last character, whether the tokenizer adds BOS)."""
    if fmt.template == "plain":
        text, ends = question + fmt.question_join, []
        for i, step in enumerate(steps):
            text += (fmt.step_join if i else "") + step + fmt.separator
            ends.append(len(text) - 1)
        return text, ends, True
    if getattr(tokenizer, "chat_template", None) is None:
        raise StepScopeError(f"the PRM's template {fmt.template!r} needs a chat template; its tokenizer has none")
    if fmt.template == "chat-assistant":
        content = "".join(step + fmt.separator for step in steps)
        messages = ([{"role": "system", "content": fmt.system}] if fmt.system else []) + [
            {"role": "user", "content": question}, {"role": "assistant", "content": content}]  # fmt: skip
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        start = text.rfind(content)
        if start < 0:
            raise StepScopeError("the chat template changes the assistant's text: cannot find the steps in it")
        ends, cursor = [], start
        for step in steps:
            cursor += len(step) + len(fmt.separator)
            ends.append(cursor - 1)
        return text, ends, False
    # chat-turns: each step is a user turn answered by the separator; where each answer starts
    # is the length of the conversation rendered up to it with the assistant prompt.
    messages: list[dict] = [{"role": "system", "content": fmt.system}] if fmt.system else []
    ends = []
    for i, step in enumerate(steps):
        messages.append({"role": "user", "content": f"{question} {step}" if i == 0 else step})
        prefix = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ends.append(len(prefix) + len(fmt.separator) - 1)
        messages.append({"role": "assistant", "content": fmt.separator})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    for end in ends:
        if text[end - len(fmt.separator) + 1 : end + 1] != fmt.separator:
            raise StepScopeError("the chat template renders a conversation differently from its prefixes")
    return text, ends, False


def _token_covering(offsets, char_index: int) -> int | None:
    for index, (start, end) in enumerate(offsets):
        if start <= char_index < end:
            return index
    return None


def check_length(prm_input: PrmInput, max_length: int, what: str) -> None:
    if len(prm_input.token_ids) > max_length:
        raise StepScopeError(
            f"{what} is {len(prm_input.token_ids)} tokens as the PRM reads it, longer than its context of "
            f"{max_length}: nothing was scored (leave it out, or resegment it into fewer steps)"
        )


# --- scores from logits ----------------------------------------------------------------------


def scores_from_logits(logits, readout: Readout) -> tuple[list[float], list[float | None]]:
    """(score, mass) per scored position from its logits (a [positions, vocab or classes] array)."""
    import numpy as np

    logits = np.asarray(logits, dtype=np.float64)
    if readout.vocab:
        top = logits.max(axis=-1, keepdims=True)
        log_norm = np.log(np.exp(logits - top).sum(axis=-1)) + top[:, 0]
        good, bad = logits[:, readout.good_id], logits[:, readout.bad_id]
        score = 1.0 / (1.0 + np.exp(bad - good))  # softmax over {good, bad}
        mass = np.exp(good - log_norm) + np.exp(bad - log_norm)
        return score.tolist(), mass.tolist()
    if logits.shape[-1] <= readout.positive_class:
        raise StepScopeError(f"the PRM's head has {logits.shape[-1]} classes; class {readout.positive_class} is not one")
    shifted = logits - logits.max(axis=-1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
    return probabilities[:, readout.positive_class].tolist(), [None] * len(logits)


# --- aggregation ------------------------------------------------------------------------------


def aggregate(step_scores: Sequence[float], how: str) -> float:
    """A solution score from its step scores: min and last (Qwen), product (PRM800K), mean."""
    if how not in AGGREGATIONS:
        raise StepScopeError(f"an aggregation is one of {', '.join(AGGREGATIONS)}, not {how!r}")
    if not step_scores:
        raise StepScopeError("no step scores to aggregate")
    if how == "min":
        return float(min(step_scores))
    if how == "last":
        return float(step_scores[-1])
    if how == "mean":
        return float(sum(step_scores) / len(step_scores))
    return float(math.prod(step_scores))


# --- scoring trajectories from the store -------------------------------------------------------


@dataclass(frozen=True)
class Target:
    trajectory_id: int
    step_ids: tuple[int, ...]
    prm_input: PrmInput


def build_targets(store, engine, fmt: PrmFormat, trajectory_ids: Sequence[int]) -> list[Target]:
    """Every trajectory's input, all checked (tokens, context length) before anything is scored."""
    targets = []
    for trajectory_id in trajectory_ids:
        trajectory = store.get_trajectory(int(trajectory_id))
        if trajectory is None:
            raise StepScopeError(f"trajectory {trajectory_id} does not exist")
        steps = store.steps(trajectory_id)
        prm_input = build_input(fmt, engine.tokenizer, trajectory["question"], [s["text"] for s in steps])
        check_length(prm_input, engine.max_length, f"trajectory {trajectory_id}")
        targets.append(Target(int(trajectory_id), tuple(s["id"] for s in steps), prm_input))
    return targets


def verdict_rows(targets: Sequence[Target], scores, judge: str, fmt_name: str, fmt: PrmFormat, fingerprint: str,
                 job_id: int | None) -> list[dict]:  # fmt: skip
    rows = []
    for target, (step_scores, masses) in zip(targets, scores):
        for step_id, score, mass in zip(target.step_ids, step_scores, masses):
            rows.append({
                "trajectory_id": target.trajectory_id, "step_id": step_id, "judge": judge, "verifier_kind": "prm",
                "kind": "step", "p_yes": float(score), "mass": None if mass is None else float(mass), "job_id": job_id,
                "template": fmt_name, "template_hash": fmt.sha256,
                "raw": json.dumps({"prm": fmt.family, "fingerprint": fingerprint}),
            })  # fmt: skip
    return rows


def score_targets(
    engine, targets: Sequence[Target], readout: Readout, *, batch_size: int = 8,
    on_batch: Callable[[list[Target], list], None], should_stop: Callable[[], bool] = lambda: False,
) -> bool:  # fmt: skip
    """Score targets a batch at a time, handing each batch's scores over; False if stopped."""
    for start in range(0, len(targets), batch_size):
        if should_stop():
            return False
        batch = list(targets[start : start + batch_size])
        logits = engine.position_logits([t.prm_input for t in batch], readout)
        on_batch(batch, [scores_from_logits(rows, readout) for rows in logits])
    return True


def prm_step_scores(store, trajectory_id: int, prm_judge: str | None = None) -> dict[str, list[dict]]:
    """Per PRM judge name: its step scores on the trajectory's current steps, in step order."""
    return store.prm_step_scores(trajectory_id, prm_judge)


def prm_judges(store) -> list[str]:
    """The names of the PRMs whose scores the store holds (by stored kind, whatever the name)."""
    return [row["name"] for row in store.verifiers("prm")]


def solution_scores(store, prm_judge: str, aggregation: str, *, dataset: str | None = None) -> dict[int, float]:
    """Trajectory id -> the aggregated score of a PRM (or any step verifier) on every trajectory
    whose current steps it scored completely."""
    aggregate([1.0], aggregation)  # names an unknown aggregation before reading anything
    scores = {}
    for trajectory_id, steps in store.step_scores_by_trajectory(prm_judge, dataset=dataset).items():
        if steps and all(score is not None for score in steps):
            scores[trajectory_id] = aggregate(steps, aggregation)
    return scores


def replace_format(fmt: PrmFormat, **changes: Any) -> PrmFormat:
    return replace(fmt, **changes)
