"""Signing a browser session in with an invitation link, and slowing down guessed links.

The app reads `?token=` once, removes it from the address bar, and calls `sign_in`. A bad
token makes the next attempt wait: per session (doubling after a few free tries) and for the
whole server (growing with the failures of the last minute, so opening new sessions does not
reset it). The counts are kept in memory only, in `SERVER_BACKOFF`, a module-level object that
no client message reaches (Streamlit's `clear_cache` message empties st.cache_resource, so the
counts must not live there); a restart forgets them, which is fine because a token's 256 random
bits are the protection and the wait only makes guessing noisy and slow.

Checking a link writes nothing and opens nothing for writing: the token's format is checked
first, and only an existing StepScope store is read, read-only (core.store.access
`check_token_read_only`). `still_valid` reads the same way; every action of an invited session
calls it at the moment it happens. Nothing here logs, stores or returns a token.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import Callable

from core.errors import StepScopeError
from core.store import Store
from core.store.access import active_invitation_read_only, check_token_read_only, token_parts
from core.views.access import Identity

SESSION_FREE_TRIES = 3
SESSION_WINDOW_S = 600.0
SESSION_MAX_DELAY_S = 30.0
GLOBAL_FREE_FAILURES = 10
GLOBAL_WINDOW_S = 60.0
GLOBAL_DELAY_PER_FAILURE_S = 0.25
GLOBAL_MAX_DELAY_S = 5.0
_MAX_SESSIONS = 10_000


class FailureBackoff:
    """Recent failed sign-ins, per session key and in all; how long the next attempt waits."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()

    def _prune(self, now: float) -> None:
        while self._all and now - self._all[0] > GLOBAL_WINDOW_S:
            self._all.popleft()
        for key in [k for k, times in self._sessions.items() if not times or now - times[-1] > SESSION_WINDOW_S]:
            del self._sessions[key]

    def delay(self, session_key: str) -> float:
        """Seconds the next attempt from `session_key` waits before it is checked."""
        with self._lock:
            now = self._clock()
            self._prune(now)
            mine = len(self._sessions.get(session_key, ()))
            extra = max(0, mine - SESSION_FREE_TRIES + 1)
            session_delay = 0.0 if extra == 0 else min(SESSION_MAX_DELAY_S, 2.0 ** (extra - 1))
            crowd = max(0, len(self._all) - GLOBAL_FREE_FAILURES)
            global_delay = min(GLOBAL_MAX_DELAY_S, GLOBAL_DELAY_PER_FAILURE_S * crowd)
            return max(session_delay, global_delay)

    def failed(self, session_key: str) -> None:
        with self._lock:
            now = self._clock()
            self._prune(now)
            if len(self._sessions) >= _MAX_SESSIONS and session_key not in self._sessions:
                self._sessions.pop(next(iter(self._sessions)))  # a flood of sessions cannot grow memory
            self._sessions.setdefault(session_key, deque()).append(now)
            self._all.append(now)

    def reset(self) -> None:
        """Forget every failure (tests; no client message calls it)."""
        with self._lock:
            self._sessions.clear()
            self._all.clear()

    def recent_failures(self, session_key: str) -> tuple[int, int]:
        """(this session's, everyone's) failures still counted."""
        with self._lock:
            self._prune(self._clock())
            return len(self._sessions.get(session_key, ())), len(self._all)


def _path(source: Store | str | os.PathLike[str]) -> str:
    return os.fspath(source.path if isinstance(source, Store) else source)


def sign_in(source: Store | str | os.PathLike[str], database: str, token: object, backoff: FailureBackoff,
            session_key: str, sleep: Callable[[float], None] = time.sleep) -> Identity:
    """The identity an invitation token grants on the database file `source` (a path, or a Store
    for its path; file name `database`), after the backoff's wait; StepScopeError (and a counted
    failure) for a malformed, wrong, revoked or expired token, or a file that is not a StepScope
    store. The check opens nothing for writing; a success given a Store records there when the
    invitation was last used (given a path, the caller does, once the session is signed in)."""
    wait = backoff.delay(session_key)
    if wait > 0:
        sleep(wait)
    try:
        token_parts(token)  # the format first: a junk link touches no file
        invitation = check_token_read_only(_path(source), token)
    except StepScopeError:
        backoff.failed(session_key)
        raise
    if isinstance(source, Store):
        source.mark_invitation_used(invitation.id)
    return Identity(invitation.role, invitation.name, invitation.id, database)


def still_valid(source: Store | str | os.PathLike[str], identity: Identity) -> Identity:
    """The session's identity if its invitation is still active, with its role as it is now
    (read-only from the database file `source`, at the moment of asking: every page run and
    every action of an invited session asks, so revoking or expiring a link ends the sessions it
    opened); StepScopeError otherwise."""
    if not identity.invited:
        return identity
    invitation = active_invitation_read_only(_path(source), identity.invitation_id)
    return Identity(invitation.role, invitation.name, invitation.id, identity.database)


# The server's one backoff: failed sign-ins of every session count towards the global wait. A
# module-level object (not st.cache_resource, which any client can empty with `clear_cache`).
SERVER_BACKOFF = FailureBackoff()
