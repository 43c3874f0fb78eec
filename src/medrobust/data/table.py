"""Rows of a manifest file: JSONL (one JSON object per line) or CSV/TSV (a header row), each tagged for messages.

Every row is ``(where, fields)``: ``where`` is ``"<file> entry i (line n)"`` (JSONL) or ``"<file> row i (line n)"``
(CSV; ``i`` counts data rows from 0, ``n`` is the 1-based line of the file where the row ends); ``fields`` maps
column names to values. CSV values are strings; an empty CSV cell is ``None`` (missing), as is a JSON ``null``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from medrobust.data.base import DataError

TABLE_SUFFIXES = (".jsonl", ".csv", ".tsv")
Row = tuple[str, dict[str, Any]]


def read_rows(path: str | Path) -> tuple[list[Row], list[str]]:
    """The rows of a ``.jsonl`` / ``.csv`` / ``.tsv`` manifest and its column names (CSV: the header; JSONL: every
    key, in order of first appearance).

    Raises:
        DataError: naming the file (and row): not found, unsupported suffix, not UTF-8, bad JSON, a JSONL line
            that is not an object, a CSV row with more cells than the header, or no rows at all.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"{path}: manifest has extension {suffix or '(none)'!r}; expected .jsonl (one JSON object "
                        "per line) or .csv / .tsv (a header row, one image per row)")
    if not path.is_file():
        raise DataError(f"{path}: manifest file not found; expected a {'JSONL' if suffix == '.jsonl' else 'CSV'} file")
    try:
        rows, columns = (_jsonl(path) if suffix == ".jsonl" else _csv(path, "\t" if suffix == ".tsv" else ","))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); expected a UTF-8 text file") from None
    if not rows:
        raise DataError(f"{path}: manifest has no rows; expected "
                        + ("one JSON object per line" if suffix == ".jsonl" else "a header row and one row per image"))
    return rows, columns


def _jsonl(path: Path) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    columns: dict[str, None] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path} entry {len(rows)} (line {lineno})"
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: bad JSON ({err.msg} at column {err.colno}); expected one JSON object "
                                "per line") from None
            except RecursionError:
                raise DataError(f"{where}: JSON nested too deeply to read; expected one flat JSON object per "
                                "line") from None
            if not isinstance(entry, dict):
                raise DataError(f"{where}: got {type(entry).__name__} {line.strip()[:60]!r}; expected a JSON object")
            columns.update(dict.fromkeys(entry))
            rows.append((where, entry))
    return rows, list(columns)


def _csv(path: Path, delimiter: str) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader, None)
            if header is None:
                return [], []
            header = [h.strip() for h in header]
            dup = sorted({h for h in header if header.count(h) > 1})
            if dup:
                raise DataError(f"{path} line 1: the header repeats column(s) {dup}; expected unique column names")
            for cells in reader:
                where = f"{path} row {len(rows)} (line {reader.line_num})"
                if not any(c.strip() for c in cells):
                    continue
                if len(cells) > len(header):
                    raise DataError(f"{where}: {len(cells)} cells but the header has {len(header)} columns; expected "
                                    "at most one cell per column (quote cells that contain the delimiter)")
                values = {h: (c if c.strip() else None) for h, c in zip(header, cells)}
                values.update({h: None for h in header[len(cells):]})
                rows.append((where, values))
        except csv.Error as err:
            raise DataError(f"{path} line {reader.line_num}: unreadable CSV ({err}); expected comma-separated "
                            "cells with a header row") from None
    return rows, header


def check_columns(path: str | Path, columns: list[str], wanted: dict[str, str], key: str = "data.columns") -> None:
    """Every column named in ``wanted`` (role -> column) exists; an error lists the file's columns."""
    for role, column in wanted.items():
        if column not in columns:
            raise DataError(f"{path}: {key}.{role} names column {column!r}, which the file lacks; its columns are: "
                            f"{', '.join(map(repr, columns))}")
