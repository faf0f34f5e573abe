"""From finished candidates to the search's answer: final beams, graded, and the weighted vote.

Weighted best-of-N as search-and-learn computes its `pred_weighted`: group the beams by answer
(answers equal under core.grading count as one), sum each group's scores, and answer with the
heaviest group; ties go to the group whose first beam came first. Beams without an answer do not
vote.
"""

from __future__ import annotations

from typing import Sequence

from core.grading import answers_equal, grade
from core.search.records import FinalBeam


def final_beams(ctx, node_ids: Sequence[int]) -> list[FinalBeam]:
    beams = []
    for node_id in node_ids:
        solution = ctx.tree.solution(node_id)
        graded = grade(solution, ctx.problem.gold)
        beams.append(FinalBeam(node_id, solution, graded.answer, graded.correct, ctx.tree.nodes[node_id].score))
    return beams


def weighted_vote(beams: Sequence[FinalBeam]) -> str | None:
    groups: list[tuple[str, float]] = []  # (answer, summed score), in first-seen order
    for beam in beams:
        if beam.answer is None:
            continue
        weight = beam.score if beam.score is not None else 0.0
        for index, (answer, total) in enumerate(groups):
            if answers_equal(beam.answer, answer):
                groups[index] = (answer, total + weight)
                break
        else:
            groups.append((beam.answer, weight))
    if not groups:
        return None
    best = max(range(len(groups)), key=lambda i: (groups[i][1], -i))
    return groups[best][0]
