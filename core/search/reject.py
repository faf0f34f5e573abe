"""Step-level rejection (self-verification): resample a step while the scorer doubts it.

n independent chains grow from the question, one step per depth. A step scored under
`threshold` is resampled, up to `max_resamples` (R) times, so a step costs at most R + 1
samples; the first sample at or above the threshold is accepted. When all R + 1 fall short,
the best of them (ties: the earliest) is kept. Accepted steps are chosen, the others pruned.
Chains that need a sample at the same time share one engine call and one scoring batch. With
the policy as its own judge (JudgeScorer on the policy engine) this is the policy checking
itself; any scorer works.
"""

from __future__ import annotations

from core.search.context import best_first


def _score(node) -> float:
    return node.score if node.score is not None else float("-inf")


def search(ctx) -> None:
    config = ctx.config
    heads: dict[int, int | None] = {chain: None for chain in range(config.n)}
    open_chains = list(heads)
    for _ in range(config.max_steps):
        if not open_chains:
            return
        tried: dict[int, list] = {chain: [] for chain in open_chains}
        waiting = list(open_chains)
        for _attempt in range(config.max_resamples + 1):
            groups = ctx.expand([heads[c] for c in waiting], [1] * len(waiting))
            ctx.score([group[0] for group in groups])
            for chain, group in zip(waiting, groups):
                tried[chain].append(group[0])
            waiting = [c for c in waiting if _score(tried[c][-1]) < config.threshold]
            if not waiting:
                break
        still_open = []
        for chain in open_chains:
            attempts = tried[chain]
            accepted = attempts[-1] if _score(attempts[-1]) >= config.threshold else best_first(attempts)[0]
            for node in attempts:
                node.mark = "chosen" if node is accepted else "pruned"
            heads[chain] = accepted.id
            if accepted.finished:
                ctx.finished.append(accepted.id)
            else:
                still_open.append(chain)
        open_chains = still_open
