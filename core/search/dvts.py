"""Diverse verifier tree search, as search-and-learn's `dvts` does it.

n / M independent subtrees grow from the question; each holds one path. Every depth, each
open subtree's path is expanded into M candidate steps (all subtrees' candidates are scored in
one batch), and the best candidate (ties: the earlier) continues the path; the others are
pruned. A subtree stops when its best candidate finishes; the finished candidates of its last
expansion are its final beams (search-and-learn returns all M of them; an unfinished sibling
has no answer to vote with, so it is left out here). The last depth generates to the end.

Subtrees share no candidate below the question: every candidate carries its subtree's number
and its parent is in the same subtree (tests/test_search.py checks it).
"""

from __future__ import annotations

from core.search.context import best_first


def search(ctx) -> None:
    config = ctx.config
    heads: dict[int, int | None] = {subtree: None for subtree in range(config.survivors)}
    open_subtrees = list(heads)
    for _ in range(config.max_steps):
        if not open_subtrees:
            return
        groups = ctx.expand([heads[t] for t in open_subtrees], [config.beam_width] * len(open_subtrees),
                            subtrees=open_subtrees)  # fmt: skip
        ctx.score([node for group in groups for node in group])
        still_open = []
        for subtree, group in zip(open_subtrees, groups):
            best = best_first(group)[0]
            heads[subtree] = best.id
            if best.finished:
                for node in group:
                    node.mark = "chosen" if node.finished else "pruned"
                ctx.finished.extend(node.id for node in best_first(group) if node.finished)
            else:
                for node in group:
                    node.mark = "chosen" if node is best else "pruned"
                still_open.append(subtree)
        open_subtrees = still_open
