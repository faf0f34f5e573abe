"""Step-level beam search, as search-and-learn's `beam_search` does it.

- Depth 1: n candidate first steps from the question (n beams, one step each).
- Every depth: all candidates of the depth are scored in one batch. Finished candidates (a
  final answer, the policy ending its solution, a length stop) leave the active set and become
  final beams, in the order they finish. Of the open ones, the top n / M by score are kept
  (ties: the earlier candidate), the rest pruned.
- The kept beams are repeated in turn up to n active beams, `(kept * repeats)[:n]` in
  search-and-learn, so with n / M survivors each is expanded into M candidates; with fewer
  survivors (others finished) the first ones get one more. Each active beam gets one step.
- The last depth (`max_steps`) generates to the end of the solution, so every beam finishes.
- Final beams: the first n to finish (search-and-learn's default, `sort_completed=False`).
  Two departures from search-and-learn, both about spending: the search stops as soon as n
  beams have finished (search-and-learn keeps expanding the open beams and then drops what
  they finish), and fewer than n final beams are not padded with copies (a copy would only
  double a beam's weight in the vote).
"""

from __future__ import annotations

from core.search.context import best_first


def search(ctx) -> None:
    config = ctx.config
    parents: list[int | None] = [None]
    counts = [config.n]
    for _ in range(config.max_steps):
        candidates = [node for group in ctx.expand(parents, counts) for node in group]
        ctx.score(candidates)
        open_ = []
        for node in candidates:
            if node.finished:
                node.mark = "chosen" if len(ctx.finished) < config.n else "pruned"
                if node.mark == "chosen":
                    ctx.finished.append(node.id)
            else:
                open_.append(node)
        if not open_:
            return
        if len(ctx.finished) >= config.n:
            for node in open_:
                node.mark = "pruned"
            return
        kept = sorted(best_first(open_)[: config.survivors], key=lambda node: node.id)
        kept_ids = {node.id for node in kept}
        for node in open_:
            node.mark = "chosen" if node.id in kept_ids else "pruned"
        parents = [node.id for node in kept]
        counts = [config.n // len(kept) + (i < config.n % len(kept)) for i in range(len(kept))]
