"""The app's job worker: `core.jobs.runner.JobWorker` that imports the model libraries first.

Importing torch and transformers takes 10-30 s on a small, busy machine. The plain worker pays
that inside the first job, after the user clicked; this one pays it right after the server
starts, while the user is still reading the page. No weights are loaded until a job needs them.
"""

from __future__ import annotations

import importlib
import logging

from core.jobs.runner import JobWorker

WARM_MODULES = ("torch", "transformers", "core.engines.transformers_engine")


class AppWorker(JobWorker):
    def run(self) -> None:
        for name in WARM_MODULES:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - a missing library fails the job that needs it, with its cause
                logging.getLogger(__name__).debug("warm-up import of %s failed", name, exc_info=True)
        super().run()
