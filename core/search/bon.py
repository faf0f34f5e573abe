"""Weighted best-of-N (search-and-learn's `best_of_n`): n whole solutions sampled from the
question in one call, each scored at its last step ("last" aggregation), answered by the
weighted vote (core.search.answers). Every sample is a final beam, so every one is chosen."""

from __future__ import annotations


def search(ctx) -> None:
    [samples] = ctx.expand([None], [ctx.config.n], complete=True)
    ctx.score(samples)
    for node in samples:
        node.mark = "chosen"
        ctx.finished.append(node.id)
