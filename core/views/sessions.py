"""Signing a browser session in with an invitation link, and slowing down guessed links.

The app reads `?token=` once, removes it from the address bar, and calls `sign_in`. A bad
token makes the next attempt wait: per session (doubling after a few free tries) and for the
whole server (growing with the failures of the last minute, so opening new sessions does not
reset it). The counts are kept in memory only; a restart forgets them, which is fine because
a token's 256 random bits are the protection and the wait only makes guessing noisy and slow.
Nothing here logs, stores or returns a token.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

from core.errors import StepScopeError
from core.store import Store
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

    def recent_failures(self, session_key: str) -> tuple[int, int]:
        """(this session's, everyone's) failures still counted."""
        with self._lock:
            self._prune(self._clock())
            return len(self._sessions.get(session_key, ())), len(self._all)


def sign_in(store: Store, database: str, token: object, backoff: FailureBackoff, session_key: str,
            sleep: Callable[[float], None] = time.sleep) -> Identity:
    """The identity an invitation token grants on `store` (file name `database`), after the
    backoff's wait; StepScopeError (and a counted failure) for a bad, revoked or expired token.
    A refusal writes nothing; a success records when the invitation was last used."""
    wait = backoff.delay(session_key)
    if wait > 0:
        sleep(wait)
    try:
        invitation = store.check_token(token)
    except StepScopeError:
        backoff.failed(session_key)
        raise
    store.mark_invitation_used(invitation.id)
    return Identity(invitation.role, invitation.name, invitation.id, database)


def still_valid(store: Store, identity: Identity) -> Identity:
    """The session's identity if its invitation is still active (checked on every page run, so
    revoking a link ends the sessions it opened); StepScopeError otherwise."""
    if not identity.invited:
        return identity
    invitation = store.active_invitation(identity.invitation_id)
    return Identity(invitation.role, invitation.name, invitation.id, identity.database)
