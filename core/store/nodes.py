"""Nodes of the rollout tree at the connection level: keys, paths, and mapping steps to nodes.

A node is a (problem, step prefix) pair. Its key chains the keys of its ancestors (the key of a
node hashes its parent's key and its own step text), so two trajectories whose first k steps
read the same reach the same node at depth k and pool their rollouts there; the root (depth 0,
no steps: the question alone) is keyed by the problem.

Plain functions on a sqlite3 connection, so that the migration that creates the table (which
runs before any Store exists) and the store's queries share one implementation.
"""

from __future__ import annotations

import sqlite3
from typing import Sequence

from core.store.keys import content_key, now


def root_key(problem_key: str) -> str:
    return content_key("node-root", problem_key)


def child_key(parent_key: str, text: str) -> str:
    return content_key("node", parent_key, text)


def _node(conn: sqlite3.Connection, key: str, problem_id: int, parent_id: int | None, depth: int,
          text: str) -> int:  # fmt: skip
    cursor = conn.execute(
        "INSERT INTO nodes (key, problem_id, parent_id, depth, text, created_at) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (key) DO NOTHING",
        [key, problem_id, parent_id, depth, text, now()],
    )
    if cursor.rowcount == 1:
        return int(cursor.lastrowid)
    return int(conn.execute("SELECT id FROM nodes WHERE key = ?", [key]).fetchone()[0])


def ensure_path(conn: sqlite3.Connection, problem_id: int, steps: Sequence[str]) -> list[int]:
    """Node ids of the root and of every prefix of `steps` (len(steps) + 1 ids), created if new."""
    problem_key = conn.execute("SELECT key FROM problems WHERE id = ?", [problem_id]).fetchone()[0]
    key = root_key(problem_key)
    ids = [_node(conn, key, problem_id, None, 0, "")]
    for depth, text in enumerate(steps, start=1):
        key = child_key(key, text)
        ids.append(_node(conn, key, problem_id, ids[-1], depth, text))
    return ids


def attach_segmentation(conn: sqlite3.Connection, segmentation_id: int) -> None:
    """Point every step of the segmentation at the node of the prefix it ends."""
    problem_id = conn.execute(
        "SELECT t.problem_id FROM segmentations s JOIN trajectories t ON t.id = s.trajectory_id WHERE s.id = ?",
        [segmentation_id],
    ).fetchone()[0]
    steps = conn.execute("SELECT id, text FROM steps WHERE segmentation_id = ? ORDER BY idx", [segmentation_id]).fetchall()
    node_ids = ensure_path(conn, problem_id, [text for _, text in steps])
    conn.executemany(
        "UPDATE steps SET node_id = ? WHERE id = ?", [(node, step) for node, (step, _) in zip(node_ids[1:], steps)]
    )
