"""Who may do what: roles, the pages each role sees and the actions each role may take.

The one place the app's permissions are written down. app.py lists only a role's pages; every
page checks `can`/`require` before a write, so a request that reaches a page by another way
(a stale button, a hand-made websocket message) is still refused. Pure: no Streamlit, no I/O.

- organiser: everything (the person at the machine, when the app listens on loopback only);
- annotator: the Annotate page, labelling under the name from their invitation, nothing else;
- viewer: the read-only pages, no writes at all.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Mapping

from core.errors import StepScopeError
from core.store.access import ROLES

ORGANISER, ANNOTATOR, VIEWER = ROLES

# Actions that change something, or that reach beyond a person's own labels.
LABEL = "label"  # save one's own step and trajectory labels
RUN_JOBS = "run jobs"  # queue, cancel or retry jobs; grow or expand the rollout tree
IMPORT = "import data"
EXPORT = "export data"
SWITCH_DATABASE = "switch the database"
CHOOSE_MODELS = "choose models"
MANAGE_ACCESS = "manage invitations"
EDIT_PROJECT = "edit the project"  # gold items, error taxonomy, enforced blind mode
SEE_OTHERS_LABELS = "see other annotators' labels"
ACTIONS = (LABEL, RUN_JOBS, IMPORT, EXPORT, SWITCH_DATABASE, CHOOSE_MODELS, MANAGE_ACCESS, EDIT_PROJECT,
           SEE_OTHERS_LABELS)  # fmt: skip

_ALLOWED: dict[str, frozenset[str]] = {
    ORGANISER: frozenset(ACTIONS),
    ANNOTATOR: frozenset({LABEL}),
    VIEWER: frozenset({SEE_OTHERS_LABELS}),
}


@dataclass(frozen=True)
class AppPage:
    script: str  # the Streamlit script, from the repository root
    title: str
    icon: str
    url: str  # its URL path: what a role's page list names


# The app's pages, in menu order (pages/_shared.navigation draws them). Explore is the root page
# ("/?trajectory=3") and answers at /explore too. Emoji, not :material/…: icons, which the
# browser fetches from fonts.gstatic.com (the app makes no request off the machine).
PAGES = (
    AppPage("pages/explore.py", "Explore", "🔎", "explore"),
    AppPage("pages/search.py", "Search", "🌳", "search"),
    AppPage("pages/annotate.py", "Annotate", "✏️", "annotate"),
    AppPage("pages/compare.py", "Compare", "⚖️", "compare"),
    AppPage("pages/best_of_n.py", "Best-of-N", "📈", "best_of_n"),
    AppPage("pages/jobs_data.py", "Jobs and data", "🗄️", "jobs_data"),
    AppPage("pages/home.py", "About", "ℹ️", "home"),
    AppPage("pages/models.py", "Models", "🧠", "models"),
)
ALL_PAGES = tuple(page.url for page in PAGES)
# Each role's pages by URL path, in menu order; a role's first page is its home page.
_PAGES: dict[str, tuple[str, ...]] = {
    ORGANISER: ALL_PAGES,
    ANNOTATOR: ("annotate",),
    VIEWER: ("explore", "search", "compare", "best_of_n", "home", "models"),
}

# Set by the operator (tests, or a server behind a proxy that forwards to loopback): the app
# is served beyond this machine whatever its bind address says. It can only add protection.
SERVED_REMOTELY_ENV = "STEPSCOPE_SERVED_REMOTELY"
BLIND_SETTING = "annotators_blind"  # the organiser's enforced blind mode, in the database's settings


@dataclass(frozen=True)
class Identity:
    """Who this browser session is: a role, and for an invited person their name and invitation."""

    role: str
    name: str | None = None
    invitation_id: int | None = None
    database: str | None = None  # the invitation's database file name, the only one it opens

    @property
    def invited(self) -> bool:
        return self.invitation_id is not None


LOCAL_ORGANISER = Identity(ORGANISER)


def can(role: object, action: object) -> bool:
    """Whether `role` may take `action`; False for anything unknown."""
    allowed = _ALLOWED.get(role) if isinstance(role, str) else None
    return bool(allowed) and isinstance(action, str) and action in allowed


def require(role: object, action: str) -> None:
    """StepScopeError naming the refusal unless `role` may take `action`."""
    if not can(role, action):
        who = f"an {role}" if role in (ORGANISER, ANNOTATOR) else f"a {role}" if role in ROLES else "this session"
        raise StepScopeError(f"{who} may not {action} here")


# What no invitation grants, whatever its role: an invitation opens one database file, so an
# invited organiser cannot switch to (or create) another one and act there.
_NOT_BY_INVITATION = frozenset({SWITCH_DATABASE})


def may(identity: Identity | None, action: object) -> bool:
    """Whether the session `identity` may take `action`: its role's, less what no invitation grants."""
    if identity is None or not can(identity.role, action):
        return False
    return not (identity.invited and action in _NOT_BY_INVITATION)


def require_for(identity: Identity | None, action: str) -> None:
    """StepScopeError naming the refusal unless the session `identity` may take `action`."""
    require(identity.role if identity else None, action)
    if not may(identity, action):
        raise StepScopeError(f"an invitation opens its own database file only; it may not {action}")


def pages_for(role: object) -> tuple[str, ...]:
    """The URL paths of the pages `role` sees, home page first; none for an unknown role."""
    return _PAGES.get(role, ()) if isinstance(role, str) else ()


def label_author(identity: Identity, typed: str | None) -> str | None:
    """Whose labels a save writes: an invited person's own name, whatever the page sent; for the
    local organiser, the name typed in the sidebar (already validated), or None."""
    if identity.invited:
        return identity.name if can(identity.role, LABEL) else None
    return typed if can(identity.role, LABEL) else None


def loopback_address(address: object) -> bool:
    """Whether a `server.address` value listens on this machine only. Empty (Streamlit's
    default: every interface), a wildcard, a LAN address, a host name or a unix socket is not."""
    if not isinstance(address, str) or not address.strip():
        return False
    host = address.strip().lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def local_host_header(host: object) -> bool:
    """Whether a request's Host header names this machine (localhost or a loopback address, any
    port), or is absent (not a browser: AppTest, a script on this machine). A page on a website
    that points its own name at 127.0.0.1 (DNS rebinding) sends its own name here."""
    if host is None or host == "":
        return True
    if not isinstance(host, str):
        return False
    name = host.strip()
    if name.startswith("["):  # [::1]:8501
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:  # localhost:8501
        name = name.split(":", 1)[0]
    return loopback_address(name)


def served_remotely(address: object, environ: Mapping[str, str]) -> bool:
    """Whether people beyond this machine may reach the app: from the bind address, or forced
    by $STEPSCOPE_SERVED_REMOTELY=1 (never turned off by it)."""
    forced = environ.get(SERVED_REMOTELY_ENV, "").strip().lower() in ("1", "true", "yes")
    return forced or not loopback_address(address)


def blind_enforced(identity: Identity, setting: object) -> bool:
    """An annotator's blind mode cannot be turned off when the organiser enforces it."""
    return identity.role != ORGANISER and bool(setting)
