"""Search: generation with a verifier in the loop (issue 25).

A search grows solutions one step at a time and asks a scorer (any verifier, the Monte Carlo
value included) which partial solutions to keep. The pieces, one module each:

- `config`: `SearchConfig`, every parameter of every strategy in one frozen dataclass, and the
  `SearchProblem` a search is run on;
- `scorers`: the `Scorer` protocol and its implementations (random, MC value, judge, PRM);
- `compute`: the engine and scorer wrapped so that tokens, seconds and FLOPs are counted;
- `records`: what a search leaves behind (every candidate, its score and mark, the final beams),
  shaped to become nodes of the rollout tree;
- `context`: what one running search holds (stepping the policy, scoring a batch, the records);
- one module per strategy (`bon`, `beam`, `dvts`, `mcts`, `reject`), chosen by name from
  `run.STRATEGIES`; `run.run_search` runs one.

Nothing here touches the store: a job writes a `SearchResult` into the rollout tree.
"""
