"""The queue and the history of a server, in one SQLite file.

A task is ComfyUI's `[number, prompt_id, prompt, extra_data, outputs_to_execute]`. Tasks are
pending, running or done; a done task has its history item. A server that restarts finds its
history, and runs its pending prompts and the one that was running when it stopped.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt_id TEXT UNIQUE NOT NULL,
    number REAL NOT NULL,
    task TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done')),
    history TEXT,
    finished INTEGER
);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (state, number, seq);
"""
MAX_HISTORY = 10000  # as ComfyUI


class TaskStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)
        with self._lock:
            # The prompt that was running when the server stopped runs again, first.
            self._db.execute("UPDATE tasks SET state = 'pending' WHERE state = 'running'")

    def _rows(self, sql: str, *args: Any) -> list:
        return self._db.execute(sql, args).fetchall()

    def next_number(self) -> float:
        """Past every number given so far, also of tasks since deleted (AUTOINCREMENT never reuses)."""
        with self._lock:
            (top,), = self._rows("SELECT MAX(COALESCE((SELECT MAX(ABS(number)) FROM tasks), 0), "
                                 "COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'tasks'), 0))")
            return float(int(top) + 1)

    def enqueue(self, prompt_id: str, number: float, prompt: dict, extra_data: dict, outputs: list) -> None:
        task = json.dumps([number, prompt_id, prompt, extra_data, outputs])
        with self.changed:
            self._db.execute("INSERT INTO tasks (prompt_id, number, task, state) VALUES (?, ?, ?, 'pending')",
                             (prompt_id, number, task))
            self.changed.notify_all()

    def take(self, timeout_s: float | None = None) -> list | None:
        """The next pending task (lowest number, then oldest), now running; None on timeout."""
        with self.changed:
            row = self._next()
            if row is None:
                self.changed.wait(timeout_s)
                row = self._next()
            if row is None:
                return None
            self._db.execute("UPDATE tasks SET state = 'running' WHERE prompt_id = ?", (row[0],))
            return json.loads(row[1])

    def _next(self):
        rows = self._rows("SELECT prompt_id, task FROM tasks WHERE state = 'pending' ORDER BY number, seq LIMIT 1")
        return rows[0] if rows else None

    def finish(self, prompt_id: str, history: dict) -> None:
        with self.changed:
            self._db.execute("UPDATE tasks SET state = 'done', history = ?, finished = "
                             "(SELECT COALESCE(MAX(finished), 0) + 1 FROM tasks) WHERE prompt_id = ?",
                             (json.dumps(history), prompt_id))
            self._db.execute("DELETE FROM tasks WHERE state = 'done' AND finished <= "
                             "(SELECT MAX(finished) FROM tasks) - ?", (MAX_HISTORY,))
            self.changed.notify_all()

    def tasks(self, state: str) -> list[list]:
        with self._lock:
            return [json.loads(t) for (t,) in self._rows(
                "SELECT task FROM tasks WHERE state = ? ORDER BY number, seq", state)]

    def remaining(self) -> int:
        with self._lock:
            (count,), = self._rows("SELECT COUNT(*) FROM tasks WHERE state != 'done'")
            return count

    def history(self, prompt_id: str | None = None, max_items: int | None = None, offset: int = 0) -> dict:
        """{prompt_id: item} in the order they finished; the last `max_items` when no offset."""
        with self._lock:
            if prompt_id is not None:
                rows = self._rows("SELECT prompt_id, history FROM tasks WHERE state = 'done' AND prompt_id = ?",
                                  prompt_id)
            else:
                rows = self._rows("SELECT prompt_id, history FROM tasks WHERE state = 'done' ORDER BY finished")
                if max_items is not None:
                    rows = rows[offset:offset + max_items] if offset else rows[-max_items:] if max_items else []
                elif offset:
                    rows = rows[offset:]
        return {pid: json.loads(item) for pid, item in rows}

    def delete(self, state: str, prompt_ids: list[str] | None = None) -> None:
        """Drop pending tasks or history items: those listed, or all of them."""
        with self.changed:
            if prompt_ids is None:
                self._db.execute("DELETE FROM tasks WHERE state = ?", (state,))
            else:
                self._db.executemany("DELETE FROM tasks WHERE state = ? AND prompt_id = ?",
                                     [(state, str(p)) for p in prompt_ids])
            self.changed.notify_all()

    def close(self) -> None:
        with self._lock:
            self._db.close()
