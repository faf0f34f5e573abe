"""Probe verifiers: logistic regression on a base model's hidden states, scored like any judge.

- Probe ORM (labels "outcome"): the hidden state at the last token of (policy prompt +
  solution), labelled by final-answer correctness. Trained on the policy's own trajectories.
- Probe PRM: the hidden state at the last token of each step, labelled by the Monte Carlo
  hard label ("mc-hard": some rollout from the step reached the gold answer), the soft label
  ("mc-soft": the fraction that did; fitted as a soft target, i.e. cross-entropy against the
  fraction), or human ratings ("human": -1 -> 0, 0 and +1 -> 1, several annotators averaged;
  a first-error mark without a rating counts as 0).

The text a probe reads (`context`): by default "question", the problem and the solution as
"Question: ...\nAnswer: ..." (what any base model can read, and several times shorter than the
policy's few-shot prompt, which dominates the cost of a forward pass on a CPU); or
"policy-prompt", exactly what the policy read: the trajectory's stored prompt (or the policy
template rendered for imported ones) followed by the solution, as in Monte Carlo prefixes.

Training is cross-validated with folds grouped by problem (StratifiedGroupKFold): solutions of
one problem share its answer, so a fold that held some of them would let the probe recognise
the problem rather than judge the solution. The regularisation strength is chosen inside each
training fold by a second grouped split (nested), on cross-entropy. The out-of-fold
probabilities are cross-fitted scores: no example is scored by a probe that saw it. They are
stored as verdicts (judge "probe-orm:<base>" or "probe-prm-<labels>:<base>"), and the metrics
(AUROC with a cluster-bootstrap interval over problems) go into the artifact's manifest.

Artifacts live in a folder `verifiers/probe/<name>/` next to the database (core.verifier_folders;
probes saved directly under `verifiers/` before that layout are still listed and loaded):
`model.joblib` (the scaler + logistic regression fitted on all examples, for scoring new
trajectories), `data.npz` (features, labels, groups, ids, out-of-fold scores and folds) and
`manifest.json` (base model, layer, data, labels, metrics). joblib files are pickles: load only
artifacts this program wrote.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from core.errors import StepScopeError, UnsupportedByEngine
from core.metrics import auroc, bootstrap, within_group_auroc_interval
from core.policy import PolicyTemplate, join_context, load_template, policy_context
from core.store import Store, content_key, now
from core.verifier_folders import kind_folder, read_manifest, verifier_folder, verifier_folders, write_manifest

PROBE_LABELS = ("outcome", "mc-hard", "mc-soft", "human")
PROBE_CONTEXTS = ("question", "policy-prompt")
C_GRID = (1e-3, 1e-2, 1e-1, 1.0)
DEFAULT_C = 1e-2  # when there are too few problems to choose by an inner split
VERIFIER_KIND = "probe"  # core.verifier_folders' kind, and each verdict's verifier_kind


def probe_judge_name(labels: str, base: str) -> str:
    """A probe's default verifier name (a name only: its kind is stored, core.store.verifiers)."""
    return f"probe-orm:{base}" if labels == "outcome" else f"probe-prm-{labels}:{base}"


def verifiers_dir(store: Store) -> Path:
    """The folder probe verifiers are saved in (core.verifier_folders)."""
    return kind_folder(store, VERIFIER_KIND)


def check_labels(labels: str) -> None:
    if labels not in PROBE_LABELS:
        raise StepScopeError(f"probe labels are one of {', '.join(PROBE_LABELS)}, not {labels!r}")


# --- examples ---------------------------------------------------------------------------------


@dataclass
class Examples:
    """What a probe is trained or scored on: one row per trajectory (ORM) or per step (PRM)."""

    trajectory_ids: np.ndarray
    step_ids: np.ndarray  # -1 for outcome examples
    groups: np.ndarray  # problem ids
    labels: np.ndarray  # in [0, 1]; NaN when scoring unlabelled examples

    def __len__(self) -> int:
        return len(self.trajectory_ids)

    @property
    def outcome(self) -> bool:
        return bool(len(self.step_ids)) and bool((self.step_ids == -1).all())


def _examples(rows: list[tuple[int, int, int, float]]) -> Examples:
    if not rows:
        return Examples(*(np.zeros(0, dtype=int) for _ in range(3)), np.zeros(0))
    t, s, g, y = zip(*rows)
    return Examples(np.array(t), np.array(s), np.array(g), np.array(y, dtype=float))


def outcome_examples(store: Store, trajectory_ids: Sequence[int], *, labelled: bool = True) -> Examples:
    """One example per trajectory; with `labelled`, those without a correctness flag are left out."""
    rows = []
    for trajectory_id in trajectory_ids:
        trajectory = _trajectory(store, trajectory_id)
        correct = trajectory.get("correct")
        if labelled and correct is None:
            continue
        rows.append((trajectory_id, -1, trajectory["problem_id"], np.nan if correct is None else float(correct)))
    return _examples(rows)


def step_examples(
    store: Store,
    trajectory_ids: Sequence[int],
    labels: str | None,
    *,
    policy: str | None = None,
    annotator: str | None = None,
) -> Examples:
    """One example per step of the current segmentation; labels None = every step, unlabelled.

    mc-hard / mc-soft use the rollouts of `policy` (None pools every model's rollouts); a step
    without rollouts (or without a human rating) is left out.
    """
    rows = []
    for trajectory_id in trajectory_ids:
        trajectory = _trajectory(store, trajectory_id)
        problem_id = trajectory["problem_id"]
        if labels is None:
            rows.extend((trajectory_id, s["id"], problem_id, np.nan) for s in store.steps(trajectory_id))
        elif labels in ("mc-hard", "mc-soft"):
            for value in store.step_values(trajectory_id, model=policy):
                if value["n"]:
                    label = float(value["hard"]) if labels == "mc-hard" else float(value["soft"])
                    rows.append((trajectory_id, value["step_id"], problem_id, label))
        elif labels == "human":
            rows.extend((trajectory_id, step_id, problem_id, label)
                        for step_id, label in _human_labels(store, trajectory_id, annotator))  # fmt: skip
        else:
            check_labels(labels)
            raise StepScopeError("outcome labels belong to trajectories: use outcome_examples")
    return _examples(rows)


def _human_labels(store: Store, trajectory_id: int, annotator: str | None) -> list[tuple[int, float]]:
    segmentation_id = store.get_trajectory(trajectory_id)["segmentation_id"]
    per_step: dict[int, list[float]] = {}
    for a in store.annotations(trajectory_id, annotator=annotator, segmentation_id=segmentation_id):
        if a["rating"] is not None:
            per_step.setdefault(a["step_id"], []).append(0.0 if a["rating"] == -1 else 1.0)
        elif a["first_error"]:
            per_step.setdefault(a["step_id"], []).append(0.0)
    return [(step_id, float(np.mean(v))) for step_id, v in sorted(per_step.items())]


def _trajectory(store: Store, trajectory_id: int) -> dict:
    trajectory = store.get_trajectory(int(trajectory_id))
    if trajectory is None:
        raise StepScopeError(f"trajectory {trajectory_id} does not exist")
    return trajectory


# --- features ---------------------------------------------------------------------------------


def probe_text(trajectory: dict, context: str = "question", template: PolicyTemplate | None = None) -> tuple[str, int]:
    """(the text the probe reads, where the solution starts in it)."""
    if context == "question":
        context = f"Question: {trajectory['question'].strip()}\nAnswer:"
    elif context == "policy-prompt":
        template = template or load_template()
        context = policy_context(trajectory["question"], trajectory.get("policy_prompt"), template)
    else:
        raise StepScopeError(f"probe context is one of {', '.join(PROBE_CONTEXTS)}, not {context!r}")
    text = join_context(context, trajectory["solution"])
    return text, len(text) - len(trajectory["solution"])


def hidden_features(
    store: Store,
    engine,
    examples: Examples,
    *,
    layer: int = -1,
    context: str = "question",
    template: PolicyTemplate | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[int, int], None] = lambda done, planned: None,
) -> np.ndarray | None:
    """One hidden-state row per example, one forward pass per trajectory; None if stopped."""
    if not hasattr(engine, "hidden_states"):
        raise UnsupportedByEngine(
            f"engine {engine.info.engine!r} gives no hidden states; train and score probes on transformers"
        )
    order = list(dict.fromkeys(examples.trajectory_ids.tolist()))
    rows: dict[tuple[int, int], np.ndarray] = {}
    for done, trajectory_id in enumerate(order):
        if should_stop():
            return None
        trajectory = _trajectory(store, trajectory_id)
        text, start = probe_text(trajectory, context, template)
        mask = examples.trajectory_ids == trajectory_id
        step_ids = examples.step_ids[mask].tolist()
        if examples.outcome:
            positions = [len(text)]
        else:
            positions = [start + store.get_step(s)["end_char"] for s in step_ids]
        states = engine.hidden_states([text], [positions], layer=layer)[0]
        for step_id, state in zip(step_ids, states):
            rows[(trajectory_id, step_id)] = state
        on_progress(done + 1, len(order))
    return np.stack([rows[(t, s)] for t, s in zip(examples.trajectory_ids.tolist(), examples.step_ids.tolist())])


# --- fitting ----------------------------------------------------------------------------------


def _expanded(X: np.ndarray, y: np.ndarray):
    """Rows twice, labelled 1 and 0 with weights y and 1 - y: cross-entropy against soft labels."""
    X2 = np.vstack([X, X])
    y2 = np.concatenate([np.ones(len(y)), np.zeros(len(y))])
    w = np.concatenate([y, 1 - y])
    keep = w > 0
    return X2[keep], y2[keep], w[keep]


class ConstantProbe:
    """What a training fold with a single class can learn: its base rate."""

    def __init__(self, rate: float) -> None:
        self.rate = rate

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.column_stack([np.full(len(X), 1 - self.rate), np.full(len(X), self.rate)])


def _fit(X: np.ndarray, y: np.ndarray, C: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if y.min() == y.max() and y[0] in (0.0, 1.0):
        return ConstantProbe(float(y[0]))
    X2, y2, w = _expanded(X, y)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000))
    pipeline.fit(X2, y2, logisticregression__sample_weight=w)
    return pipeline


def _cross_entropy(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def _splits(y: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(np.unique(groups))
    hard = (y >= 0.5).astype(int)
    n_splits = min(folds, n_groups)
    if n_splits < 2:
        return []
    # Stratification needs each class at least n_splits times; else grouped folds alone.
    if min(hard.sum(), len(hard) - hard.sum()) >= n_splits:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    else:
        from sklearn.model_selection import GroupKFold

        splitter = GroupKFold(n_splits=n_splits)
    return list(splitter.split(np.zeros(len(y)), hard, groups))


def choose_C(X: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0, inner_folds: int = 3) -> float:
    """The regularisation strength with the lowest grouped cross-validated cross-entropy."""
    splits = _splits(y, groups, inner_folds, seed)
    if not splits:
        return DEFAULT_C
    losses = []
    for C in C_GRID:
        fold_losses = [
            _cross_entropy(y[test], _fit(X[train], y[train], C).predict_proba(X[test])[:, 1])
            for train, test in splits
        ]
        losses.append(np.mean(fold_losses))
    return float(C_GRID[int(np.argmin(losses))])


def fit_probe(X: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0):
    """A probe fitted on all examples, its C chosen by grouped cross-validation; (model, C)."""
    C = choose_C(X, y, groups, seed)
    return _fit(X, y, C), C


@dataclass
class CrossFit:
    scores: np.ndarray  # out-of-fold P(correct)
    folds: np.ndarray  # the fold each example was scored in
    C: list[float]  # chosen per fold


def cross_fit(X: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = 5, seed: int = 0) -> CrossFit:
    """Out-of-fold probabilities from folds grouped by problem, C chosen inside each fold."""
    splits = _splits(y, groups, folds, seed)
    if not splits:
        raise StepScopeError("cross-validation needs examples from at least two problems")
    scores, fold_of, Cs = np.full(len(y), np.nan), np.full(len(y), -1), []
    for fold, (train, test) in enumerate(splits):
        model, C = fit_probe(X[train], y[train], groups[train], seed)
        scores[test] = model.predict_proba(X[test])[:, 1]
        fold_of[test] = fold
        Cs.append(C)
    return CrossFit(scores, fold_of, Cs)


def evaluate(scores: np.ndarray, y: np.ndarray, groups: np.ndarray, *, n_resamples: int = 1000, seed: int = 0) -> dict:
    """AUROC (plain and within problem) with cluster-bootstrap intervals, Brier, accuracy.

    Soft labels are binarised at 0.5 for the AUROC and accuracy; the Brier score uses them as
    they are.
    """
    hard = y >= 0.5
    interval = bootstrap(lambda idx: auroc(hard[idx], scores[idx]), len(y), groups=groups.tolist(),
                         n_resamples=n_resamples, seed=seed)  # fmt: skip
    within = within_group_auroc_interval(hard, scores, groups, n_resamples=n_resamples, seed=seed)
    return {
        "n": int(len(y)),
        "positives": int(hard.sum()),
        "problems": int(len(np.unique(groups))),
        "auroc": interval.as_dict(),
        "within_problem_auroc": within.as_dict(),
        "brier": float(np.mean((scores - y) ** 2)),
        "accuracy_at_0.5": float(np.mean((scores >= 0.5) == hard)),
        "base_rate": float(y.mean()),
    }


# --- artifacts --------------------------------------------------------------------------------


@dataclass
class Probe:
    folder: Path
    manifest: dict
    model: object = field(repr=False)

    @property
    def judge(self) -> str:
        return self.manifest["judge"]

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def sha256(self) -> str:
        return self.manifest["model_sha256"]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(X)[:, 1]


def save_probe(folder: Path, model, manifest: dict, arrays: dict[str, np.ndarray]) -> Probe:
    import joblib

    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / "model.joblib")
    np.savez_compressed(folder / "data.npz", **arrays)
    manifest = {**manifest, "model_sha256": hashlib.sha256((folder / "model.joblib").read_bytes()).hexdigest()[:16]}
    write_manifest(folder, manifest)
    return Probe(folder, manifest, model)


def load_probe(folder: str | Path) -> Probe:
    import joblib

    folder = Path(folder)
    manifest = read_manifest(folder)
    try:
        model = joblib.load(folder / "model.joblib")
    except (OSError, ValueError) as error:
        raise StepScopeError(f"cannot load probe verifier {folder}: {error}") from None
    return Probe(folder, manifest, model)


def list_probes(store: Store) -> list[dict]:
    """The probe verifiers saved next to this database, with their folder."""
    return [{"folder": str(folder), **read_manifest(folder)} for folder in verifier_folders(store, VERIFIER_KIND)]


# --- training and scoring ---------------------------------------------------------------------


@dataclass
class TrainedProbe:
    probe: Probe
    crossfit: CrossFit
    examples: Examples
    verdicts: list[dict]  # the cross-fitted verdict rows (stored when train_probe was given a store)


def labelled_examples(store: Store, trajectory_ids: Sequence[int], labels: str, *,
                      policy: str | None = None, annotator: str | None = None) -> Examples:  # fmt: skip
    check_labels(labels)
    if labels == "outcome":
        return outcome_examples(store, trajectory_ids)
    return step_examples(store, trajectory_ids, labels, policy=policy, annotator=annotator)


def train_probe(
    store: Store,
    engine,
    base: str,
    labels: str,
    trajectory_ids: Sequence[int],
    *,
    layer: int = -1,
    context: str = "question",
    folds: int = 5,
    seed: int = 0,
    policy: str | None = None,
    annotator: str | None = None,
    template: PolicyTemplate | None = None,
    job_id: int | None = None,
    extra_manifest: dict | None = None,
    store_verdicts: bool = True,
    should_stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[int, int], None] = lambda done, planned: None,
) -> TrainedProbe | None:
    """Features, grouped cross-fitting, a final fit, the artifact, and cross-fitted verdicts.

    Returns None when stopped before the features were all computed (nothing is written).
    """
    template = template or load_template()
    examples = labelled_examples(store, trajectory_ids, labels, policy=policy, annotator=annotator)
    hard = examples.labels >= 0.5
    if len(examples) < 4 or hard.all() or not hard.any():
        raise StepScopeError(
            f"a {labels} probe needs labelled examples of both kinds: {len(examples)} examples, "
            f"{int(hard.sum())} labelled correct"
        )
    if context not in PROBE_CONTEXTS:
        raise StepScopeError(f"probe context is one of {', '.join(PROBE_CONTEXTS)}, not {context!r}")
    X = hidden_features(store, engine, examples, layer=layer, context=context, template=template,
                        should_stop=should_stop, on_progress=on_progress)  # fmt: skip
    if X is None:
        return None
    crossfit = cross_fit(X, examples.labels, examples.groups, folds, seed)
    metrics = evaluate(crossfit.scores, examples.labels, examples.groups, seed=seed)
    model, C = fit_probe(X, examples.labels, examples.groups, seed)
    judge = probe_judge_name(labels, base)
    data_key = content_key("probe", base, labels, layer, context, examples.trajectory_ids.tolist(),
                           examples.step_ids.tolist(), examples.labels.tolist())[:12]  # fmt: skip
    folder = verifier_folder(store, VERIFIER_KIND, f"{judge}-{data_key}")
    manifest = {
        "judge": judge, "base": base, "engine_info": _engine_info(engine), "labels": labels,
        "kind": "outcome" if labels == "outcome" else "step", "layer": layer, "context": context,
        "features": int(X.shape[1]), "policy_template": {"name": template.name, "sha256": template.sha256},
        "label_policy": policy, "annotator": annotator, "folds": folds, "seed": seed,
        "C_grid": list(C_GRID), "C": C, "C_per_fold": crossfit.C, "metrics": metrics,
        "data": {"trajectories": len(set(examples.trajectory_ids.tolist())), "examples": len(examples),
                 "problems": int(len(np.unique(examples.groups))), "db": str(store.path)},
        "created_at": now(), "job_id": job_id, **(extra_manifest or {}),
    }  # fmt: skip
    probe = save_probe(folder, model, manifest, {
        "features": X.astype(np.float32), "labels": examples.labels, "groups": examples.groups,
        "trajectory_ids": examples.trajectory_ids, "step_ids": examples.step_ids,
        "crossfit_scores": crossfit.scores, "crossfit_folds": crossfit.folds,
    })  # fmt: skip
    rows = [
        _verdict(probe, int(t), int(s), float(p), {"crossfit": True, "fold": int(f)}, job_id)
        for t, s, p, f in zip(examples.trajectory_ids, examples.step_ids, crossfit.scores, crossfit.folds)
    ]
    if store_verdicts:
        store.add_verdicts(rows)
    return TrainedProbe(probe, crossfit, examples, rows)


def _engine_info(engine) -> dict:
    return {k: v for k, v in vars(engine.info).items() if k != "load_seconds"}


def _verdict(probe: Probe, trajectory_id: int, step_id: int, p: float, raw: dict, job_id: int | None) -> dict:
    return {
        "judge": probe.judge, "verifier_kind": VERIFIER_KIND, "kind": probe.manifest["kind"],
        "trajectory_id": trajectory_id,
        "step_id": None if step_id == -1 else step_id, "p_yes": p, "mass": None,
        "raw": json.dumps({"artifact": probe.name, **raw}), "template": probe.name,
        "template_hash": probe.sha256, "job_id": job_id,
    }  # fmt: skip


def probe_examples_for(store: Store, probe: Probe, trajectory_ids: Sequence[int]) -> Examples:
    if probe.manifest["kind"] == "outcome":
        return outcome_examples(store, trajectory_ids, labelled=False)
    return step_examples(store, trajectory_ids, None)


def training_targets(probe: Probe) -> set[tuple[int, int]]:
    """The (trajectory, step or -1) examples the probe was fitted on (its saved data)."""
    data = probe.folder / "data.npz"
    if not data.exists():
        return set()
    with np.load(data) as arrays:
        return set(zip(arrays["trajectory_ids"].tolist(), arrays["step_ids"].tolist()))


def held_out_examples(store: Store, probe: Probe, examples: Examples) -> np.ndarray:
    """Which examples keep the cross-fitted verdict the probe's training stored (issue 24): those
    it was trained on that already have one in this store. Scoring them again with the probe
    fitted on all its data would give an in-sample score, which flatters it."""
    trained = training_targets(probe)
    targets = [(int(t), None if s == -1 else int(s))
               for t, s in zip(examples.trajectory_ids, examples.step_ids) if (int(t), int(s)) in trained]  # fmt: skip
    kept = store.held_out_targets(probe.judge, probe.manifest["kind"], probe.sha256, targets) if targets else set()
    return np.array([(int(t), None if s == -1 else int(s)) in kept
                     for t, s in zip(examples.trajectory_ids, examples.step_ids)], dtype=bool)  # fmt: skip


def score_with_probe(
    store: Store,
    engine,
    probe: Probe,
    examples: Examples,
    *,
    job_id: int | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[dict] | None:
    """Verdict rows from the probe fitted on all its data. Examples it was trained on are
    in-sample (`in_sample` in the row and in raw): the pages prefer a cross-fitted verdict to
    them, and a scoring job leaves out those that have one (held_out_examples)."""
    template = load_template(probe.manifest["policy_template"]["name"])
    X = hidden_features(store, engine, examples, layer=probe.manifest["layer"],
                        context=probe.manifest.get("context", "question"), template=template,
                        should_stop=should_stop)  # fmt: skip
    if X is None:
        return None
    trained = training_targets(probe)
    scores = probe.predict(X)
    rows = []
    for t, s, p in zip(examples.trajectory_ids, examples.step_ids, scores):
        in_sample = (int(t), int(s)) in trained
        rows.append({**_verdict(probe, int(t), int(s), float(p), {"crossfit": False, "in_sample": in_sample}, job_id),
                     "in_sample": in_sample})  # fmt: skip
    return rows
