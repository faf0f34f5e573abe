"""Annotation sessions: the queue an annotator works through, their labels, and saving a click.

A queue is built once per setting (mode, dataset, seed, size, overlap) and kept for the
session, so labelling a trajectory does not reshuffle the order under the annotator's feet.
Every save goes straight to `Store.save_annotation`, which commits before it returns.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from typing import Any, Sequence

from core.views.inputs import validate_annotator
from core.errors import StepScopeError
from core.store import Store
from core.views.review_window import WINDOW_STEPS

QUEUE_MODES = ("unlabelled first", "random sample", "assigned list")
MAX_QUEUE = 5000
_ID_RANGE = re.compile(r"^\s*(\d{1,12})\s*(?:-\s*(\d{1,12})\s*)?$")


@dataclass(frozen=True)
class QueueSpec:
    mode: str = QUEUE_MODES[0]
    dataset: str | None = None
    size: int = 100
    seed: int = 0
    overlap: int = 100  # percent of a random sample shared by every annotator with this seed
    assigned: str = ""  # "3, 7, 10-14"


def parse_assigned(text: str, limit: int = MAX_QUEUE) -> list[int]:
    """Trajectory ids from "3, 7, 10-14" (order kept, duplicates dropped)."""
    ids: list[int] = []
    for part in text.replace(";", ",").split(","):
        if not part.strip():
            continue
        match = _ID_RANGE.match(part)
        if match is None:
            raise StepScopeError(f"an assigned list is ids or ranges like 3, 7, 10-14; not {part.strip()[:30]!r}")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first or last - first >= limit:
            raise StepScopeError(f"the range {part.strip()} is empty or longer than {limit}")
        ids.extend(range(first, last + 1))
    return list(dict.fromkeys(ids))[:limit]


def build_queue(store: Store, annotator: str, spec: QueueSpec) -> list[int]:
    size = max(1, min(spec.size, MAX_QUEUE))
    if spec.mode == "unlabelled first":
        return store.unlabelled_first(annotator, spec.dataset, size)
    if spec.mode == "random sample":
        return random_sample(store.trajectory_ids(spec.dataset), size, spec.seed, spec.overlap, annotator)
    if spec.mode == "assigned list":
        wanted = parse_assigned(spec.assigned)
        existing = store.existing_trajectory_ids(wanted)
        missing = [i for i in wanted if i not in existing]
        if missing:
            raise StepScopeError(f"no trajectory with id {', '.join(map(str, missing[:5]))}")
        return wanted
    raise StepScopeError(f"unknown queue mode {spec.mode!r}")


def random_sample(ids: Sequence[int], size: int, seed: int, overlap: int, annotator: str) -> list[int]:
    """`size` ids: the first `overlap`% are the same for every annotator with this seed, the
    rest are drawn for this annotator from what is left (so two annotators overlap by that
    share, which agreement statistics need)."""
    shuffled = list(ids)
    random.Random(seed).shuffle(shuffled)
    size = min(size, len(shuffled))
    shared = round(size * max(0, min(overlap, 100)) / 100)
    own_rng = random.Random(f"{seed}:{annotator}")
    rest = shuffled[shared:]
    own = own_rng.sample(rest, min(size - shared, len(rest)))
    queue = shuffled[:shared] + own
    own_rng.shuffle(queue)
    return queue


def labelled_steps(store: Store, annotator: str, trajectory_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
    """For each trajectory: (steps in its current segmentation, of them rated by the annotator)."""
    return store.rated_current_steps(annotator, trajectory_ids)


@dataclass(frozen=True)
class QueueProgress:
    total: int
    complete: int  # every step rated

    @property
    def text(self) -> str:
        return f"{self.complete} of {self.total} trajectories fully labelled"


def queue_progress(store: Store, annotator: str, queue: Sequence[int]) -> QueueProgress:
    counts = labelled_steps(store, annotator, queue)
    complete = sum(1 for steps, rated in counts.values() if steps and rated >= steps)
    return QueueProgress(len(queue), complete)


def my_labels(store: Store, annotator: str, trajectory_id: int) -> dict[int, dict]:
    """This annotator's labels on the trajectory's current steps, by step id."""
    steps = store.steps(trajectory_id)
    segmentation = steps[0]["segmentation_id"] if steps else None
    return {
        row["step_id"]: row
        for row in store.annotations(trajectory_id, annotator=annotator, segmentation_id=segmentation)
    }


def save_label(store: Store, annotator: str, step_id: int, **fields: Any) -> dict:
    """Save one click (rating, first_error, flagged, note, confidence, rationale, category) for
    one step, with the dwell times the page measured; returns the row.

    Committed when this returns; StepScopeError for a bad annotator name or value.
    """
    annotator = validate_annotator(annotator)
    for name, limit in (("note", 5000), ("rationale", RATIONALE_LIMIT)):
        if name in fields and fields[name] is not None:
            fields[name] = fields[name].strip()[:limit] or None
    if fields.get("category") is not None and fields["category"] not in error_taxonomy(store):
        raise StepScopeError(f"{fields['category'][:80]!r} is not in this project's error taxonomy")
    return store.save_annotation(annotator, step_id, **fields)


# --- human latents -------------------------------------------------------------------------

RATIONALE_LIMIT = 300
DEFAULT_TAXONOMY = ("calculation", "logic", "misread problem", "unsupported claim", "redundant step",
                    "hallucinated fact", "other")  # fmt: skip
TAXONOMY_SETTING = "error_taxonomy"


def error_taxonomy(store: Store) -> list[str]:
    """The error categories a -1 step can get: the project's own, else DEFAULT_TAXONOMY."""
    return list(store.setting(TAXONOMY_SETTING) or DEFAULT_TAXONOMY)


def set_error_taxonomy(store: Store, text: str) -> list[str]:
    """Set the taxonomy from comma-separated names (order kept, repeats dropped); empty resets it."""
    names = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if any(len(name) > 80 for name in names) or len(names) > 50:
        raise StepScopeError("an error taxonomy is at most 50 categories of at most 80 characters")
    store.set_setting(TAXONOMY_SETTING, names or None)
    return error_taxonomy(store)


class DwellClock:
    """Dwell times measured on the server, per annotation session (kept in session state).

    A step's dwell is the time from when the annotator could start looking at it (its row's
    first render in this session, or their previous rating on the trajectory if later: the
    focus moves on after each rating) to its rating click. A trajectory's dwell is the time
    from its first render in this session to the latest rating. Time the browser tab spent
    hidden, as reported by the page (`hidden`), is taken off both.
    """

    def __init__(self, clock=None) -> None:
        self._now = clock or time.monotonic
        self.first_seen: dict[int, float] = {}  # step id -> first render
        self.trajectory_seen: dict[int, float] = {}
        self.last_rating: dict[int, float] = {}  # trajectory id -> last rating click
        self.hidden: list[tuple[float, float]] = []  # (start, end) spans the tab was hidden

    def seen(self, trajectory_id: int, step_id: int) -> None:
        now = self._now()
        self.trajectory_seen.setdefault(trajectory_id, now)
        self.first_seen.setdefault(step_id, now)

    def hidden_span(self, seconds: float) -> None:
        """The page reports the tab was hidden for `seconds`, ending now."""
        if seconds > 0:
            now = self._now()
            self.hidden.append((now - seconds, now))

    def _visible_ms(self, start: float, end: float) -> int:
        hidden = sum(max(0.0, min(end, b) - max(start, a)) for a, b in self.hidden)
        return max(0, round((end - start - hidden) * 1000))

    def rated(self, trajectory_id: int, step_id: int) -> tuple[int, int]:
        """(step dwell ms, trajectory dwell ms) at a rating click now."""
        now = self._now()
        self.seen(trajectory_id, step_id)
        start = max(self.first_seen[step_id], self.last_rating.get(trajectory_id, float("-inf")))
        self.last_rating[trajectory_id] = now
        return self._visible_ms(start, now), self._visible_ms(self.trajectory_seen[trajectory_id], now)


def stopped_after(labels: dict[int, dict], cards: Sequence) -> int | None:
    """Stop-at-first-error mode: the index of the annotator's first -1 step (later steps are
    greyed out), or None."""
    for card in cards:
        if (labels.get(card.step_id) or {}).get("rating") == -1:
            return card.idx
    return None


def latents_summary(row: dict | None) -> str:
    """One line of a label's optional fields, for a row whose fields are not open; untrusted
    text is the caller's to escape."""
    row = row or {}
    parts = [f"confidence {row['confidence']}"] if row.get("confidence") else []
    if row.get("category"):
        parts.append(row["category"])
    for field, name in (("rationale", "why"), ("note", "note")):
        if row.get(field):
            parts.append(f"{name}: {row[field][:80]}")
    return " · ".join(parts)


def row_action(action: object) -> tuple[str, bool | int] | None:
    """A step row's click as (field, value): ("rating", -1 | 0 | 1), ("first_error" | "flagged",
    bool) or ("highlight", bool: either highlights); None for anything else. The row's controls run in the
    browser, which is not trusted to send only what they draw."""
    if not isinstance(action, dict):
        return None
    field, value = action.get("field"), action.get("value")
    if field == "rating" and value in (-1, 0, 1) and not isinstance(value, bool):
        return field, int(value)
    if field in ("first_error", "flagged", "highlight") and isinstance(value, bool):
        return field, value
    return None


# --- the keys ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One of Annotate's keys and the button it presses: the keyboard bar's (`action` on the
    highlighted step) or one of the page's own (`action` None: Submit, Next, Previous)."""

    button: str  # the button's element key, which the client script presses for the key
    code: str  # the key, as the browser's KeyboardEvent.code names it: "Digit1", "KeyE"
    label: str
    does: str  # for its tooltip
    # (field, value), value None a toggle; ("move", steps); ("jump", one of review_window.JUMPS)
    action: tuple[str, int | str | None] | None = None
    shift: bool = False

    @property
    def name(self) -> str:
        """The key as a person reads it: "1", "Shift+1", "E"."""
        return ("Shift+" if self.shift else "") + self._face

    @property
    def hint(self) -> str:
        """The key as a button shows it, small: "1", "⇧1", "E"."""
        return ("⇧" if self.shift else "") + self._face

    @property
    def _face(self) -> str:  # what the key's cap says
        return self.code.removeprefix("Digit").removeprefix("Key")

    @property
    def tooltip(self) -> str:
        field = self.action[0] if self.action else None
        where = "" if field in (None, "move", "jump") else " on the highlighted step"
        return f"{self.does}{where}{' and move on' if field == 'rating' else ''} ({self.name})"


# The one key map: the keyboard bar draws the keys with an action, the page draws the others,
# the client script (pages/_annotate_hints.py) presses their buttons, and a step row's buttons
# are those of its fields (ROW_FIELDS). Each element gets it as data.
KEYS = (
    Key("ann_key_r-1", "Digit1", "−1", "rate −1", ("rating", -1)),
    Key("ann_key_r0", "Digit2", "0", "rate 0", ("rating", 0)),
    Key("ann_key_r1", "Digit3", "+1", "rate +1", ("rating", 1)),
    Key("ann_key_fe", "KeyE", "1st err", "first error", ("first_error", None)),
    Key("ann_key_fl", "KeyF", "Flag", "flag", ("flagged", None)),
    Key("ann_up", "KeyK", "Up", "previous step", ("move", -1)),
    Key("ann_down", "KeyJ", "Down", "next step", ("move", 1)),
    # Long trajectories (core.views.review_window): a window's length up or down, and jumps.
    Key("ann_page_up", "KeyK", "Earlier", f"{WINDOW_STEPS} steps up", ("move", -WINDOW_STEPS), shift=True),
    Key("ann_page_down", "KeyJ", "Later", f"{WINDOW_STEPS} steps down", ("move", WINDOW_STEPS), shift=True),
    Key("ann_jump_error", "KeyG", "1st error", "go to the located first error", ("jump", "first-error")),
    Key("ann_jump_lowest", "KeyL", "Lowest", "go to the lowest MC value", ("jump", "lowest-value")),
    Key("ann_jump_disagree", "KeyD", "Disagree", "go to the largest disagreement (MC value, verifiers, ratings)",
        ("jump", "largest-disagreement")),
    Key("ann_jump_reflection", "KeyR", "Reflection", "go to the next reflection step (Wait, Alternatively, ...)",
        ("jump", "next-reflection")),
    *(Key(f"ann_key_c{level}", f"Digit{level}", f"c{level}", f"confidence {level}", ("confidence", level), shift=True)
      for level in range(1, 6)),
    Key("ann_submit", "KeyS", "Submit", "done with this trajectory: shows the automatic labels"),
    Key("ann_next", "KeyN", "Next", "next trajectory"),
    Key("ann_prev", "KeyP", "Previous", "previous trajectory"),
)  # fmt: skip
KEYBOARD_ACTIONS = {key.button: key.action for key in KEYS if key.action}  # the bar's buttons
ROW_FIELDS = ("rating", "first_error", "flagged")  # a step row's own buttons, besides Highlight


def key_for(button: str) -> Key:
    """The key of one of the page's buttons (Submit, Next, Previous)."""
    [key] = [key for key in KEYS if key.button == button]
    return key


def keyboard_bar_buttons() -> list[list[str]]:
    """The keyboard bar's buttons, as its element takes them: [button, label, key hint, tooltip]."""
    return [[key.button, key.label, key.hint, key.tooltip] for key in KEYS if key.action]


def row_buttons() -> list[list]:
    """A step row's buttons, as its element takes them: [field, value or None (a toggle), label,
    tooltip]: the keyboard bar's for the row's fields, on this step rather than the highlighted one."""
    return [[*key.action, key.label, f"{key.does} on this step ({key.name} on the highlighted step)"]
            for key in KEYS if key.action and key.action[0] in ROW_FIELDS]  # fmt: skip


def key_codes() -> dict[str, dict[str, str]]:
    """What the client script presses for a key: {"plain" | "shift": {KeyboardEvent.code: button}}."""
    codes: dict[str, dict[str, str]] = {"plain": {}, "shift": {}}
    for key in KEYS:
        codes["shift" if key.shift else "plain"][key.code] = key.button
    return codes


def keyboard_caption(step: int) -> str:
    """The keyboard bar's line: the keys drawn elsewhere (its own buttons show theirs)."""
    others = ", ".join(f"{key.name} {key.label.lower()}" for key in KEYS if not key.action)
    return f"Keys act on the highlighted step (step {step}), as on these buttons; on the trajectory: {others}."


GREYED_FIELDS = ("rating", "first_error", "confidence")  # what a step after the first error cannot get (stop mode)


def saved_message(idx: int, row: dict, field: str) -> str:
    value = {
        "rating": {1: "+1", 0: "0", -1: "−1", None: "cleared"}.get(row.get("rating"), "?"),
        "first_error": "first error" if row.get("first_error") else "not first error",
        "flagged": "flagged" if row.get("flagged") else "unflagged",
        "note": "note saved",
        "confidence": f"confidence {row.get('confidence') or 'cleared'}",
        "rationale": "rationale saved",
        "category": f"category {row.get('category') or 'cleared'}",
    }[field]
    stamp = str(row.get("updated_at", ""))[11:19]
    return f"saved: step {idx} {value} at {stamp} UTC"
