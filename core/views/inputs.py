"""What the app's sidebar and URL may name, checked before anything is opened.

The app reads and writes files only inside its data folder: the folder of the default database
(`$STEPSCOPE_DB`, else data/stepscope.db). A database chosen in the sidebar or named in the URL
is a plain file name in that folder, never a path, so no input can reach another file.
Annotator names are short and plain because they end up in exports, file names and URLs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from core.errors import StepScopeError
from core.store import default_db_path

ANNOTATOR_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,40}")
DB_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")
# A test or a shared lab server can set the policy a new session starts with (a preset name,
# a local model directory or a hub id). It comes from the operator, never from a URL.
DEFAULT_POLICY_ENV = "STEPSCOPE_DEFAULT_POLICY"
_MAX_ID_DIGITS = 12


def data_folder() -> Path:
    return default_db_path().resolve().parent


def validate_annotator(name: str | None) -> str:
    """The name, stripped; StepScopeError saying what is wrong otherwise."""
    name = (name or "").strip()
    if not name:
        raise StepScopeError("enter an annotator name")
    if not ANNOTATOR_PATTERN.fullmatch(name):
        raise StepScopeError(
            "an annotator name is 1 to 40 letters, digits, dots, underscores or hyphens"
        )
    return name


def database_files(folder: Path | None = None) -> list[str]:
    """Database file names in the data folder, sorted."""
    folder = folder or data_folder()
    if not folder.is_dir():
        return []
    return sorted(
        entry.name for entry in folder.iterdir()
        if entry.is_file() and entry.suffix in DB_SUFFIXES and DB_NAME_PATTERN.fullmatch(entry.name)
    )  # fmt: skip


def resolve_database(name: str | None, folder: Path | None = None, *, must_exist: bool = True) -> Path:
    """The database file `name` inside the data folder, or StepScopeError.

    Only a bare file name ending in .db, .sqlite or .sqlite3 is accepted: no folders, no
    "..", no absolute paths, no links that lead out of the folder.
    """
    folder = (folder or data_folder()).resolve()
    name = (name or "").strip()
    if not DB_NAME_PATTERN.fullmatch(name) or not name.endswith(DB_SUFFIXES):
        raise StepScopeError(
            "a database is a file name in the data folder (letters, digits, . _ -) ending in "
            + ", ".join(DB_SUFFIXES)
        )
    path = folder / name
    if path.is_symlink() or path.resolve().parent != folder:
        raise StepScopeError(f"{name} is not a file in the data folder")
    if must_exist and not path.is_file():
        raise StepScopeError(f"there is no database {name} in the data folder")
    return path


def default_database_name() -> str:
    return default_db_path().name


def default_policy(fallback: str) -> str:
    return os.environ.get(DEFAULT_POLICY_ENV, "").strip() or fallback


# --- judge models --------------------------------------------------------------------------

POLICY_AS_JUDGE = "the policy"  # the sidebar's choice that follows whatever the policy is


def judge_models(picked: list[str], typed: str, policy: str) -> list[str]:
    """The judge models the sidebar names: picked presets (POLICY_AS_JUDGE = the policy) and
    comma-separated typed names, in order, without repeats; none named means the policy, the
    self-reward setting the verdicts are about."""
    names = [policy if name == POLICY_AS_JUDGE else name for name in picked]
    names += [name.strip() for name in (typed or "").split(",")]
    chosen = list(dict.fromkeys(name for name in names if name and name.strip()))
    return chosen or [policy]


# --- deep links ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DeepLink:
    trajectory_id: int | None = None
    step_idx: int | None = None
    problem: str = ""  # what was wrong with the link, for the page to show


def _parse_id(raw: str, what: str) -> int:
    raw = raw.strip()
    # isascii: str.isdigit() also accepts digits int() refuses, like "²".
    if not (raw.isascii() and raw.isdigit()) or len(raw) > _MAX_ID_DIGITS:
        raise StepScopeError(f"the link's {what} must be a whole number, not {raw[:40]!r}")
    return int(raw)


def parse_deep_link(params: Mapping[str, str], store) -> DeepLink:
    """The trajectory and step a URL names (`?trajectory=ID&step=INDEX`), checked against the
    store. A bad value gives a DeepLink with `problem` set and nothing else; never an error."""
    raw_trajectory = params.get("trajectory")
    raw_step = params.get("step")
    if raw_trajectory is None:
        if raw_step is not None:
            return DeepLink(problem="the link names a step but no trajectory")
        return DeepLink()
    try:
        trajectory_id = _parse_id(str(raw_trajectory), "trajectory")
        if store.get_trajectory(trajectory_id) is None:
            raise StepScopeError(f"the link names trajectory {trajectory_id}, which does not exist")
        if raw_step is None:
            return DeepLink(trajectory_id, None)
        step_idx = _parse_id(str(raw_step), "step")
        n_steps = len(store.steps(trajectory_id))
        if step_idx >= n_steps:
            return DeepLink(
                trajectory_id, None,
                f"trajectory {trajectory_id} has {n_steps} steps (0 to {n_steps - 1}); "
                f"the link names step {step_idx}",
            )  # fmt: skip
        return DeepLink(trajectory_id, step_idx)
    except StepScopeError as error:
        return DeepLink(problem=str(error))


_MARKDOWN_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")
# GFM turns bare URLs, www. names and e-mail addresses into links even when their punctuation
# is escaped; a zero-width space after the scheme, "www" or "@" stops it.
_AUTOLINK = re.compile(r"(?i)(\b(?:https?|ftp|mailto|www)|@)")
ZERO_WIDTH_SPACE = "\u200b"


def escape_markdown(text: str) -> str:
    """Text safe to put inside Streamlit markdown: every ASCII punctuation mark is
    backslash-escaped and autolinks are broken, so no link, image, HTML tag, math, directive or
    emphasis can form. Line breaks become spaces (markdown would reflow them anyway)."""
    text = _AUTOLINK.sub(lambda m: m.group(1) + ZERO_WIDTH_SPACE, " ".join(str(text).split()))
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def truncate(text: str, limit: int) -> tuple[str, bool]:
    """The first `limit` characters (cut at a line end when one is near), and whether cut."""
    if len(text) <= limit:
        return text, False
    cut = text.rfind("\n", int(limit * 0.8), limit)
    return text[: cut if cut > 0 else limit] + " …", True
