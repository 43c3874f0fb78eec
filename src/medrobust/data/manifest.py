"""Image(-text) manifests with the user's own columns: JSONL (IU X-ray / ROCO / MIMIC-CXR style exports) or the
publisher's CSV (e.g. the COVID-19 image data collection's ``metadata.csv``).

One row per image. ``data.columns`` maps roles to the file's column names (defaults in brackets; a default column
that the file lacks is simply not used, a column you name that the file lacks is an error listing its columns):

    image [image]: path of the image (required), relative to ``data.images_dir`` (default: the manifest's
        folder; a relative ``images_dir`` is itself relative to the manifest's folder); absolute paths allowed. Any format of :mod:`medrobust.data.images`: PNG/JPEG/BMP/TIFF in every
        mode, 16-bit PNG, NPY, DICOM (a file or a series folder), NIfTI.
    text [text]: the report (written after the image is read): image-text pre-training pairs and retrieval.
    context [indication]: text that exists before the image is read (indication, clinical history): what an
        ``image+indication`` classifier sees with the image.
    label [label]: JSONL: a class index, a list of 0/1 findings (multilabel) or null. CSV (or JSONL strings):
        class names; ``data.label_map`` maps raw values to class names (``"*"``: every other value; a value
        mapped to null marks the row unlabeled); with ``data.label_separator`` (e.g. ``","``) a cell holds
        several findings -> a multilabel task over the findings seen. Integer-looking CSV cells are class
        indices. Classes are sorted by name unless ``data.label_names`` orders them. Missing -> unlabeled (kept
        for self-supervised pre-training).
    site [site]: hospital / source; missing -> ``"unknown"``. Held-out sites are named in ``data.holdout_sites``.
    group [group]: patient id: a patient's images stay in one split and on one side of a label fraction.
    split [split]: ``train`` / ``val`` (``validation``, ``valid``) / ``test``; without it, a seeded split by
        ``data.split_fractions``, stratified by (site, label) over groups (patients) when grouped.
    modality [modality]: e.g. ``X-ray``; the data set's modality when every row agrees (or ``data.modality``).

``data.where: {column: value or [values]}`` keeps the rows whose cells equal one of the values (compared as
strings). A row whose image file is missing or unreadable, or whose image / text / context cell is empty, is
skipped and counted (the first few named in :attr:`Dataset.notes`) unless ``data.strict: true``, which makes it an
error. Wrong types (a JSONL label that is neither int, list, string nor null; a non-string site) are always errors
naming the row.

Images are fitted to ``data.image_size`` / ``data.channels`` / ``data.resize`` by the rule of
:func:`medrobust.data.images.fit_image`; with no ``image_size`` images keep their shape when all share one, else
they are fitted to 64 px (2D) or 32³ (3D), said in the notes. With no ``channels``: 1 when every image is gray
(RGB files whose channels are equal count as gray), else 3; NPY arrays of another channel count keep it. Decoded images are cached on disk
(:mod:`medrobust.data.cache`; ``data.cache: false`` turns it off).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from medrobust.data import cache
from medrobust.data.base import UNLABELED, Dataset, DataError, Split, Task
from medrobust.data.images import (IMAGE_SUFFIXES, fit_image, is_gray, read_image,  # noqa: F401 - re-exported
                                   short_path, target_shape, unusable_path)
from medrobust.data.table import Row, check_columns, read_rows
from medrobust.registry import register

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": 0, "training": 0, "val": 1, "valid": 1, "validation": 1, "dev": 1, "test": 2, "testing": 2}
DEFAULT_COLUMNS = {"image": "image", "text": "text", "context": "indication", "label": "label", "site": "site",
                   "group": "group", "split": "split", "modality": "modality"}
DEFAULT_SIZE = {2: 64, 3: 32}
UNKNOWN_SITE = "unknown"
NAMED = 3  # skipped rows named per reason
MAX_INFERRED_CLASSES = 10_000  # class names made up from the largest label: more is a corrupt label, not a task


class Columns(BaseModel):
    """Role -> column name of the file (module docstring); None = the default name, used when the file has it."""

    model_config = ConfigDict(extra="forbid")
    image: str | None = None
    text: str | None = None
    context: str | None = None
    label: str | None = None
    site: str | None = None
    group: str | None = None
    split: str | None = None
    modality: str | None = None


class ReadParams(BaseModel):
    """What every file-based source shares: columns, row filter, labels, image fitting, skipping, cache."""

    model_config = ConfigDict(extra="forbid")

    columns: Columns = Columns()
    images_dir: str | None = Field(None, description="folder image paths are relative to (default: the manifest's)")
    where: dict[str, str | int | float | list[str | int | float]] = {}
    task: Literal["auto", "binary", "multiclass", "multilabel", "ordinal"] = "auto"
    label_names: list[str] | None = None
    label_map: dict[str, str | None] | None = None
    label_separator: str | None = None
    image_size: int | list[int] | None = Field(None, description="square side, or [D, H, W] for volumes")
    channels: Literal[1, 3] | None = None
    resize: Literal["pad", "crop"] = "pad"
    window: tuple[float, float] | None = Field(None, description="DICOM window (center, width), e.g. [40, 400] HU")
    frame: int = Field(0, ge=0, description="NIfTI 4D: the frame read")
    modality: str | None = None
    strict: bool = False
    cache: bool = True
    cache_dir: str | None = None
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    split_seed: int = 0

    @field_validator("split_fractions")
    @classmethod
    def _fractions_sum_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(v) < 0 or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"split_fractions {v} must be non-negative and sum to 1")
        return v

    @field_validator("image_size")
    @classmethod
    def _size(cls, v):
        sizes = [v] if isinstance(v, int) else (v or [])
        if v is not None and (not sizes or len(sizes) not in (1, 2, 3) or min(sizes) < 4):
            raise ValueError(f"image_size {v} must be a side >= 4, [H, W] or [D, H, W]")
        return v


class ManifestParams(ReadParams):
    """Parameters of the ``manifest`` data source: ``path`` (``.jsonl``, ``.csv`` or ``.tsv``) and
    :class:`ReadParams`."""

    path: str


class Skips:
    """Rows left out, by reason, with the first few named."""

    def __init__(self, strict: bool, source: Path | str = ""):
        self.strict, self.by_reason, self.prefix = strict, {}, f"{source} "

    def skip(self, where: str, reason: str, detail: str) -> None:
        if self.strict:
            raise DataError(f"{where}: {detail} (data.strict is true; set it to false to skip such rows)")
        short = where[len(self.prefix):] if where.startswith(self.prefix) else where  # the row, without the file
        self.by_reason.setdefault(reason, []).append(f"{short}: {detail}")

    def notes(self, total: int) -> list[str]:
        out = []
        for reason, items in self.by_reason.items():
            named = "; ".join(items[:NAMED]) + ("; ..." if len(items) > NAMED else "")
            out.append(f"skipped {len(items)} of {total} rows ({reason}): {named}")
        return out

    def __len__(self) -> int:
        return sum(map(len, self.by_reason.values()))


def resolve_columns(params: ReadParams, path: Path, columns: list[str]) -> dict[str, str]:
    """Role -> column actually used: named ones must exist; defaults are used when present."""
    named = {role: col for role, col in params.columns.model_dump().items() if col is not None}
    check_columns(path, columns, named)
    defaults = {role: col for role, col in DEFAULT_COLUMNS.items() if role not in named and col in columns}
    used = {**defaults, **named}
    if "image" not in used:
        raise DataError(f"{path}: no image column; the file's columns are {', '.join(map(repr, columns))}; "
                        "name the one holding image paths with data.columns.image")
    check_columns(path, columns, {f"where.{k}": k for k in params.where}, key="data")
    return used


def _keep(fields: dict[str, Any], where: dict[str, Any]) -> bool:
    for column, wanted in where.items():
        values = wanted if isinstance(wanted, list) else [wanted]
        if fields.get(column) is None or str(fields[column]).strip() not in {str(v).strip() for v in values}:
            return False
    return True


def _text(fields: dict, column: str, where: str, skips: Skips, role: str) -> str | None:
    value = fields.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        skips.skip(where, f"empty {role}", f"{role} column {column!r} is empty")
        return None
    if not isinstance(value, str):
        raise DataError(f"{where}: {column} {value!r}; expected a string")
    return value


def build_dataset(rows: list[Row], columns: list[str], params: ReadParams, source: Path, name: str,
                  base_dir: Path) -> Dataset:
    """Rows of a table -> :class:`Dataset` by the module's rules (shared by the manifest and volumes sources)."""
    used = resolve_columns(params, source, columns)
    total = len(rows)
    rows = [r for r in rows if _keep(r[1], params.where)]
    notes = [] if not params.where else [f"kept {len(rows)} of {total} rows where "
                                         + ", ".join(f"{k} = {v}" for k, v in params.where.items())]
    if not rows:
        raise DataError(f"{source}: no row has {params.where}; expected at least one (compare the values with "
                        "`medrobust data inspect`)")
    skips = Skips(params.strict, source)
    images_dir = base_dir / params.images_dir if params.images_dir else base_dir  # absolute stays absolute
    kept: list[tuple[str, dict, Path, dict]] = []  # where, fields, image file, parsed fields
    for where, fields in rows:
        rel = fields.get(used["image"])
        if rel is None or not str(rel).strip():
            skips.skip(where, "empty image", f"image column {used['image']!r} is empty")
            continue
        if not isinstance(rel, str):
            raise DataError(f"{where}: image {rel!r} is not a path; expected a non-empty string")
        reason = unusable_path(Path(rel) if Path(rel).is_absolute() else images_dir / rel)
        if reason is not None:  # a NUL byte or a name too long for the file system: no such file can exist
            skips.skip(where, "missing image file", f"image path {short_path(rel)} cannot name a file ({reason})")
            continue
        file = (Path(rel) if Path(rel).is_absolute() else images_dir / rel).resolve()  # one spelling per file
        if not file.exists():
            skips.skip(where, "missing image file", f"image file {file} not found")
            continue
        parsed = {}
        for role in ("text", "context"):
            if role in used:
                parsed[role] = _text(fields, used[role], where, skips, role)
        if any(parsed.get(r, "") is None for r in ("text", "context")):
            continue
        kept.append((where, fields, file, parsed))
    images, kept, fit_notes = _images(kept, params, source, skips)
    notes += skips.notes(len(rows)) + fit_notes
    if not kept:
        raise DataError(f"{source}: no usable rows ({'; '.join(notes)})")
    labels, task = _labels([(w, f.get(used["label"])) for w, f, _, _ in kept] if "label" in used
                           else [(w, None) for w, *_ in kept], params, str(source))
    sites = [_site(f.get(used["site"]), w) if "site" in used else "all" for w, f, _, _ in kept]
    if not task.multilabel:
        empty = [n for i, n in enumerate(task.label_names) if not (labels == i).any()]
        if empty:
            notes.append(f"class(es) {', '.join(map(repr, empty))} have no rows"
                         + ("; integer labels are class indices from 0 — for labels counted from 1, map them with "
                            "data.label_map or name them with data.label_names" if "class_0" in empty else ""))
    groups = _groups(kept, used.get("group"), notes)
    split_id = _split_ids(kept, used, labels, sites, groups, params, notes)
    site_names = tuple(sorted(set(sites)))
    site_idx = np.searchsorted(np.asarray(site_names), np.asarray(sites)).astype(np.int64)
    texts = [p["text"] for *_, p in kept] if "text" in used else None
    contexts = [p["context"] for *_, p in kept] if "context" in used else None
    splits = {}
    for k, split in enumerate(SPLITS):
        idx = np.flatnonzero(split_id == k)
        splits[split] = Split(images=images[idx], labels=labels[idx], sites=site_idx[idx],
                              texts=None if texts is None else [texts[i] for i in idx],
                              indications=None if contexts is None else [contexts[i] for i in idx],
                              groups=None if groups is None else groups[idx])
    modality = params.modality
    if modality is None and "modality" in used:
        values = {str(f.get(used["modality"])) for _, f, _, _ in kept if f.get(used["modality"]) is not None}
        modality = values.pop() if len(values) == 1 else None
    return Dataset(name=name, task=task, site_names=site_names, source=str(source), notes=tuple(notes),
                   modality=modality, **splits)


def _groups(kept: list, column: str | None, notes: list[str]) -> np.ndarray | None:
    """Group ids (0..G-1 in order of first row): rows of one patient (``column``) or of one image file are one
    group, joined transitively, so neither a patient nor an image listed twice can straddle two splits. None
    when there is no group column and no file is listed twice."""
    files = [str(f) for _, _, f, _ in kept]
    repeated = len(set(files)) < len(files)
    if column is None and not repeated:
        return None
    parent = list(range(len(kept)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for i, (_, fields, file, _) in enumerate(kept):
        keys = [("file", str(file))]
        if column is not None and fields.get(column) is not None and str(fields[column]).strip():
            keys.append(("group", str(fields[column]).strip()))
        for key in keys:
            j = first.setdefault(key, i)
            parent[root(i)] = root(j)
    roots = [root(i) for i in range(len(kept))]
    ids = {r: k for k, r in enumerate(dict.fromkeys(roots))}
    if repeated:
        n = len(files) - len(set(files))
        notes.append(f"{n} row(s) list an image file already listed in another row; rows sharing a file are kept "
                     "in one split (grouped with their patient)")
    return np.array([ids[r] for r in roots], dtype=np.int64)


# ---------------------------------------------------------------- images


def _images(kept: list, params: ReadParams, source: Path, skips: Skips) -> tuple[np.ndarray, list, list[str]]:
    """Decoded, fitted images of the kept rows (unreadable ones skipped), the rows left, and notes."""
    files = list(dict.fromkeys(f for _, _, f, _ in kept))
    read_params = {"image_size": params.image_size, "channels": params.channels, "resize": params.resize,
                   "window": params.window, "frame": params.frame}
    root = cache.cache_root(params.cache_dir)
    key = cache.key_of(source, read_params, files) if params.cache else None
    hit = cache.load(root, key) if key else None
    if hit is not None:
        arrays = dict(zip(hit["files"].tolist(), hit["images"]))
        notes = hit["notes"].tolist()
        failed: dict[str, str] = {}
    else:
        arrays, failed, notes = _decode(files, kept, params)
        if key and not failed:  # a failure is never cached: the next read tries the file again
            stacked = np.stack(list(arrays.values())) if arrays else np.zeros((0, 1, 1, 1), np.uint8)
            cache.save(root, key, {"files": np.array(list(arrays), dtype=str), "images": stacked,
                                   "notes": np.array(notes, dtype=str)})
    out, rows = [], []
    for row in kept:
        file = str(row[2])
        if file in failed:
            skips.skip(row[0], "unreadable image", failed[file])
        else:
            out.append(arrays[file])
            rows.append(row)
    if not out:
        return np.zeros((0, 1, 1, 1), np.uint8), [], notes
    return np.stack(out), rows, notes


def _decode(files: list[Path], kept: list, params: ReadParams) -> tuple[dict[str, np.ndarray], dict[str, str], list[str]]:
    where_of = {}
    for w, _, f, _ in kept:
        where_of.setdefault(f, w)
    size = None
    native: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}
    dims = None
    notes: list[str] = []
    shapes = Counter()
    for f in files:
        where = where_of[f]
        draft = max(target_shape(params.image_size, 2)) if isinstance(params.image_size, int) else None
        try:
            img = read_image(f, where, draft=draft, window=params.window, frame=params.frame)
        except DataError as err:
            if params.strict:
                raise
            msg = str(err)
            msg = msg[len(where):].lstrip(": ") if msg.startswith(where) else msg
            failed[str(f)] = msg if str(f) in msg else f"{f}: {msg}"
            continue
        if dims is None:
            dims = img.ndim - 1
            if params.image_size is not None:
                size = target_shape(params.image_size, dims)
        elif img.ndim - 1 != dims:
            raise DataError(f"{where}: image {f} is {img.ndim - 1}D but earlier images are {dims}D; expected one kind "
                            "(2D images or 3D volumes) per data set")
        shapes[tuple(img.shape[1:])] += 1
        if size is None and len(shapes) > 1:  # shapes differ and no size given: fit everything to the default
            size = (DEFAULT_SIZE[dims],) * dims
            notes.append(f"images have {len(shapes)}+ different sizes (e.g. {', '.join('×'.join(map(str, s)) for s in list(shapes)[:3])}); "
                         f"fitted to {'×'.join(map(str, size))} ({params.resize}); set data.image_size to choose")
            native = {k: fit_image(v, size, None, params.resize) for k, v in native.items()}
        native[str(f)] = img if size is None else fit_image(img, size, None, params.resize)
    channels = params.channels
    counts = {v.shape[0] for v in native.values()}
    if channels is None and counts and counts <= {1, 3}:
        channels = 1 if all(is_gray(v) for v in native.values()) else 3
    elif channels is None and len(counts) > 1:
        raise DataError(f"{where_of[files[0]]}: images have {sorted(counts)} channels; expected one channel count "
                        "(set data.channels to 1 or 3 for gray / RGB files)")
    out = {k: fit_image(v, None, channels, params.resize) for k, v in native.items()}
    if any(v.dtype == np.float32 for v in out.values()):
        out = {k: (v.astype(np.float32) / 255.0 if v.dtype == np.uint8 else v) for k, v in out.items()}
    if size is not None and params.image_size is not None and set(shapes) != {tuple(size)}:
        notes.append(f"images fitted to {channels}×{'×'.join(map(str, size))} ({params.resize}) from "
                     f"{len(shapes)} native size(s)")
    return out, failed, notes


# ---------------------------------------------------------------- labels


def _labels(values: list[tuple[str, Any]], params: ReadParams, source: str) -> tuple[np.ndarray, Task]:
    """Labels array and task from raw cell values (module docstring)."""
    mapped: list[tuple[str, Any]] = []
    for where, v in values:
        if isinstance(v, bool) or (v is not None and not isinstance(v, (int, str, list))):
            raise DataError(f"{where}: label {v!r}; expected a class index (int), a class name, a non-empty list of "
                            "0/1 findings, or null")
        if isinstance(v, str):
            v = v.strip()
            if params.label_separator is not None:
                parts = [_map(p.strip(), params) for p in v.split(params.label_separator) if p.strip()]
                v = None if all(p is None for p in parts) else sorted({p for p in parts if p is not None})
            elif params.label_map is None and _is_int(v):
                v = int(v)
            else:
                v = _map(v, params)
        mapped.append((where, v))
    kinds = {_kind(v, w) for w, v in mapped if v is not None}
    if len(kinds) > 1:
        first = {k: next((w, v) for w, v in mapped if v is not None and _kind(v, w) == k) for k in kinds}
        (ka, (wa, va)), (kb, (wb, vb)) = sorted(first.items())[:2]
        raise DataError(f"{wb}: label {vb!r} is {kb} but {wa} has label {va!r} ({ka}); expected every label to be "
                        "of one type")
    kind = kinds.pop() if kinds else None
    if kind == "names":  # multilabel by names -> 0/1 lists over the sorted findings
        names = params.label_names or sorted({n for _, v in mapped if v is not None for n in v})
        unknown = next(((w, n) for w, v in mapped if v is not None for n in v if n not in names), None)
        if unknown:
            raise DataError(f"{unknown[0]}: finding {unknown[1]!r} is not in data.label_names {names}")
        mapped = [(w, None if v is None else [int(n in v) for n in names]) for w, v in mapped]
        kind, params = "list", params.model_copy(update={"label_names": names})
    if kind == "str":
        names = params.label_names or sorted({v for _, v in mapped if v is not None})
        unknown = next(((w, v) for w, v in mapped if v is not None and v not in names), None)
        if unknown:
            raise DataError(f"{unknown[0]}: label {unknown[1]!r} is not in data.label_names {names}")
        mapped = [(w, None if v is None else names.index(v)) for w, v in mapped]
        kind, params = "int", params.model_copy(update={"label_names": list(names)})
    raw = [v for _, v in mapped]
    task = _resolve_task(params, raw, kind, mapped, source)
    return _label_array(raw, task, mapped), task


def _is_int(v: str) -> bool:
    return v.lstrip("-").isdigit()


def _map(value: str, params: ReadParams) -> str | None:
    if params.label_map is None:
        return value
    if value in params.label_map:
        return params.label_map[value]
    return params.label_map.get("*", value)


def _kind(v: Any, where: str) -> str:
    if isinstance(v, int):
        return "int"
    if isinstance(v, str):
        return "str"
    if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        return "names"
    if isinstance(v, list) and v and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return "list"
    raise DataError(f"{where}: label {v!r}; expected a class index (int), a class name, a non-empty list of 0/1 "
                    "findings, or null")


def _resolve_task(params: ReadParams, labels: list, kind: str | None, rows: list, where: str) -> Task:
    task = params.task
    if kind == "list" and task not in ("auto", "multilabel"):
        raise DataError(f"{where}: labels are lists (multilabel) but task is {task!r}; expected class indices")
    if kind == "int" and task == "multilabel":
        raise DataError(f"{where}: labels are class indices but task is 'multilabel'; expected lists of 0/1")
    if kind == "list" or task == "multilabel":
        first = next(((w, v) for w, v in rows if v is not None), None)
        width = len(first[1]) if first else len(params.label_names or ()) or 1
        for w, v in rows:
            if v is not None and len(v) != width:
                raise DataError(f"{w}: label {v!r} has {len(v)} findings but {first[0]} has {width}; expected "
                                "multilabel lists of one length")
        names = params.label_names or [f"class_{i}" for i in range(width)]
        if len(names) != width:
            raise DataError(f"{where}: labels have {width} findings but label_names has {len(names)}; expected equal")
        task = "multilabel"
    else:
        top = max((v for v in labels if v is not None), default=0)
        if task != "binary" and not params.label_names and top >= MAX_INFERRED_CLASSES:
            w = next(w for w, v in rows if v == top)
            raise DataError(f"{w}: label {top} would make {top + 1} classes; expected class indices below "
                            f"{MAX_INFERRED_CLASSES} (or name the classes with data.label_names)")
        n = 2 if task == "binary" else max(2, top + 1)
        names = params.label_names or [f"class_{i}" for i in range(n)]
        if task == "auto":
            task = "binary" if len(names) == 2 else "multiclass"
    try:
        return Task(task, tuple(names))
    except DataError as err:
        raise DataError(f"{where}: {err}") from None


def _label_array(labels: list, task: Task, rows: list) -> np.ndarray:
    """int64 ``[N]`` or ``[N, L]`` with ``-1`` for unlabeled rows; out-of-range values raise."""
    n_out = task.n_outputs
    out = np.full((len(labels), n_out) if task.multilabel else len(labels), UNLABELED, dtype=np.int64)
    for i, lab in enumerate(labels):
        if lab is None:
            continue
        if task.multilabel:
            if any(v not in (0, 1) for v in lab):
                raise DataError(f"{rows[i][0]}: label {lab!r}; expected 0 or 1 for each finding")
        elif not 0 <= lab < n_out:
            raise DataError(f"{rows[i][0]}: label {lab!r} out of range; expected a class index 0..{n_out - 1} "
                            f"for {task.kind} ({n_out} classes), or null for unlabeled")
        out[i] = lab
    return out


def _site(value: Any, where: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        return UNKNOWN_SITE
    if not isinstance(value, str):
        raise DataError(f"{where}: site {value!r}; expected a non-empty string")
    return value.strip()


# ---------------------------------------------------------------- splits


def stratified_split(keys: list[str], fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """Split ids (0 train, 1 val, 2 test) by ``fractions`` within each stratum, seeded.

    Each stratum is permuted; member ``k`` of ``n`` goes to the split whose cumulative fraction covers
    ``(k + u) / n`` with a random offset ``u``, so every stratum is split in proportion (±1).
    """
    rng = np.random.default_rng(seed)
    keys_arr = np.asarray(keys)
    out = np.zeros(len(keys), dtype=np.int64)
    cum = np.cumsum(fractions)
    cum[-1] = 1.0
    for key in sorted(set(keys)):
        members = rng.permutation(np.flatnonzero(keys_arr == key))
        pos = (np.arange(len(members)) + rng.random()) / len(members)
        out[members] = np.minimum(np.searchsorted(cum, pos, side="right"), 2)
    return out


def _split_ids(kept: list, used: dict, labels: np.ndarray, sites: list[str], groups: np.ndarray | None,
               params: ReadParams, notes: list[str]) -> np.ndarray:
    if "split" in used:
        out = np.empty(len(kept), dtype=np.int64)
        for i, (where, fields, _, _) in enumerate(kept):
            value = str(fields.get(used["split"]) or "").strip().lower()
            if value not in SPLIT_ALIASES:
                raise DataError(f"{where}: split {fields.get(used['split'])!r}; expected one of train, val, test")
            out[i] = SPLIT_ALIASES[value]
        if groups is not None:
            leaked = [g for g in np.unique(groups) if len(np.unique(out[groups == g])) > 1]
            if leaked:  # groups are patients (the group column) and rows that share an image file
                what = used["group"] if "group" in used else "rows sharing an image file"
                notes.append(f"warning: {len(leaked)} group(s) ({what}) have images in more than one of the "
                             "given splits: the split leaks patients")
        return out
    label_key = [str(row.tolist()) for row in labels]
    if groups is None:
        return stratified_split([f"{s}|{lab}" for s, lab in zip(sites, label_key)], params.split_fractions,
                                params.split_seed)
    ids, first = np.unique(groups, return_index=True)
    unit = stratified_split([f"{sites[i]}|{label_key[i]}" for i in first], params.split_fractions, params.split_seed)
    return unit[np.searchsorted(ids, groups)]


@register("data", "manifest")
def load_manifest(params: ManifestParams | str | Path) -> Dataset:
    """Load a JSONL or CSV image(-text) manifest into a :class:`Dataset` (module docstring).

    Raises:
        DataError: naming the manifest, the row, the bad value and what was expected.
    """
    if not isinstance(params, ManifestParams):
        params = ManifestParams(path=str(params))
    path = Path(params.path)
    rows, columns = read_rows(path)
    name = path.parent.name if path.stem in ("manifest", "metadata") and path.parent.name else path.stem
    return build_dataset(rows, columns, params, path, name, path.parent)


load_manifest.Params = ManifestParams  # type: ignore[attr-defined]


# kept for callers that read one JSONL file's entries (inspect)
def read_entries(path: str | Path) -> list[Row]:
    return read_rows(path)[0]


def image_path(manifest: Path, entry: dict[str, Any], where: str) -> Path:
    """The image file of a JSONL entry, resolved against the manifest's folder."""
    rel = entry.get("image")
    if not isinstance(rel, str) or not rel:
        raise DataError(f"{where}: image {rel!r} is not a path; expected a non-empty string")
    p = Path(rel)
    return p if p.is_absolute() else Path(manifest).parent / p
