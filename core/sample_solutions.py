"""Hand-written reference trajectories for some sample problems, so a fresh app has something
to explore before any model has run.

The sample set ships questions and gold answers only. These solutions are written in the same
style as the policy's few-shot prompt (one calculation per line, then "The answer is N."), so a
step's prefix is something the policy can continue. Three of them carry a deliberate error at a
known step: they show a Monte Carlo value falling after the first error, and give annotators
something to find. They are added once, by the app, to a database that has no trajectories.

A fresh app opens Explore on FEATURED: two steps the embedded policy can continue to the answer,
then a real error (12 + 7 = 18). Its Monte Carlo values tell that story (SmolLM2-135M, N = 16:
0.31, 0.19, then 0.00 from the error on). Most two-step reference solutions do not: from their
correct first step the 135M policy reaches the answer in 0-1 of 16 rollouts, so the first
error shows no fall.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.grading import grade
from core.store import SAMPLE_DATASET, Store

SOURCE = "handwritten"
FEATURED = "one-02"


@dataclass(frozen=True)
class ReferenceSolution:
    problem: str  # the sample problem's id (meta "id")
    solution: str
    first_error: int | None = None  # index of the deliberately wrong step, if any


REFERENCE_SOLUTIONS = (
    ReferenceSolution("two-01", "4 trays of 12 cookies make 4 * 12 = 48 cookies.\n"
                      "After selling 30, 48 - 30 = 18 cookies are left.\nThe answer is 18."),
    ReferenceSolution("two-02", "3 notebooks cost 3 * 4 = 12 dollars.\n"
                      "With the pen she spends 12 + 2 = 14 dollars.\nThe answer is 14."),
    ReferenceSolution("two-04", "2 shirts cost 2 * 15 = 30 dollars.\n"
                      "Jack has 50 - 30 = 20 dollars left.\nThe answer is 20."),
    ReferenceSolution("two-06", "The shelves hold 5 * 16 = 80 books.\n"
                      "After 12 are taken out, 80 - 12 = 68 books are left.\nThe answer is 68."),
    ReferenceSolution("two-10", "His brother has 2 * 17 = 34 toy cars.\n"
                      "Together they have 17 + 34 = 51 toy cars.\nThe answer is 51."),
    ReferenceSolution("two-14", "The pump removes 15 * 8 = 120 liters.\n"
                      "The tank has 200 - 120 = 80 liters left.\nThe answer is 80."),
    ReferenceSolution("one-01", "The baker has 24 - 9 = 15 muffins left.\nThe answer is 15."),
    ReferenceSolution("two-11", "The garden has 9 * 7 = 56 carrots.\n"
                      "After the rabbits eat 15, 56 - 15 = 41 carrots are left.\nThe answer is 41.",
                      first_error=0),
    ReferenceSolution("two-16", "The cinema has 12 * 20 = 240 seats.\n"
                      "With 187 tickets sold, 240 - 187 = 63 seats are empty.\nThe answer is 63.",
                      first_error=1),
    ReferenceSolution("one-02", "Maria starts with 12 stickers.\nHer friend gives her 7 more stickers.\n"
                      "Now she has 12 + 7 = 18 stickers.\nThe answer is 18.", first_error=2),
)


def add_reference_trajectories(store: Store) -> int:
    """Add the reference solutions whose sample problem is in the database; returns how many."""
    problems = {p["meta"].get("id"): p for p in store.list_problems(dataset=SAMPLE_DATASET)}
    added = 0
    with store.transaction():
        for reference in REFERENCE_SOLUTIONS:
            problem = problems.get(reference.problem)
            if problem is None:
                continue
            graded = grade(reference.solution, problem["gold"])
            meta = {"reference": True}
            if reference.first_error is not None:
                meta["deliberate_first_error"] = reference.first_error
            if reference.problem == FEATURED:
                meta["featured"] = True
            store.add_trajectory(
                problem["id"], reference.solution, source=SOURCE, rule="line",
                final_answer=graded.answer, correct=graded.correct, meta=meta,
            )  # fmt: skip
            added += 1
    return added


def ensure_trajectories(store: Store) -> int:
    """On a database with no trajectories at all, add the reference ones; else do nothing."""
    if store.count_trajectories() > 0:
        return 0
    return add_reference_trajectories(store)


def featured_trajectory(store: Store) -> int | None:
    """The reference trajectory a fresh app opens on, if the database has it."""
    for row in store.list_trajectories(dataset=SAMPLE_DATASET, source=SOURCE):
        trajectory = store.get_trajectory(row["id"])
        if trajectory is not None and (trajectory.get("meta") or {}).get("featured"):
            return row["id"]
    return None
