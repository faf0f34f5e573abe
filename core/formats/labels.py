"""Label sources: where a step's correct/incorrect label comes from. One grammar, used by
exports, training, probes and Compare:

- `mc-hard`: Monte Carlo hard label: at least one rollout from the step reached the gold.
- `mc-soft:T`: the fraction of rollouts that reached the gold is at least T (0..1).
- `judge:NAME`, `prm:NAME`, `probe:NAME`, `orm:NAME`: the latest step verdict of verifier NAME, of
  that kind (core.store.verifiers: the kind is data, checked against the store): score >= 0.5,
  or the threshold a caller chose (Compare's for a PRM). A stored name that already starts with
  its kind (`prm:math-shepherd`, the PRM scorer's default) is also accepted as it is.
- `human:NAME`: annotator NAME's rating: -1 is wrong; 0 (neutral) and +1 are right, as
  PRM800K-trained PRMs count neutral steps; an unrated step marked as first error is wrong.
- `human`: every annotator's ratings, read the same way (0 counts as right): a step is right
  when more than half of those who labelled it say so (as `majority`); PRM training, which
  takes soft targets, learns the share of them who say so.
- `consensus`: every annotator who labelled the step agrees (by the `human` reading); steps
  they disagree on are unlabelled.
- `majority`: more than half of the annotators who labelled the step call it right; a tie is
  wrong (the cautious reading).

Labels come from the trajectory's current segmentation. A step without a label is None;
exporters that need a label for every step keep the longest fully labelled prefix.

Provenance of MC labels (issue 24). A search that spends rollouts where they decide something
(core.mcpe.FirstErrorSearch) leaves most steps unsampled: every step of a correct solution, and
the steps before a located error. Each MC label therefore says where it came from:

- `sampled`: the step's own rollouts (n, and how many reached the gold);
- `implied-by-search`: reachability only goes from yes to no along a solution (the first-error
  search's assumption), so an unsampled step before a step some rollout reached the gold from is
  reachable (rule `before-reached`: before the located first error), and one after a sampled step
  no rollout did is unreachable (rule `after-first-error`);
- `implied-by-outcome`: the trajectory's stored outcome (graded, or an imported file's label). A
  correct final answer makes every unsampled step reachable (rule `outcome-correct`: the rest of
  the solution is itself a continuation that reaches the gold, so this is certain, not assumed);
  a wrong one makes the last step, the whole solution, unreachable (rule `outcome-wrong`), as the
  search itself settles the last step.

A step the two directions disagree on (the data break the assumption) stays unlabelled. Implied
labels are taken by default; `sampled_only` (the CLI's `--sampled-only`) takes the step's own
rollouts only. `mc-soft:T` takes implied unreachable steps (a value of 0) but no implied
reachable ones: reachability says nothing of the fraction.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Iterator, Sequence

import numpy as np

from core.errors import StepScopeError
from core.formats.base import ExportOptions
from core.formats.sorted_streams import chunked, join_sorted
from core.store import Store
from core.store.export import STEP_COLUMNS

_TEXT = STEP_COLUMNS.index("text")

MC_SOURCES = ("mc-hard", "mc-soft")
VERIFIER_SOURCES = ("judge", "prm", "probe", "orm")  # verifier kinds whose verdicts label steps
CONSENSUS, MAJORITY = "consensus", "majority"
SOURCES_HELP = ("mc-hard, mc-soft:THRESHOLD, judge|prm|probe|orm:NAME, human[:ANNOTATOR] (0 = neutral counts as "
                "right; no name: more than half of the annotators), consensus or majority")
_PAGE = 2000  # trajectories whose labels an export computes together


@dataclass(frozen=True)
class LabelSource:
    kind: str  # mc-hard | mc-soft | judge | prm | probe | orm | human | consensus | majority
    name: str | None = None  # verifier or annotator
    threshold: float | None = None  # mc-soft; a verifier's score threshold (default 0.5)
    sampled_only: bool = False  # MC: the step's own rollouts only, no label implied by search or outcome

    def __str__(self) -> str:
        if self.kind == "mc-soft":
            return "mc-soft" if self.threshold is None else f"mc-soft:{self.threshold:g}"
        if self.name is None:
            return self.kind
        # A name that already says its kind is shown as it is, not as "prm:prm:NAME".
        return self.name if self.name.startswith(f"{self.kind}:") else f"{self.kind}:{self.name}"

    @property
    def is_verifier(self) -> bool:
        return self.kind in VERIFIER_SOURCES

    @property
    def is_human(self) -> bool:
        return self.kind in ("human", CONSENSUS, MAJORITY)


def parse_label_source(spec: str, *, threshold: float | None = None) -> LabelSource:
    """A label source from its spelling; `threshold` stands for mc-soft's when it is left out
    (Compare chooses it with a slider)."""
    kind, _, argument = spec.strip().partition(":")
    if kind in ("mc-hard", CONSENSUS, MAJORITY) and not argument:
        return LabelSource(kind)
    if kind == "mc-soft" and (argument or threshold is not None):
        try:
            value = float(argument) if argument else threshold
        except ValueError:
            value = -1.0
        if not 0.0 <= value <= 1.0:
            raise StepScopeError(f"mc-soft needs a threshold between 0 and 1, not {argument!r}")
        return LabelSource(kind, threshold=value)
    if (kind in VERIFIER_SOURCES or kind == "human") and argument.strip():
        return LabelSource(kind, name=argument.strip())
    if kind == "human" and not argument:
        return LabelSource(kind)  # every annotator
    raise StepScopeError(f"unknown label source {spec!r}; use {SOURCES_HELP}")


def resolve_label_source(store: Store, source: LabelSource | str) -> LabelSource:
    """The source with its name as stored, checked against the store: a typo in a name would
    otherwise label nothing without a word, and a verifier of another kind is named as such."""
    if isinstance(source, str):
        source = parse_label_source(source)
    if source.kind == "human" and source.name is not None:
        known = [a["name"] for a in store.annotators()]
        if source.name not in known:
            raise StepScopeError(f"no annotator named {source.name!r} in {store.path}; known: {', '.join(known) or 'none'}")
        return source
    if not source.is_verifier:
        return source
    kinds = store.verifier_kinds()
    for name in (source.name, f"{source.kind}:{source.name}"):
        if kinds.get(name) == source.kind:
            return replace(source, name=name)
    if source.name in kinds:
        raise StepScopeError(f"{source.name!r} is a {kinds[source.name]} verifier, not a {source.kind}: "
                             f"use {kinds[source.name]}:{source.name}")  # fmt: skip
    known = [str(LabelSource(kind, name)) for name, kind in kinds.items() if kind == source.kind]
    raise StepScopeError(f"no {source.kind} named {source.name!r} in {store.path}; known: {', '.join(known) or 'none'}")


def verifier_sources(store: Store, step_verifiers: list[str]) -> list[LabelSource]:
    """Label sources for the named verifiers (e.g. those with step verdicts), by their stored kind."""
    kinds = store.verifier_kinds()
    return [LabelSource(kinds[name], name) for name in step_verifiers if kinds.get(name) in VERIFIER_SOURCES]


def human_label(rating: int | None, first_error: bool) -> bool | None:
    if rating is not None:
        return rating >= 0
    return False if first_error else None


# Provenance and rule codes as the arrays hold them (0: no label); the names are what exports
# write and the CLI and manifests count.
SAMPLED, BY_SEARCH, BY_OUTCOME = "sampled", "implied-by-search", "implied-by-outcome"
PROVENANCES = (None, SAMPLED, BY_SEARCH, BY_OUTCOME)
RULES = {
    "outcome-correct": "a correct graded outcome: every step reachable",
    "outcome-wrong": "a wrong graded outcome: the last step (the whole solution) unreachable",
    "before-reached": "before a step some rollout reached the gold from (before the located first error): reachable",
    "after-first-error": "after the located first error (a sampled step no rollout reached the gold from): unreachable",
}
RULE_NAMES = (None, *RULES)
_P = {name: code for code, name in enumerate(PROVENANCES)}
_R = {name: code for code, name in enumerate(RULE_NAMES)}


@dataclass(frozen=True)
class McLabels:
    """MC labels of a list of steps, as arrays in the steps' order."""

    values: np.ndarray  # the training target: mc-hard 1/0, mc-soft the fraction; implied 1/0; NaN none
    labels: np.ndarray  # 1.0 right, 0.0 wrong, NaN none
    provenance: np.ndarray  # codes into PROVENANCES
    rule: np.ndarray  # codes into RULE_NAMES (implied labels only)
    n: np.ndarray  # rollouts sampled from the step
    correct: np.ndarray  # of which reached the gold

    def label_list(self) -> list[bool | None]:
        return [None if np.isnan(v) else bool(v) for v in self.labels.tolist()]

    def provenance_list(self) -> list[str | None]:
        return [PROVENANCES[code] for code in self.provenance.tolist()]


def mc_labels(store: Store, step_ids: Sequence[int], source: LabelSource, *, policy: str | None = None) -> McLabels:
    """The MC labels of the steps with their provenance (module docstring), set-wise: one query
    (core.store.label_provenance) and array arithmetic, whatever the number of steps. `policy`
    counts only that model's rollouts (None pools every model's)."""
    return mc_labels_from_evidence(store.step_reach_evidence(step_ids, model=policy), source)


def reach_evidence(trajectory_ids: Sequence[int], n: Sequence[int], correct: Sequence[int],
                   outcome: Sequence[int | None]) -> dict[str, np.ndarray]:  # fmt: skip
    """step_reach_evidence's columns for whole segmentations listed one after another in step
    order (an export's stream of current steps, core.store.export), by array arithmetic on the
    rows instead of a query: for each step, whether a later step of its trajectory has a rollout
    that reached the gold, whether an earlier one was sampled with none that did, whether it is the
    last step; `outcome` is the trajectory's graded final answer (1, 0, None)."""
    owner = np.asarray(trajectory_ids, dtype=np.int64)
    found = {"n": np.asarray(n, dtype=np.int64), "correct": np.asarray(correct, dtype=np.int64),
             "outcome": np.array(outcome, dtype=float)}  # fmt: skip
    if not len(owner):
        found.update({name: np.zeros(0, dtype=np.int64) for name in ("later_reached", "earlier_failed", "last")})
        return found
    starts = np.r_[True, owner[1:] != owner[:-1]]
    ends = np.r_[owner[1:] != owner[:-1], True]
    group = np.cumsum(starts) - 1

    def counted_within(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(how many flags up to and including each step, how many in its whole trajectory)."""
        total = np.cumsum(flags)
        upto = total - (total - flags)[starts][group]
        return upto, upto[ends][group]

    reached = (found["correct"] > 0).astype(np.int64)
    failed = ((found["n"] > 0) & (found["correct"] == 0)).astype(np.int64)
    reached_upto, reached_all = counted_within(reached)
    failed_upto, _ = counted_within(failed)
    found["later_reached"] = (reached_all - reached_upto > 0).astype(np.int64)
    found["earlier_failed"] = (failed_upto - failed > 0).astype(np.int64)
    found["last"] = ends.astype(np.int64)
    return found


def mc_labels_from_evidence(found: dict[str, np.ndarray], source: LabelSource) -> McLabels:
    """The MC labels and their provenance from a step's reach evidence (step_reach_evidence's
    columns, or reach_evidence's)."""
    n, correct = found["n"], found["correct"]
    sampled = n > 0
    fraction = np.divide(correct, n, out=np.full(len(n), np.nan), where=sampled)
    unsampled = ~sampled
    outcome = found["outcome"]
    reach_outcome = unsampled & (outcome == 1.0)
    reach_search = unsampled & (found["later_reached"] > 0)
    fail_outcome = unsampled & (found["last"] > 0) & (outcome == 0.0)
    fail_search = unsampled & (found["earlier_failed"] > 0)
    reach, fail = reach_outcome | reach_search, fail_outcome | fail_search
    agreed = ~(reach & fail)  # a trajectory that breaks monotonicity implies nothing where it conflicts
    reach, fail = reach & agreed, fail & agreed
    if source.sampled_only:
        reach = fail = np.zeros(len(n), dtype=bool)
    if source.kind == "mc-soft":
        reach = np.zeros(len(n), dtype=bool)  # reachable says nothing of the fraction
    values = np.where(sampled, (correct > 0).astype(float) if source.kind == "mc-hard" else fraction, np.nan)
    values[reach], values[fail] = 1.0, 0.0
    if source.kind == "mc-hard":
        labels = values.copy()
    else:
        labels = np.where(np.isnan(values), np.nan, (values >= source.threshold).astype(float))
    provenance = np.zeros(len(n), dtype=np.int8)
    provenance[sampled] = _P[SAMPLED]
    rule = np.zeros(len(n), dtype=np.int8)
    # The outcome is the direct evidence, so it names a label both it and the search imply.
    for mask, by, name in ((fail & fail_search, BY_SEARCH, "after-first-error"),
                           (fail & fail_outcome, BY_OUTCOME, "outcome-wrong"),
                           (reach & reach_search, BY_SEARCH, "before-reached"),
                           (reach & reach_outcome, BY_OUTCOME, "outcome-correct")):  # fmt: skip
        provenance[mask], rule[mask] = _P[by], _R[name]
    return McLabels(values, labels, provenance, rule, n, correct)


class ProvenanceTally:
    """How many labels of each provenance (and implied ones by rule) an export or a training used."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()

    def add(self, provenance: np.ndarray, rule: np.ndarray) -> None:
        for code, count in enumerate(np.bincount(provenance, minlength=len(PROVENANCES)).tolist()):
            if code and count:
                self.counts[PROVENANCES[code]] += count
        for code, count in enumerate(np.bincount(rule, minlength=len(RULE_NAMES)).tolist()):
            if code and count:
                self.counts[RULE_NAMES[code]] += count

    def as_dict(self) -> dict:
        """{"sampled": n, "implied-by-search": n, "implied-by-outcome": n, "rules": {rule: n}}."""
        return {**{name: self.counts[name] for name in PROVENANCES[1:]},
                "rules": {name: self.counts[name] for name in RULES if self.counts[name]}}  # fmt: skip

    def summary(self) -> str:
        return provenance_summary(self.as_dict())


def provenance_summary(counts: dict) -> str:
    """One line: "labels: 12 sampled, 30 implied-by-search (after-first-error 30), 48 implied-by-outcome
    (outcome-correct 48)" from ProvenanceTally.as_dict()'s shape."""
    rules = counts.get("rules", {})
    parts = []
    for name in PROVENANCES[1:]:
        mine = [f"{rule} {rules[rule]}" for rule in RULES if rules.get(rule) and _rule_provenance(rule) == name]
        parts.append(f"{counts.get(name, 0)} {name}" + (f" ({', '.join(mine)})" if mine else ""))
    return "labels: " + ", ".join(parts)


def _rule_provenance(rule: str) -> str:
    return BY_OUTCOME if rule.startswith("outcome-") else BY_SEARCH


def page_labels(
    store: Store, steps: list[dict], source: LabelSource
) -> tuple[list[bool | None], dict[str, list] | None, McLabels | None]:
    """The labels of any number of steps (of one trajectory or of a page of them), set-wise; for
    a human source the annotator's confidence and error category per step; for an MC source the
    labels' provenance (McLabels)."""
    ids = [step["id"] for step in steps]
    if source.kind in MC_SOURCES:
        found = mc_labels(store, ids, source)
        return found.label_list(), None, found
    if source.is_verifier:
        latest = store.latest_step_scores(source.name, ids)
        cut = 0.5 if source.threshold is None else source.threshold
        return [None if latest.get(i) is None else latest[i] >= cut for i in ids], None, None
    by_step: dict[int, list[bool | None]] = defaultdict(list)
    mine: dict[int, tuple] = {}
    annotator = source.name if source.kind == "human" else None
    for step_id, _, rating, first_error, confidence, category in store.step_annotations(ids, annotator=annotator):
        by_step[step_id].append(human_label(rating, bool(first_error)))
        mine[step_id] = (confidence, category)
    # `human` without a name pools every annotator as `majority` does (the module docstring).
    pooled = source.kind == MAJORITY or (source.kind == "human" and source.name is None)
    combine = majority_label if pooled else agreed_label
    labels = [combine(by_step.get(i, [])) for i in ids]
    if source.kind != "human" or source.name is None:
        return labels, None, None
    latents = {
        "confidences": [mine.get(i, (None, None))[0] for i in ids],
        "categories": [mine.get(i, (None, None))[1] for i in ids],
    }
    return labels, latents, None


def agreed_label(labels: list[bool | None]) -> bool | None:
    """`consensus` (and one annotator's own label): the label every given one agrees on."""
    given = {label for label in labels if label is not None}
    return given.pop() if len(given) == 1 else None


def majority_label(labels: list[bool | None]) -> bool | None:
    """`majority`: right when more than half of the given labels say right; a tie is wrong."""
    given = [label for label in labels if label is not None]
    return sum(given) > len(given) / 2 if given else None


def agreed_of_votes(right: int, wrong: int) -> bool | None:
    """agreed_label of `right` labels that say right and `wrong` that say wrong."""
    if right and not wrong:
        return True
    return False if wrong and not right else None


def majority_of_votes(right: int, wrong: int) -> bool | None:
    """majority_label of `right` labels that say right and `wrong` that say wrong."""
    return right > (right + wrong) / 2 if right + wrong else None


def labelled_prefix(labels: list[bool | None]) -> int:
    """How many steps from the start all have a label."""
    for k, label in enumerate(labels):
        if label is None:
            return k
    return len(labels)


# A row's provenance codes, rule codes, rollouts and rollouts that reached the gold, one per step.
RowProvenance = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def labelled_rows(
    store: Store, options: ExportOptions, *, page: int = _PAGE
) -> Iterator[tuple[dict, list[str], list[bool | None], dict[str, list] | None, RowProvenance | None]]:
    """(trajectory, its current steps' texts, their labels, a human source's latents or None, an
    MC source's provenance codes or None) for each trajectory with any label, in id order.

    Two streams ordered by trajectory (core.store.export: the trajectories, and their current
    steps each with what labels it), merged in one pass; the labels of `page` trajectories at a
    time are computed together, so memory holds one page and the queries are the same few
    whatever the size of the store.

    A trajectory is a dict with id, key, problem_id, source, model, correct, dataset, question,
    gold and segmentation_id."""
    if options.labels is None:
        raise StepScopeError(f"this export needs --labels: {SOURCES_HELP}")
    source = resolve_label_source(store, options.labels)
    trajectories = store.export_trajectories(dataset=options.dataset)
    steps = _labelled_steps(store, source, options.dataset)
    for chunk in chunked(join_sorted(trajectories, itemgetter("id"), (steps, itemgetter(0))), page):
        labels, latents, mc = _stream_labels([row for _, rows in chunk for row in rows], source)
        at = 0
        for trajectory, rows in chunk:
            n = len(rows)
            mine = labels[at : at + n]
            if any(label is not None for label in mine):
                own = {name: values[at : at + n] for name, values in latents.items()} if latents else None
                marks = None if mc is None else tuple(
                    column[at : at + n] for column in (mc.provenance, mc.rule, mc.n, mc.correct))
                yield trajectory, [row[_TEXT] for row in rows], mine, own, marks
            at += n


def _labelled_steps(store: Store, source: LabelSource, dataset: str | None) -> Iterator[tuple]:
    """The current steps with the columns `source` reads its labels from (core.store.export)."""
    if source.kind in MC_SOURCES:
        return store.current_steps_with_rollouts(dataset=dataset)
    if source.is_verifier:
        return store.current_steps_with_score(source.name, dataset=dataset)
    if source.kind == "human" and source.name is not None:
        return store.current_steps_with_annotation(source.name, dataset=dataset)
    return store.current_steps_with_votes(dataset=dataset)


def _stream_labels(
    rows: list[tuple], source: LabelSource
) -> tuple[list[bool | None], dict[str, list] | None, McLabels | None]:
    """page_labels' answer for steps read from a stream (_labelled_steps' rows, whole
    trajectories in step order)."""
    if not rows:
        return [], None, None
    columns = list(zip(*rows))
    evidence = columns[len(STEP_COLUMNS):]
    if source.kind in MC_SOURCES:
        n, correct, outcome = evidence
        found = mc_labels_from_evidence(reach_evidence(columns[0], n, correct, outcome), source)
        return found.label_list(), None, found
    if source.is_verifier:
        cut = 0.5 if source.threshold is None else source.threshold
        return [None if score is None else score >= cut for score in evidence[0]], None, None
    if source.kind == "human" and source.name is not None:
        ratings, first_errors, confidences, categories = evidence
        # human_label, inlined: it runs once per step of the store.
        labels = [rating >= 0 if rating is not None else (False if first_error else None)
                  for rating, first_error in zip(ratings, first_errors)]  # fmt: skip
        return labels, {"confidences": list(confidences), "categories": list(categories)}, None
    # `human` without a name pools every annotator as `majority` does (the module docstring).
    pooled = source.kind == MAJORITY or (source.kind == "human" and source.name is None)
    combine = majority_of_votes if pooled else agreed_of_votes
    return [combine(right, wrong) for right, wrong in zip(*evidence)], None, None


# The columns an export adds per step for an MC source, in this order; none is ever null, so
# `datasets` infers one type per column whatever the first rows hold.
PROVENANCE_COLUMNS = ("provenance", "provenance_rule", "rollouts", "rollouts_reached")
SAMPLED_RULE = "own-rollouts"  # the provenance_rule of a sampled label


def used_provenance(options: ExportOptions, provenance: RowProvenance | None, n: int) -> dict[str, list] | None:
    """The provenance columns (PROVENANCE_COLUMNS) of the first `n` labels of a row that an export
    writes, counted into `options.tally` (the CLI prints it); None for a source without
    provenance (not MC). `provenance`: sampled, implied-by-search or implied-by-outcome;
    `provenance_rule`: own-rollouts for a sampled label, else the rule that implied it;
    `rollouts` and `rollouts_reached`: the step's own counts (0 when unsampled)."""
    if provenance is None:
        return None
    codes, rules, sampled, reached = (column[:n] for column in provenance)
    if options.tally is not None:
        options.tally.add(codes, rules)
    return {
        "provenance": [PROVENANCES[code] for code in codes.tolist()],
        "provenance_rule": [RULE_NAMES[rule] or SAMPLED_RULE for rule in rules.tolist()],
        "rollouts": sampled.tolist(),
        "rollouts_reached": reached.tolist(),
    }
