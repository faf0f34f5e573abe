"""How many CPU threads torch uses for the transformers engine.

torch defaults to one OpenMP thread per core. On a machine whose cores are busy with other
work that default collapses: every matrix product waits at a barrier for its slowest thread,
and a thread that lost its core holds all the others (measured on 2 cores: 35.7 tokens/s quiet,
1.9 tokens/s beside two busy processes). One thread loses only its share of a core. The
figures behind the default are in benchmarks/results/threads_contention.json.

`STEPSCOPE_THREADS` overrides the default: a number of threads, or `torch` for torch's own
choice (all cores, the fastest on a machine that nothing else uses).
"""

from __future__ import annotations

import os

ENV_VAR = "STEPSCOPE_THREADS"
DEFAULT_THREADS = 1


def configure_threads() -> int | None:
    """Apply the thread setting to torch; return the number of threads set (None: torch's)."""
    import torch

    from core.errors import StepScopeError

    raw = os.environ.get(ENV_VAR, "").strip().lower()
    if raw == "torch":
        return None
    if not raw:
        threads = DEFAULT_THREADS
    else:
        try:
            threads = int(raw)
        except ValueError:
            threads = 0
        if threads < 1:
            raise StepScopeError(f"{ENV_VAR}={raw!r}: use a whole number of threads (1 or more) or 'torch'")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
