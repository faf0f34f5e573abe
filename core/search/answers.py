"""From finished candidates to the search's answer: final beams, graded, and the weighted vote.

Weighted best-of-N as search-and-learn computes its `pred_weighted`: group the beams by answer
(answers equal under core.grading count as one), sum each group's scores, and answer with the
heaviest group; ties go to the group whose first beam came first. Beams without an answer do not
vote.
"""

from __future__ import annotations

from typing import Callable, Sequence

from core.grading import Grade, answers_equal, extract_answer
from core.search.records import FinalBeam


class Grader:
    """core.grading's `grade` and `answers_equal` against one problem's gold, each distinct
    comparison made once. A comparison may parse both answers with math-verify (milliseconds),
    and a search's beams, simulations and rollouts state the same few answers again and again;
    the comparison is a function of the two strings, so the results are the same as unmemoised."""

    def __init__(self, gold: str | None) -> None:
        self.gold = gold
        self._equal: dict[tuple[str, str], bool] = {}  # (predicted, other) -> answers_equal
        self.comparisons = 0  # made, not answered from memory

    def equal(self, predicted: str | None, other: str | None) -> bool:
        """answers_equal(predicted, other): with the gold, or between two answers (the vote)."""
        if predicted is None:
            return False
        key = (str(predicted), str(other))
        known = self._equal.get(key)
        if known is None:
            self.comparisons += 1
            known = self._equal[key] = answers_equal(*key)
        return known

    def correct(self, answer: str | None) -> bool:
        """answers_equal(answer, gold)."""
        return self.equal(answer, self.gold)

    def grade(self, text: str) -> Grade:
        """grade(text, gold)."""
        extracted = extract_answer(text)
        return Grade(extracted.value, extracted.method, self.correct(extracted.value))


def final_beams(ctx, node_ids: Sequence[int]) -> list[FinalBeam]:
    beams = []
    for node_id in node_ids:
        solution = ctx.tree.solution(node_id)
        graded = ctx.grader.grade(solution)
        beams.append(FinalBeam(node_id, solution, graded.answer, graded.correct, ctx.tree.nodes[node_id].score))
    return beams


def weighted_vote(beams: Sequence[FinalBeam], equal: Callable[[str | None, str], bool] = answers_equal) -> str | None:
    groups: list[tuple[str, float]] = []  # (answer, summed score), in first-seen order
    for beam in beams:
        if beam.answer is None:
            continue
        weight = beam.score if beam.score is not None else 0.0
        for index, (answer, total) in enumerate(groups):
            if equal(beam.answer, answer):
                groups[index] = (answer, total + weight)
                break
        else:
            groups.append((beam.answer, weight))
    if not groups:
        return None
    best = max(range(len(groups)), key=lambda i: (groups[i][1], -i))
    return groups[best][0]
