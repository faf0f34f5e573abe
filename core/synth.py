"""Synthetic GSM-style word problems with a chosen number of arithmetic steps.

Why: GSM8K is too hard for the embedded 135M policy (about 0% beyond one step), so its pass@k
intervals never separate and its trajectories are short. Generated problems let a study pick
the difficulty (1-6 steps), draw as many problems as it needs, and know the gold answer and a
reference solution exactly.

Vocabulary (GSM-Symbolic's): a *template* is a scenario plus a sequence of operations with the
numbers left symbolic; an *instance* is a template with one draw of numbers. The train/test
split is a function of the instance's hash, so an instance drawn twice (by any seed, into any
dataset) always lands in the same split, and the two splits never share an instance.

A problem's "steps" are its arithmetic operations. The reference solution writes one line per
operation ("a op b = c", the style of the policy's few-shot prompt), then the final-answer line
"The answer is N." that the grader extracts; with the "line" splitter a k-step problem's
reference therefore has k + 1 lines.
"""

from __future__ import annotations

import hashlib
import json
import random
from itertools import accumulate
from dataclasses import dataclass
from typing import Sequence

from core.errors import StepScopeError

MIN_STEPS, MAX_STEPS = 1, 6
DEFAULT_TEST_FRACTION = 0.5
REFERENCE_SOURCE = "reference"
# Keeps every intermediate small enough for a small model's arithmetic (GSM8K's are similar).
MAX_VALUE = 999
# An instance hash has 256 bits; the split uses the first 32 of them.
_SPLIT_BUCKETS = 2**32

# Operations. "groups" opens a problem with a product (a containers of b units); "add",
# "sub" and "times" change the running quantity; "share" and "price" change its unit, so a
# problem may end with one but never continue after it.
OPENINGS = ("plain", "groups")
MIDDLE_OPS = ("add", "sub", "times")
FINAL_OPS = ("share", "price")
_SYMBOL = {"groups": "*", "add": "+", "sub": "-", "times": "*", "share": "/", "price": "*"}


@dataclass(frozen=True)
class Scenario:
    """The words of one setting; every number slot is filled by the draw."""

    name: str
    unit: str  # plural noun being counted
    container: str  # singular; "groups" packs units in them, "share" splits into them
    plain: str  # opening sentence with {a}
    groups: str  # opening sentence with {a} containers of {b}
    gain: str  # sentence with {n}
    gain_step: str  # the gerund phrase in the solution line ("buying", "baking")
    loss: str
    loss_step: str
    question: str  # asks for the running quantity
    price: str  # sentence + question with {n}, asks for the value of all units
    money: str  # unit of the price answer
    times: str = "Later, {p} has {n} times as many {unit} as that."
    share_into: str = ""  # singular container that "share" splits into, when not `container`

    @property
    def container_plural(self) -> str:
        return _plural(self.container)

    @property
    def share_container(self) -> str:
        return self.share_into or self.container


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "stickers", "stickers", "sheet",
        plain="{Name} has {a} stickers.",
        groups="{Name} has {a} sheets with {b} stickers on each sheet.",
        gain="{P} buys {n} more stickers.", gain_step="buying {n} more",
        loss="{P} gives {n} stickers to a friend.", loss_step="giving away {n}",
        question="How many stickers does {Name} have now?",
        price="Each sticker is worth {n} points. How many points are all of {name}'s stickers worth?",
        money="points",
    ),
    Scenario(
        "bakery", "muffins", "tray",
        plain="{Name} bakes {a} muffins in the morning.",
        groups="{Name} bakes {a} trays of muffins with {b} muffins on each tray.",
        gain="In the afternoon {p} bakes {n} more muffins.", gain_step="baking {n} more",
        loss="{P} sells {n} muffins.", loss_step="selling {n}",
        question="How many muffins does {Name} have now?",
        price="{P} sells all of them for {n} dollars each. How many dollars does {p} get?",
        money="dollars",
    ),
    Scenario(
        "library", "books", "shelf",
        plain="A school library has {a} books.",
        groups="A school library has {a} shelves with {b} books on each shelf.",
        gain="The library receives {n} donated books.", gain_step="receiving {n} books",
        loss="The librarian lends out {n} books.", loss_step="lending out {n}",
        question="How many books are in the library now?",
        price="Each book weighs {n} pounds. How many pounds do the books weigh in all?",
        money="pounds",
        times="After a big donation, the library has {n} times as many books as that.",
    ),
    Scenario(
        "farm", "eggs", "basket",
        plain="{Name} collects {a} eggs on the farm.",
        groups="{Name} collects {a} baskets of eggs with {b} eggs in each basket.",
        gain="{P} finds {n} more eggs in the barn.", gain_step="finding {n} more",
        loss="{P} uses {n} eggs for baking.", loss_step="using {n}",
        question="How many eggs does {Name} have now?",
        price="{P} sells all the eggs for {n} dollars each. How many dollars does {p} earn?",
        money="dollars",
    ),
    Scenario(
        "marbles", "marbles", "bag",
        plain="{Name} has {a} marbles.",
        groups="{Name} has {a} bags of marbles with {b} marbles in each bag.",
        gain="{P} wins {n} marbles in a game.", gain_step="winning {n}",
        loss="{P} loses {n} marbles.", loss_step="losing {n}",
        question="How many marbles does {Name} have now?",
        price="Each marble is worth {n} points. How many points are {name}'s marbles worth?",
        money="points",
    ),
    Scenario(
        "garden", "tulips", "row",
        plain="{Name} has {a} tulips in the garden.",
        groups="{Name} plants {a} rows of tulips with {b} tulips in each row.",
        gain="{P} plants {n} more tulips.", gain_step="planting {n} more",
        loss="{P} picks {n} tulips for a friend.", loss_step="picking {n}",
        question="How many tulips are in {name}'s garden now?",
        price="{P} sells all the tulips for {n} dollars each. How many dollars does {p} get?",
        money="dollars",
    ),
    Scenario(
        "water", "liters", "bucket",
        plain="A tank holds {a} liters of water.",
        groups="{Name} fills a tank with {a} buckets of water, {b} liters in each bucket.",
        gain="{Name} pours in {n} more liters.", gain_step="pouring in {n} more",
        loss="{Name} uses {n} liters to water the plants.", loss_step="using {n}",
        question="How many liters of water are in the tank now?",
        price="Each liter costs {n} cents. How many cents is all the water worth?",
        money="cents",
        times="Then the tank is refilled until it holds {n} times as many liters as that.",
    ),
    Scenario(
        "savings", "dollars", "week",
        plain="{Name} has saved {a} dollars.",
        groups="For {a} weeks, {Name} saves {b} dollars each week.",
        gain="{P} earns {n} more dollars.", gain_step="earning {n} more",
        loss="{P} spends {n} dollars on a book.", loss_step="spending {n}",
        question="How many dollars does {Name} have now?",
        price="Every dollar buys {n} tokens at the fair. How many tokens can {p} buy?",
        money="tokens",
        share_into="envelope",
    ),
    Scenario(
        "train", "passengers", "car",
        plain="A train leaves the station with {a} passengers.",
        groups="A train has {a} cars with {b} passengers in each car.",
        gain="At the next stop {n} more passengers get on.", gain_step="{n} more get on",
        loss="At the following stop {n} passengers get off.", loss_step="{n} get off",
        question="How many passengers are on the train now?",
        price="Each passenger paid {n} dollars for a ticket. How many dollars did they pay in all?",
        money="dollars",
        times="At the main station the number of passengers grows to {n} times as many.",
    ),
    Scenario(
        "classroom", "pencils", "pack",
        plain="{Name} has {a} pencils for the class.",
        groups="{Name} buys {a} packs of pencils with {b} pencils in each pack.",
        gain="A parent brings {n} more pencils.", gain_step="getting {n} more",
        loss="{n} pencils break and {Name} throws them away.", loss_step="throwing away {n}",
        question="How many pencils does {Name} have now?",
        price="Each pencil costs {n} cents. How many cents are all the pencils worth?",
        money="cents",
    ),
)
_SCENARIOS = {scenario.name: scenario for scenario in SCENARIOS}
_PEOPLE = (
    ("Maria", "she"), ("Tom", "he"), ("Aisha", "she"), ("Lucas", "he"), ("Mei", "she"),
    ("Omar", "he"), ("Sofia", "she"), ("Ben", "he"), ("Priya", "she"), ("Diego", "he"),
)


@dataclass(frozen=True)
class SynthProblem:
    question: str
    gold: int
    solution: str  # reference: one line per step, then "The answer is N."
    steps: int
    template: str  # scenario + operation kinds, numbers left out
    instance: str  # sha256 of template + numbers
    split: str  # "train" | "test"
    ops: tuple[tuple, ...]  # (kind, *numbers) as drawn, opening first

    def meta(self) -> dict:
        return {
            "generator": "synth",
            "template": self.template,
            "instance": self.instance,
            "split": self.split,
            "steps": self.steps,
            "ops": [list(op) for op in self.ops],
        }


def parse_steps_range(text: str) -> tuple[int, int]:
    """ "3" -> (3, 3); "1-4" -> (1, 4); anything else, or outside 1-6, is a clear error."""
    parts = text.strip().split("-")
    try:
        low, high = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (0, -1)
    except ValueError:
        low, high = 0, -1
    if not MIN_STEPS <= low <= high <= MAX_STEPS:
        raise StepScopeError(
            f"steps must be a number or a range like 1-4, between {MIN_STEPS} and {MAX_STEPS}: "
            f"got {text!r}"
        )
    return low, high


def instance_hash(template: str, numbers: Sequence[int]) -> str:
    return hashlib.sha256(json.dumps([template, list(numbers)]).encode()).hexdigest()


def split_of(instance: str, test_fraction: float = DEFAULT_TEST_FRACTION) -> str:
    """The instance's split; depends on nothing but its hash and the fraction."""
    return "test" if int(instance[:8], 16) < test_fraction * _SPLIT_BUCKETS else "train"


def _draw_ops(rng: random.Random, steps: int) -> list[tuple]:
    """Opening plus operations totalling `steps` arithmetic steps, values kept in range."""
    ops: list[tuple] = []
    if rng.random() < (0.3 if steps == 1 else 0.5):
        a, b = rng.randint(2, 9), rng.randint(3, 12)
        ops.append(("groups", a, b))
        value, remaining = a * b, steps - 1
    else:
        value = rng.randint(12, 60)
        ops.append(("plain", value))
        remaining = steps
    for index in range(remaining):
        choices = _possible_ops(value, last=index == remaining - 1)
        kind = rng.choices(list(choices), weights=[choices[k] for k in choices])[0]
        n = _draw_operand(rng, kind, value)
        ops.append((kind, n))
        value = _apply(kind, value, n)
    return ops


def _possible_ops(value: int, last: bool) -> dict[str, float]:
    """Operation kinds that keep the result a positive integer within MAX_VALUE, by weight."""
    weights = {"add": 3.0, "sub": 3.0 if value >= 6 else 0.0,
               "times": 1.0 if value * 2 <= MAX_VALUE else 0.0}  # fmt: skip
    if last:
        weights["share"] = 1.0 if _divisors(value) else 0.0
        weights["price"] = 1.0
    return {kind: weight for kind, weight in weights.items() if weight > 0}


def _divisors(value: int) -> list[int]:
    return [d for d in range(2, 10) if value % d == 0 and value // d >= 2]


def _draw_operand(rng: random.Random, kind: str, value: int) -> int:
    if kind == "add":
        return rng.randint(3, min(40, MAX_VALUE - value))
    if kind == "sub":
        return rng.randint(2, min(40, value - 3))
    if kind == "times":
        return rng.randint(2, max(2, min(4, MAX_VALUE // value)))
    if kind == "share":
        return rng.choice(_divisors(value))
    return rng.randint(2, 9)  # price


def _apply(kind: str, value: int, n: int) -> int:
    if kind == "add":
        return value + n
    if kind == "sub":
        return value - n
    if kind == "share":
        return value // n
    return value * n  # times, price


def _plural(noun: str) -> str:
    return noun[:-1] + "ves" if noun.endswith("f") else noun + "s"


def _render(scenario: Scenario, ops: list[tuple], person: tuple[str, str]) -> tuple[str, str, int]:
    """(question, reference solution, gold) for drawn operations."""
    name, pronoun = person
    words = {"Name": name, "name": name, "P": pronoun.capitalize(), "p": pronoun,
             "unit": scenario.unit}  # fmt: skip
    sentences, lines = [], []
    opening = ops[0]
    if opening[0] == "groups":
        a, b = opening[1:]
        value = a * b
        sentences.append(scenario.groups.format(a=a, b=b, **words))
        lines.append(f"{a} {scenario.container_plural} of {b} {scenario.unit} make {a} * {b} = {value} "
                     f"{scenario.unit}.")  # fmt: skip
    else:
        value = opening[1]
        sentences.append(scenario.plain.format(a=value, **words))
    question_sentence = scenario.question.format(**words)
    unit = scenario.unit
    for kind, n in ops[1:]:
        result = _apply(kind, value, n)
        equation = f"{value} {_SYMBOL[kind]} {n} = {result}"
        if kind == "add":
            sentences.append(scenario.gain.format(n=n, **words))
            lines.append(f"After {scenario.gain_step.format(n=n)}, there are {equation} {unit}.")
        elif kind == "sub":
            sentences.append(scenario.loss.format(n=n, **words))
            lines.append(f"After {scenario.loss_step.format(n=n)}, {equation} {unit} are left.")
        elif kind == "times":
            sentences.append(scenario.times.format(n=n, **words))
            lines.append(f"{n} times as many is {equation} {unit}.")
        elif kind == "share":
            into = scenario.share_container
            sentences.append(f"All of them are split equally into {n} {_plural(into)}.")
            question_sentence = f"How many {unit} does each {into} get?"
            lines.append(f"Each {into} gets {equation} {unit}.")
        else:  # price
            question_sentence = scenario.price.format(n=n, **words)
            lines.append(f"{value} {unit} at {n} each are worth {equation} {scenario.money}.")
        value = result
    question = " ".join([*sentences, question_sentence])
    solution = "\n".join([*lines, f"The answer is {value}."])
    return question, solution, value


def generate(
    steps_range: tuple[int, int],
    count: int,
    seed: int,
    *,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> list[SynthProblem]:
    """`count` distinct problems, step counts spread evenly (round robin) over the range.

    Deterministic: the same arguments give the same problems in the same order.
    """
    low, high = steps_range
    if not MIN_STEPS <= low <= high <= MAX_STEPS:
        raise StepScopeError(f"steps must be between {MIN_STEPS} and {MAX_STEPS}: got {low}-{high}")
    if count < 1:
        raise StepScopeError(f"count must be at least 1: got {count}")
    if not 0.0 <= test_fraction <= 1.0:
        raise StepScopeError(f"test fraction must be between 0 and 1: got {test_fraction}")
    rng = random.Random(seed)
    problems: list[SynthProblem] = []
    seen: set[str] = set()
    step_counts = list(range(low, high + 1))
    for index in range(count):
        steps = step_counts[index % len(step_counts)]
        for _attempt in range(1000):
            problem = _draw_problem(rng, steps, test_fraction)
            if problem.instance not in seen:
                break
        else:  # only a tiny space (1 step, huge count) runs out of distinct instances
            raise StepScopeError(
                f"could not draw {count} distinct {steps}-step problems; ask for fewer"
            )
        seen.add(problem.instance)
        problems.append(problem)
    return problems


def _draw_problem(rng: random.Random, steps: int, test_fraction: float) -> SynthProblem:
    scenario = rng.choice(SCENARIOS)
    ops = _draw_ops(rng, steps)
    template = "/".join([scenario.name, *(op[0] for op in ops)])
    numbers = [number for op in ops for number in op[1:]]
    instance = instance_hash(template, numbers)
    # The person follows from the instance, so one instance always reads the same.
    person = _PEOPLE[int(instance[8:16], 16) % len(_PEOPLE)]
    question, solution, gold = _render(scenario, ops, person)
    return SynthProblem(
        question=question, gold=gold, solution=solution, steps=steps, template=template,
        instance=instance, split=split_of(instance, test_fraction), ops=tuple(ops),
    )  # fmt: skip


def write_synth(
    store,
    dataset: str,
    steps_range: tuple[int, int],
    count: int,
    seed: int,
    *,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> dict[str, int]:
    """Add generated problems and their reference solutions to `store`; counts per split.

    Writing the same arguments twice adds nothing new (problems and trajectories are keyed by
    their content).
    """
    from core.grading import grade

    if not dataset.strip():
        raise StepScopeError("the dataset name must not be empty")
    problems = generate(steps_range, count, seed, test_fraction=test_fraction)
    written = {"train": 0, "test": 0}
    with store.transaction():
        for problem in problems:
            meta = problem.meta()
            problem_id = store.add_problem(dataset, problem.question, str(problem.gold), meta=meta)
            graded = grade(problem.solution, str(problem.gold))
            store.add_trajectory(
                problem_id, problem.solution, source=REFERENCE_SOURCE, rule="line",
                final_answer=graded.answer, correct=graded.correct,
                meta={"split": problem.split, "steps": problem.steps, "seed": seed},
            )  # fmt: skip
            written[problem.split] += 1
    return written


# --- long reasoning traces ----------------------------------------------------------------------
# A long trace is a model-style thinking trace over one long running-quantity problem: one
# paragraph per step (so the ground-truth step boundaries are where each paragraph starts), with
# reflection segments (steps opening with "Wait", "Let me check", ...) that recheck a result,
# correct a slip, or introduce an error, each at a step the trace records. Why: splitters, the
# first-error search and the views for long traces need traces of a chosen length whose steps
# and first error are known exactly, in the shapes real ones come in (OpenR1-Math, chat).

MIN_LONG_STEPS, MAX_LONG_STEPS = 16, 256
# correct: rechecks only; corrected: a slip that the next step ("Wait, ...") corrects, so the
# answer is right but the slip is the first error (ProcessBench's rule: the earliest wrong step,
# corrected or not); wrong: a recheck that gets a right result wrong and carries it to the end.
LONG_OUTCOMES = ("correct", "corrected", "wrong")
_RECHECKS = (
    "Let me check: {v} {op} {n} = {r}. Yes, {r} is right.",
    "Let me verify that: {r} {inverse} {n} = {v}, so {r} is right.",
    "Alternatively, counting back from {r}: {r} {inverse} {n} = {v}. It matches.",
    "Hmm, is {r} right? {v} {op} {n} = {r}. Yes.",
)
_CORRECTION = "Wait, {v} {op} {n} is {r}, not {wrong}. So there are {r} {unit}."
_INTRODUCED = "But wait, let me redo that: {v} {op} {n} = {wrong}. So there are {wrong} {unit}."
_RECHECK_RATE = 0.2  # about one recheck per five operations, as R1 traces recheck often


@dataclass(frozen=True)
class LongTrace:
    """A synthetic reasoning trace with its ground truth: the steps of its think part (one
    paragraph each, `boundaries` their start offsets), the first wrong step (None if none), and
    every reflection step with its kind (recheck, correct, introduce)."""

    question: str
    gold: int
    think: str  # the think part as between the tags: a line break, paragraphs parted by blank lines, a line break
    answer: str  # the answer part, after </think>
    steps: tuple[str, ...]
    boundaries: tuple[int, ...]
    first_error: int | None
    reflections: tuple[tuple[int, str], ...]
    final: int  # the answer the trace gives
    outcome: str

    @property
    def text(self) -> str:
        """The whole generation, as OpenR1-Math stores one."""
        return f"<think>{self.think}</think>\n\n{self.answer}"

    def ground_truth(self) -> dict:
        return {"steps": len(self.steps), "boundaries": list(self.boundaries), "first_error": self.first_error,
                "reflections": [list(r) for r in self.reflections], "outcome": self.outcome}  # fmt: skip

    def openr1_record(self) -> dict:
        """An OpenR1-Math-220k record with this trace as its one generation."""
        return {
            "problem": self.question, "answer": str(self.gold), "generations": [self.text],
            "correctness_math_verify": [self.final == self.gold], "is_reasoning_complete": [True],
            "finish_reasons": ["stop"], "source": "stepscope-synth", "ground_truth": self.ground_truth(),
        }  # fmt: skip

    def chat_record(self, *, reasoning_field: bool = True) -> dict:
        """A chat record: the thinking in `reasoning_content` (or in `<think>` tags in the content)."""
        assistant = ({"role": "assistant", "reasoning_content": self.think, "content": self.answer} if reasoning_field
                     else {"role": "assistant", "content": self.text})  # fmt: skip
        return {"messages": [{"role": "user", "content": self.question}, assistant], "answer": str(self.gold),
                "ground_truth": self.ground_truth()}  # fmt: skip


def long_trace(steps: int, seed: int, *, outcome: str = "correct") -> LongTrace:
    """A `steps`-step trace (16-256) with the given outcome; the same arguments give the same trace."""
    if not MIN_LONG_STEPS <= steps <= MAX_LONG_STEPS:
        raise StepScopeError(f"a long trace has {MIN_LONG_STEPS} to {MAX_LONG_STEPS} steps: got {steps}")
    if outcome not in LONG_OUTCOMES:
        raise StepScopeError(f"outcome is one of {', '.join(LONG_OUTCOMES)}: got {outcome!r}")
    rng = random.Random(f"long-trace/{steps}/{seed}/{outcome}")
    scenario = rng.choice(SCENARIOS)
    name, pronoun = rng.choice(_PEOPLE)
    words = {"Name": name, "name": name, "P": pronoun.capitalize(), "p": pronoun, "unit": scenario.unit}
    unit = scenario.unit
    start = rng.randint(40, 200)
    sentences = [scenario.plain.format(a=start, **words)]
    texts = [f"Okay, so {name} starts with {start} {unit}, and I need to follow every change."]
    reflections: list[tuple[int, str]] = []
    # Where the error happens: an operation step late enough to follow and early enough that
    # the correction (or the wrong value's consequences) still fits before the last step.
    error_at = rng.randint(3, steps - 4) if outcome != "correct" else -1
    first_error = None
    true_value = shown_value = start  # what the quantity is, and what the trace believes it is
    while len(texts) < steps - 1:
        index = len(texts)
        wants_error = outcome != "correct" and first_error is None and index >= error_at
        if outcome == "wrong" and wants_error and len(texts) >= 2 and not texts[-1].startswith(("Let", "Alt", "Hmm")):
            # A recheck that gets the last result wrong: the trace goes on from the wrong value.
            wrong = shown_value + rng.choice((1, 10))
            texts.append(_INTRODUCED.format(wrong=wrong, unit=unit, **last))
            reflections.append((index, "introduce"))
            first_error, shown_value = index, wrong
            continue
        # Both the true and the believed quantity stay positive integers within MAX_VALUE.
        low_value, high_value = min(true_value, shown_value), max(true_value, shown_value)
        can_add, can_sub = MAX_VALUE - high_value >= 2, low_value - 3 >= 2
        kind = "add" if can_add and (not can_sub or rng.random() < 0.5) else "sub"
        n = rng.randint(2, min(40, MAX_VALUE - high_value)) if kind == "add" else rng.randint(2, min(40, low_value - 3))
        op, inverse = ("+", "-") if kind == "add" else ("-", "+")
        result = _apply(kind, shown_value, n)
        true_value = _apply(kind, true_value, n)
        sentences.append((scenario.gain if kind == "add" else scenario.loss).format(n=n, **words))
        step_words = (scenario.gain_step if kind == "add" else scenario.loss_step).format(n=n)
        last = {"v": shown_value, "op": op, "n": n, "r": result, "inverse": inverse}
        if outcome == "corrected" and wants_error and len(texts) < steps - 2:
            wrong = result + rng.choice((1, 10))
            texts.append(f"After {step_words}, that makes {shown_value} {op} {n} = {wrong} {unit}.")
            texts.append(_CORRECTION.format(wrong=wrong, unit=unit, **last))
            first_error = index
            reflections.append((index + 1, "correct"))
        else:
            texts.append(f"After {step_words}, that makes {shown_value} {op} {n} = {result} {unit}.")
            # No recheck while the error is still to come: it must fit before the last step.
            if len(texts) < steps - 1 and not wants_error and rng.random() < _RECHECK_RATE:
                reflections.append((len(texts), "recheck"))
                texts.append(rng.choice(_RECHECKS).format(**last))
        shown_value = result
    if outcome != "correct" and first_error is None:
        raise AssertionError(f"long_trace({steps}, {seed}, outcome={outcome!r}) placed no error")  # a bug here
    texts.append(f"So in the end {name} has {shown_value} {unit}.")
    # The line breaks inside the tags are R1's; offsets count from the think part's first character,
    # so they are the offsets of the steps in the solution the importer stores.
    think = "\n" + "\n\n".join(texts) + "\n"
    boundaries = tuple(accumulate((len(text) + len("\n\n") for text in texts[:-1]), initial=1))
    question = " ".join([*sentences, scenario.question.format(**words)])
    answer = f"{name} has {shown_value} {unit} at the end.\n\nThe answer is {shown_value}."
    return LongTrace(
        question=question, gold=true_value, think=think, answer=answer, steps=tuple(texts), boundaries=boundaries,
        first_error=first_error, reflections=tuple(reflections), final=shown_value, outcome=outcome,
    )  # fmt: skip



LONG_SHAPES = ("openr1", "chat", "chat-think")


def long_trace_records(steps: int, count: int, seed: int, *, shape: str = "openr1") -> list[dict]:
    """`count` records of `steps`-step traces for the `reasoning` importer, the outcomes taken in
    turn (correct, corrected, wrong); each record carries its `ground_truth`."""
    if shape not in LONG_SHAPES:
        raise StepScopeError(f"shape is one of {', '.join(LONG_SHAPES)}: got {shape!r}")
    traces = [long_trace(steps, seed + index, outcome=LONG_OUTCOMES[index % len(LONG_OUTCOMES)]) for index in range(count)]
    if shape == "openr1":
        return [trace.openr1_record() for trace in traces]
    return [trace.chat_record(reasoning_field=shape == "chat") for trace in traces]
