"""Every project module the app and its pages import, imported once, by one thread.

Streamlit runs each session's script in a thread of its own, so on a fresh server several
first visits import the app's modules at the same time, and Python 3.11's per-module import
locks can then fail one of them: CI saw `_DeadlockError: deadlock detected by
_ModuleLock('core.store')` and "cannot import name 'require_app' from 'pages._shared'" (a
partly initialised module) with 8 concurrent deep links (core/store/__init__.py imports its
submodules, which the other thread was importing). app.py and every page import this module
before any other of ours: the first thread imports everything below under this module's own
import lock, and the others wait for it holding no other module's lock.
tests/test_architecture.py checks that the list covers every module they import.

Before the rest, the warm start (pages/_warm_start.py): the server's first run starts the
default database's job worker here, so that its own imports and model load overlap these.
"""

import pages._warm_start  # cheap (core.store, core.views.access/inputs/worker, core.models)

pages._warm_start.start_default_worker()

import core.engines  # noqa: E402, F401 - after the warm start, on purpose
import core.errors  # noqa: F401
import core.jobs.spec  # noqa: F401
import core.mcpe  # noqa: F401
import core.model_status  # noqa: F401
import core.models  # noqa: F401
import core.prm  # noqa: F401
import core.sample_solutions  # noqa: F401
import core.store  # noqa: F401
import core.store.access  # noqa: F401
import core.store.disk_cache  # noqa: F401
import core.views.access  # noqa: F401
import core.views.annotate  # noqa: F401
import core.views.best_of_n  # noqa: F401
import core.views.charts  # noqa: F401
import core.views.compare  # noqa: F401
import core.views.data  # noqa: F401
import core.views.demo  # noqa: F401
import core.views.explore  # noqa: F401
import core.views.inputs  # noqa: F401
import core.views.jobs  # noqa: F401
import core.views.latents  # noqa: F401
import core.views.math_text  # noqa: F401
import core.views.prm  # noqa: F401
import core.views.review_window  # noqa: F401
import core.views.search  # noqa: F401
import core.views.segmentations  # noqa: F401
import core.views.search_tree  # noqa: F401
import core.views.sessions  # noqa: F401
import core.views.test_time_compute  # noqa: F401
import core.views.tree  # noqa: F401
import core.views.worker  # noqa: F401
import pages._access  # noqa: F401
import pages._annotate_hints  # noqa: F401
import pages._demo  # noqa: F401
import pages._invitations  # noqa: F401
import pages._search_node  # noqa: F401
import pages._shared  # noqa: F401
import pages._splitter  # noqa: F401
import pages._step_controls  # noqa: F401
import pages._tree  # noqa: F401
