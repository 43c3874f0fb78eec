"""Results store: one SQLite row per finished run, written in a single transaction (atomic).

A run is either fully in the store (resolved config, metrics, timing) or absent; a study killed midway
loses only the run in flight. Re-running skips every key already present.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from medrobust.record import RunRecord


class StoreError(RuntimeError):
    """The results store cannot be opened or read."""


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=60)
            self._conn.execute("CREATE TABLE IF NOT EXISTS runs (key TEXT PRIMARY KEY, record TEXT NOT NULL, "
                               "finished REAL NOT NULL)")
            self._conn.commit()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"results store {self.path} is not a usable SQLite file ({exc}); "
                               "move it away to start a fresh study") from None

    def keys(self) -> set[str]:
        return {row[0] for row in self._conn.execute("SELECT key FROM runs")}

    def __contains__(self, key: str) -> bool:
        return self._conn.execute("SELECT 1 FROM runs WHERE key = ?", (key,)).fetchone() is not None

    def put(self, record: RunRecord) -> None:
        """Insert (or replace) one finished run; committed before returning."""
        with self._conn:
            self._conn.execute("INSERT OR REPLACE INTO runs (key, record, finished) VALUES (?, ?, ?)",
                               (record.key, record.to_json(), time.time()))

    def get(self, key: str) -> RunRecord | None:
        """The stored run (records of the previous, untyped version are converted; see ``RunRecord.from_json``)."""
        row = self._conn.execute("SELECT record FROM runs WHERE key = ?", (key,)).fetchone()
        return None if row is None else RunRecord.from_json(row[0])

    def finished_at(self, key: str) -> float | None:
        row = self._conn.execute("SELECT finished FROM runs WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def records(self, keys: list[str] | None = None) -> list[RunRecord]:
        """Stored records, in the order of ``keys`` (missing keys skipped) or insertion order."""
        if keys is None:
            return [RunRecord.from_json(r[0]) for r in self._conn.execute("SELECT record FROM runs ORDER BY rowid")]
        out = [self.get(k) for k in keys]
        return [r for r in out if r is not None]

    def close(self) -> None:
        self._conn.close()
