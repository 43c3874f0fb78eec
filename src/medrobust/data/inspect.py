"""Human-readable description of a data file: what it holds and whether it will load.

:func:`describe` reads a MedMNIST ``.npz`` (keys, shapes, dtypes, split sizes, recognised subset and task,
label distribution, MD5 check against the official table) or a JSONL manifest (entries, splits, sites,
label distribution, text, image shape and an example report) without building the whole data set.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np

from medrobust.data.base import UNLABELED, DataError
from medrobust.data.manifest import image_path, read_entries, read_image
from medrobust.data.medmnist import KNOWN_SUBSETS, SPLITS, read_npz, recognise

SUPPORTED = (".npz", ".jsonl", ".json")
_MD5_LIMIT = 512 * 2**20  # hash files up to this size only


def describe(path: str | Path) -> str:
    """A multi-line description of a ``.npz`` (MedMNIST), ``.jsonl`` (manifest) or ``.json`` (VQA-RAD layout) file.

    Raises:
        DataError: for a missing file, an unsupported extension (naming the supported ones) or an unreadable
            file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise DataError(f"{path}: cannot describe {suffix or 'extension-less'!r} files; supported: .npz "
                        "(MedMNIST arrays), .jsonl (image-text manifest) and .json (VQA questions, VQA-RAD layout)")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return {".npz": _describe_npz, ".jsonl": _describe_manifest, ".json": _describe_vqa}[suffix](path)


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
        if info.md5 and size in (None, 28) and path.stat().st_size <= _MD5_LIMIT:
            md5 = _md5(path)
            verdict = "matches the official file" if md5 == info.md5 else f"differs from the official {info.md5}"
            lines.append(f"md5: {md5} ({verdict})")
    names = info.label_names if info is not None else None
    for split in SPLITS:
        x, y = arrays.get(f"{split}_images"), arrays.get(f"{split}_labels")
        if x is None or y is None:
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
        counts = Counter(lab for lab in labels if lab is not None)
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
