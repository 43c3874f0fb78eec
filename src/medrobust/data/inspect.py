"""Human-readable description of a data file or folder: what it holds and whether it will load.

:func:`describe` reads a MedMNIST ``.npz`` (keys, shapes, dtypes, split sizes, recognised subset and task,
label distribution, MD5 check against the official table), a JSONL manifest (entries, splits, sites,
label distribution, text, image shape and an example report), a VQA-RAD ``.json``, a ``.csv`` table (rows,
columns, non-empty values, the most common values), a DICOM (``.dcm``, ``.dicom``) or NIfTI (``.nii``,
``.nii.gz``) image (shape, the shape it reads as, modality, spacing, value range, window, orientation) or a folder
(a DICOM series: slices and stacked shape; any other folder: files counted by type, each volume in one line),
without building the whole data set.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np

from medrobust.data.base import UNLABELED, DataError
from medrobust.data.manifest import image_path, read_entries, read_image
from medrobust.data.medmnist import KNOWN_SUBSETS, SPLITS, check_md5, read_npz, recognise
from medrobust.data.volumes import dicom_files, volume_info, volume_suffix

SUPPORTED = (".npz", ".jsonl", ".json", ".csv", ".dcm", ".dicom", ".nii", ".nii.gz")
_SUPPORTED_TEXT = (".npz (MedMNIST arrays), .jsonl (image-text manifest), .json (VQA questions, VQA-RAD layout), "
                   ".csv (table), .dcm / .dicom (DICOM image), .nii / .nii.gz (NIfTI volume) and folders (a DICOM "
                   "series, or any folder of files)")
_MD5_LIMIT = 512 * 2**20  # hash files up to this size only
_FOLDER_VOLUMES = 20  # a folder's volumes described one line each, up to this many
_CSV_FEW = 20  # a CSV column with at most this many distinct values lists its most common ones
_CSV_TRACK = 1000  # distinct values counted per CSV column, at most


def describe(path: str | Path) -> str:
    """A multi-line description of a data file (see :data:`SUPPORTED`) or a folder.

    Raises:
        DataError: for a missing file, an unsupported extension (naming the supported ones) or an unreadable
            file.
    """
    path = Path(path)
    if path.is_dir():
        return _describe_folder(path)
    suffix = volume_suffix(path) or path.suffix.lower()
    if suffix not in SUPPORTED:
        if not path.exists() and not suffix:
            raise DataError(f"{path}: file or folder not found")
        raise DataError(f"{path}: cannot describe {suffix or 'extension-less'!r} files; supported: {_SUPPORTED_TEXT}")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if suffix in (".dcm", ".nii", ".nii.gz"):
        return _describe_volume(path)
    return {".npz": _describe_npz, ".jsonl": _describe_manifest, ".json": _describe_vqa,
            ".csv": _describe_csv}[suffix](path)


def _distribution(labels: np.ndarray, names: tuple[str, ...] | None = None) -> str:
    """``name: count`` per class ([N]) or positives per finding ([N, L]); unlabeled counted apart."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim == 1:
        values, counts = np.unique(labels, return_counts=True)
        parts = [f"{_name(int(v), names)}: {c}" for v, c in zip(values, counts) if v != UNLABELED]
        unlabeled = int((labels == UNLABELED).sum())
    else:
        unl = (labels == UNLABELED).all(axis=1)
        pos = (labels[~unl] == 1).sum(axis=0)
        parts = [f"{_name(i, names)}: {int(p)}" for i, p in enumerate(pos)]
        unlabeled = int(unl.sum())
    if unlabeled:
        parts.append(f"unlabeled: {unlabeled}")
    return ", ".join(parts) or "none"


def _name(i: int, names: tuple[str, ...] | None) -> str:
    return f"{i} ({names[i]})" if names and 0 <= i < len(names) else str(i)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _describe_npz(path: Path) -> str:
    arrays = read_npz(path)
    subset, size = recognise(path)
    info = KNOWN_SUBSETS.get(subset) if subset else None
    lines = [f"{path} (MedMNIST .npz, {path.stat().st_size:,} bytes)", "keys:"]
    for key, arr in arrays.items():
        lines.append(f"  {key}: shape {arr.shape}, dtype {arr.dtype}")
    expected = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels")]
    missing = [k for k in expected if k not in arrays]
    if missing:
        lines.append(f"missing keys: {', '.join(missing)} (will not load)")
    if info is None:
        lines.append("subset: not a known MedMNIST subset (task will be inferred from the labels)")
    else:
        lines.append(f"subset: {subset} ({size or 28} px), {info.spatial_dims}D, {info.channels} channel(s), "
                     f"task {info.task}, labels: {', '.join(map(repr, info.label_names))}")
    if path.stat().st_size <= _MD5_LIMIT:  # which official release and size this file is, if any (a warning)
        lines.append(check_md5(path, _md5(path)))
    names = info.label_names if info is not None else None
    for split in SPLITS:
        x, y = arrays.get(f"{split}_images"), arrays.get(f"{split}_labels")
        if x is None or y is None:
            continue
        if x.ndim == 0 or y.ndim not in (1, 2):
            lines.append(f"{split}: images shape {x.shape}, labels shape {y.shape} (will not load)")
            continue
        dist = _distribution(y.astype(np.int64), names) if np.issubdtype(y.dtype, np.integer) else "non-integer"
        lines.append(f"{split}: {len(x)} images, labels {dist}")
    return "\n".join(lines)


def _describe_manifest(path: Path) -> str:
    entries = read_entries(path)
    n = len(entries)
    splits = Counter(str(e.get("split", "(none: split by fractions)")) for _, e in entries)
    sites = Counter(str(e.get("site", "all")) for _, e in entries)
    with_text = sum("text" in e for _, e in entries)
    labels = [e.get("label") for _, e in entries]
    unlabeled = sum(lab is None for lab in labels)
    lines = [f"{path} (image-text manifest, {n} entries)",
             "splits: " + ", ".join(f"{k}: {v}" for k, v in sorted(splits.items())),
             "sites: " + ", ".join(f"{k}: {v}" for k, v in sorted(sites.items())),
             f"text: {'yes' if with_text == n else 'no' if with_text == 0 else f'only {with_text} of {n} entries'}"]
    if any(isinstance(lab, list) for lab in labels):
        rows = [lab for lab in labels if isinstance(lab, list)]
        width = max(len(r) for r in rows)
        pos = [sum(1 for r in rows if i < len(r) and r[i] == 1) for i in range(width)]
        lines.append(f"labels: multilabel, {width} findings; positives per finding: "
                     + ", ".join(f"{i}: {p}" for i, p in enumerate(pos)))
    else:
        counts = Counter(lab if isinstance(lab, (str, int, float)) else repr(lab)  # a mis-typed {...} is unhashable
                         for lab in labels if lab is not None)
        kind = "none" if not counts else f"single-label, {len(counts)} classes"
        lines.append(f"labels: {kind}; " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=str)))
    lines.append(f"unlabeled entries: {unlabeled}")
    where, first = entries[0]
    try:
        img = read_image(image_path(path, first, where), where)
        lines.append(f"image shape (first entry): {img.shape}, dtype {img.dtype}")
    except DataError as err:
        lines.append(f"first image unreadable: {err}")
    example = next((e["text"] for _, e in entries if isinstance(e.get("text"), str) and e["text"]), None)
    if example is not None:
        lines.append(f"example report: {example[:200]}{'...' if len(example) > 200 else ''}")
    return "\n".join(lines)


def _describe_vqa(path: Path) -> str:
    """Questions, images, answer types and the most frequent answers of a VQA-RAD-layout json."""
    from medrobust.data.vqa import read_vqa_json

    entries = read_vqa_json(path)  # checks every entry, naming the index of a malformed one
    types = Counter(e["answer_type"] for e in entries)
    qtypes = Counter(str(e.get("question_type", "?")) for e in entries)
    answers = Counter(str(e["answer"]).lower() for e in entries)
    return "\n".join([
        f"{path} (VQA questions, VQA-RAD layout: {len(entries)} questions on "
        f"{len({e['image_name'] for e in entries})} images)",
        "answer types: " + ", ".join(f"{k}: {v}" for k, v in sorted(types.items())),
        "question types: " + ", ".join(f"{k}: {v}" for k, v in sorted(qtypes.items())),
        f"answers: {len(answers)} distinct; most frequent: "
        + ", ".join(f"{a} ({n})" for a, n in answers.most_common(5)),
        f"example: {entries[0]['question']} -> {entries[0]['answer']}" if entries else "example: none"])


# ------------------------------------------------------------------------------------------ volumes and folders


def _fmt(values, digits: int = 4) -> str:
    """A tuple of numbers as ``a x b x c`` (``?`` for unknown)."""
    return " x ".join("?" if v is None else f"{v:.{digits}g}" for v in values)


def _describe_volume(path: Path) -> str:
    info = volume_info(path)
    lines = [f"{path} ({info['format']}, {path.stat().st_size:,} bytes)"]
    lines.extend(_volume_lines(info))
    return "\n".join(lines)


def _volume_lines(info: dict) -> list[str]:
    lines = []
    if info["shape"] is not None:
        lines.append(f"shape: {tuple(info['shape'])} (raw, dtype {info['dtype'] or '?'}); reads as "
                     f"{tuple(info['read_shape'])} float32 in [0, 1]")
    if info["format"].startswith("DICOM"):
        lines.append(f"modality: {info['modality'] or 'not given'}, photometric interpretation: "
                     f"{info['photometric'] or 'not given'}, frames: {info['frames']}, transfer syntax: "
                     f"{info['transfer_syntax'] or 'unknown'}")
        if info.get("slices"):
            lines.append(f"slices: {info['slices']}, ordered by {info['order']}")
        spacing = f"{_fmt(info['spacing'])} mm" if info["spacing"] else "not given"
        thickness = info.get("slice_thickness")
        lines.append(f"spacing: {spacing}" + (f"; slice thickness {thickness:.4g} mm" if thickness else ""))
        if info["window"]:
            lines.append(f"window (from the file): center {info['window'][0]:.6g}, width {info['window'][1]:.6g}")
        elif info["voi_lut"]:
            lines.append("window (from the file): a VOI LUT table")
        elif info["photometric"] and "MONOCHROME" in str(info["photometric"]):
            lines.append("window: none in the file (the 0.5th-99.5th percentile is used unless one is given)")
    else:
        lines.append(f"modality: not recorded in NIfTI; frames: {info['frames']}; dtype {info['dtype']}, "
                     f"{info['endianness']}-endian")
        lines.append(f"spacing (zooms): {_fmt(info['spacing'])}")
        lines.append(f"orientation: {''.join(info['orientation'])} (read as RAS+: [1, D, H, W] = [1, k, j, i] "
                     "of the canonical axes)")
        if info.get("non_finite"):
            lines.append(f"non-finite voxels: {info['non_finite']} (read as the minimum finite value)")
        if info.get("description"):
            lines.append(f"description: {info['description']}")
    if info["value_range"] is not None:
        lo, hi = info["value_range"]
        lines.append(f"value range: {lo:.6g} .. {hi:.6g}"
                     + (" (after scl_slope/inter)" if info["format"] == "NIfTI" else " (stored colour values)"
                        if info["read_shape"] and info["read_shape"][0] == 3 else " (after rescale)"))
    if info["note"]:
        lines.append(f"note: {info['note']}")
    return lines


def _volume_line(info: dict) -> str:
    """One line of a volume's info, for a folder listing."""
    if info["shape"] is None:
        return f"{info['format']}, {info['note']}"
    parts = [info["format"]]
    if info["modality"]:
        parts.append(info["modality"])
    parts.append(f"shape {tuple(info['shape'])} -> {tuple(info['read_shape'])}")
    if info["spacing"]:
        parts.append(f"spacing {_fmt(info['spacing'])}")
    if info["value_range"] is not None:
        parts.append(f"values {info['value_range'][0]:.6g} .. {info['value_range'][1]:.6g}")
    if info["note"]:
        parts.append(f"note: {info['note']}")
    return ", ".join(parts)


def _without_where(err: DataError) -> str:
    """A volume reader's message without its leading ``inspect: `` context."""
    text = str(err)
    return text[len("inspect: "):] if text.startswith("inspect: ") else text


def _describe_folder(path: Path) -> str:
    entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    files = [p for p in entries if p.is_file()]
    folders = [p for p in entries if p.is_dir()]
    dicoms = dicom_files(path)
    series_error = None
    if dicoms:
        try:
            info = volume_info(path)
        except DataError as err:
            series_error = _without_where(err)
        else:
            lines = [f"{path} (DICOM series folder: {info['slices']} slices, stacked shape "
                     f"{tuple(info['read_shape'])})"]
            lines.extend(_volume_lines(info))
            others = len(files) - len(dicoms)
            if others or folders:
                lines.append(f"also in the folder: {others} other file(s), {len(folders)} subfolder(s)")
            return "\n".join(lines)
    kinds = Counter(volume_suffix(p) or p.suffix.lower() or "(no suffix)" for p in files)
    lines = [f"{path} (folder: {len(files)} files, {len(folders)} subfolders)",
             "files by type: " + (", ".join(f"{k}: {v}" for k, v in kinds.most_common()) or "none")]
    if folders:
        names = ", ".join(p.name for p in folders[:10])
        lines.append(f"subfolders: {names}" + (f" and {len(folders) - 10} more" if len(folders) > 10 else ""))
    if series_error is not None:
        lines.append(f"not one DICOM series: {series_error}")
    volumes = [p for p in files if volume_suffix(p) is not None or p in dicoms]
    if volumes:
        lines.append("volumes:")
    for p in volumes[:_FOLDER_VOLUMES]:
        try:
            lines.append(f"  {p.name}: {_volume_line(volume_info(p))}")
        except DataError as err:
            lines.append(f"  {p.name}: unreadable: {_without_where(err)}")
    if len(volumes) > _FOLDER_VOLUMES:
        lines.append(f"  ... and {len(volumes) - _FOLDER_VOLUMES} more volumes not described")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------- CSV


def _describe_csv(path: Path) -> str:
    """Rows, columns, per-column non-empty counts, numeric ranges and, for columns with at most
    :data:`_CSV_FEW` distinct values, the 5 most common values of a plain CSV table."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            sample = f.read(1 << 16)
            f.seek(0)
            try:
                delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter if sample else ","
            except csv.Error:
                delimiter = ","
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if header is None or not any(h.strip() for h in header):
                raise DataError(f"{path}: empty CSV (no header row); expected a header row of column names")
            n_cols = len(header)
            nonempty = [0] * n_cols
            counts: list[Counter] = [Counter() for _ in range(n_cols)]
            many = [False] * n_cols
            numeric = [True] * n_cols
            lows, highs = [np.inf] * n_cols, [-np.inf] * n_cols
            rows, ragged, first_ragged = 0, 0, None
            for row in reader:
                if not row:
                    continue
                rows += 1
                if len(row) != n_cols:
                    ragged += 1
                    first_ragged = first_ragged or reader.line_num
                for i, value in enumerate(row[:n_cols]):
                    value = value.strip()
                    if not value:
                        continue
                    nonempty[i] += 1
                    if value in counts[i] or len(counts[i]) < _CSV_TRACK:
                        counts[i][value] += 1
                    else:
                        many[i] = True
                    if numeric[i]:
                        try:
                            number = float(value)
                        except ValueError:
                            numeric[i] = False
                        else:
                            lows[i], highs[i] = min(lows[i], number), max(highs[i], number)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); expected a CSV file") from err
    except csv.Error as err:
        raise DataError(f"{path}: malformed CSV ({err}); expected a CSV file") from err
    names = [h.strip() or f"(unnamed column {i + 1})" for i, h in enumerate(header)]
    shown = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}.get(delimiter, repr(delimiter))
    lines = [f"{path} (CSV table, {rows} rows, {n_cols} columns, {shown}-separated)",
             "columns: " + ", ".join(names)]
    duplicated = [n for n, c in Counter(names).items() if c > 1]
    if duplicated:
        lines.append("duplicated column names: " + ", ".join(duplicated))
    if ragged:
        lines.append(f"rows with a different number of fields than the header: {ragged} (first at line "
                     f"{first_ragged})")
    for i, name in enumerate(names):
        parts = [f"{nonempty[i]} non-empty"]
        distinct = len(counts[i])
        if numeric[i] and nonempty[i]:
            parts.append(f"numeric {lows[i]:.6g} .. {highs[i]:.6g}")
        if many[i]:
            parts.append(f"more than {_CSV_TRACK} distinct values")
        elif distinct <= _CSV_FEW and nonempty[i]:
            common = ", ".join(f"{_short(v)} ({c})" for v, c in counts[i].most_common(5))
            parts.append(f"{distinct} distinct: {common}" + (", ..." if distinct > 5 else ""))
        elif nonempty[i]:
            parts.append(f"{distinct} distinct values")
        lines.append(f"  {name}: " + "; ".join(parts))
    return "\n".join(lines)


def _short(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")
