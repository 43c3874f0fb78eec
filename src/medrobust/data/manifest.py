"""Image-text manifests (JSONL) in the style of IU X-ray, ROCO and MIMIC-CXR exports.

One JSON object per line::

    {"image": "images/0001.png", "text": "No acute findings.", "label": 1, "site": "A", "split": "train"}

Fields:
    image: path of the image, relative to the manifest's folder (absolute paths are allowed). Formats:
        PNG / JPEG (read with Pillow; mode ``L`` -> 1 channel, ``RGB`` -> 3 channels; ``1``/``LA`` become
        ``L``, ``P``/``RGBA``/``CMYK`` become ``RGB``; 16-bit gray becomes float32 ``value / 65535``) or NPY
        (uint8, or float in [0, 1] stored as float32; float16/float64 are cast to float32). NPY shapes:
        ``[H, W]`` or ``[C, H, W]`` for 2D images, ``[1, D, H, W]`` for 3D volumes. All images share one
        shape; if any image is float, all become float32 in [0, 1].
    text: the report; absent from every entry (no text) or present in every entry.
    indication: the indication / clinical history (the request, written before the image is read: the only
        text a downstream classifier sees); absent from every entry or present in every entry.
    label: class index (binary / multiclass / ordinal), a list of 0/1 findings (multilabel) or ``null``
        (unlabeled: ``-1``, the whole row for multilabel; such pairs still serve self-supervised
        pre-training).
    site: hospital or source name (default ``"all"``); site indices follow the sorted names.
    split: ``train``, ``val`` or ``test``; absent from every entry -> a seeded split stratified by
        ``(site, label)`` with ``split_fractions``.

Other keys are ignored. Errors name the manifest, the 0-based entry index (and the 1-based line), the value
and what was expected.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator

from medrobust.data.base import UNLABELED, Dataset, DataError, Split, Task, check_images
from medrobust.registry import register

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy")
_PIL_CONVERT = {"1": "L", "LA": "L", "P": "RGB", "PA": "RGB", "RGBA": "RGB", "CMYK": "RGB", "YCbCr": "RGB"}


class ManifestParams(BaseModel):
    """Parameters of the ``manifest`` data source.

    Attributes:
        path: the JSONL manifest.
        task: ``auto`` infers it (list labels -> multilabel; 2 classes -> binary; else multiclass).
        label_names: class or finding names; by default ``class_0``, ...
        split_fractions: train/val/test fractions, used only when the entries carry no ``split``.
        split_seed: seed of that split.
    """

    model_config = ConfigDict(extra="forbid")

    path: str
    task: Literal["auto", "binary", "multiclass", "multilabel", "ordinal"] = "auto"
    label_names: list[str] | None = None
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    split_seed: int = 0

    @field_validator("split_fractions")
    @classmethod
    def _fractions_sum_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(v) < 0 or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"split_fractions {v} must be non-negative and sum to 1")
        return v


def read_entries(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """The JSON objects of a JSONL file, each with its ``"<path> entry i (line n)"`` tag; blank lines skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest file not found; expected a JSONL file, one JSON object per line")
    entries = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path} entry {len(entries)} (line {lineno})"
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: bad JSON ({err.msg} at column {err.colno}); expected one JSON object "
                                "per line") from None
            if not isinstance(entry, dict):
                raise DataError(f"{where}: got {type(entry).__name__} {line.strip()[:60]!r}; expected a JSON object")
            entries.append((where, entry))
    if not entries:
        raise DataError(f"{path}: manifest has no entries; expected one JSON object per line")
    return entries


def image_path(manifest: Path, entry: dict[str, Any], where: str) -> Path:
    """The image file of an entry, resolved against the manifest's folder."""
    if "image" not in entry:
        raise DataError(f"{where}: missing key 'image'; expected the path of the image file")
    rel = entry["image"]
    if not isinstance(rel, str) or not rel:
        raise DataError(f"{where}: image {rel!r} is not a path; expected a non-empty string")
    p = Path(rel)
    return p if p.is_absolute() else manifest.parent / p


def read_image(file: Path, where: str) -> np.ndarray:
    """One image as ``[C, H, W]`` or ``[1, D, H, W]``, uint8 or float32 in [0, 1]."""
    suffix = file.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise DataError(f"{where}: image {file} has unsupported extension {suffix!r}; "
                        f"expected one of {', '.join(IMAGE_SUFFIXES)}")
    if not file.is_file():
        raise DataError(f"{where}: image file {file} not found")
    try:
        if suffix == ".npy":
            arr = _npy_image(np.load(file, allow_pickle=False), file, where)
        else:
            from PIL import Image

            with Image.open(file) as im:
                im = im.convert(_PIL_CONVERT[im.mode]) if im.mode in _PIL_CONVERT else im
                arr = _pil_image(im, file, where)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, SyntaxError) as err:
        raise DataError(f"{where}: cannot read image {file}: {err}") from err
    if arr.dtype == np.float32:
        check_images(arr[None], f"{where} ({file})")
    return arr


def _pil_image(im, file: Path, where: str) -> np.ndarray:
    if im.mode == "L":
        return np.asarray(im)[None]  # [1, H, W]
    if im.mode == "RGB":
        return np.asarray(im).transpose(2, 0, 1)  # [3, H, W]
    if im.mode.startswith("I"):  # 16-bit gray
        arr = np.asarray(im).astype(np.float32) / 65535.0
        return arr[None]
    raise DataError(f"{where}: image {file} has mode {im.mode!r}; expected 8-bit gray (L) or RGB")


def _npy_image(arr: np.ndarray, file: Path, where: str) -> np.ndarray:
    if arr.dtype in (np.float16, np.float64):
        arr = arr.astype(np.float32)
    if arr.dtype not in (np.uint8, np.float32):
        raise DataError(f"{where}: image {file} has dtype {arr.dtype}; expected uint8 or float32 in [0, 1]")
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3 or (arr.ndim == 4 and arr.shape[0] == 1):
        return arr
    raise DataError(f"{where}: image {file} has shape {arr.shape}; expected [H, W] or [C, H, W] (2D) "
                    "or [1, D, H, W] (3D)")


def _parse_labels(entries: list[tuple[str, dict]]) -> tuple[list, str | None]:
    """Each entry's label (``None`` = unlabeled) and the label type (``"int"``, ``"list"`` or ``None``)."""
    labels, kind, first = [], None, None
    for where, entry in entries:
        lab = entry.get("label")
        if lab is None:
            labels.append(None)
            continue
        if isinstance(lab, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in lab) and lab:
            this = "list"
        elif isinstance(lab, int) and not isinstance(lab, bool):
            this = "int"
        else:
            raise DataError(f"{where}: label {lab!r}; expected a class index (int), a non-empty list of 0/1 "
                            "findings, or null")
        if kind is None:
            kind, first = this, (where, lab)
        elif this != kind:
            raise DataError(f"{where}: label {lab!r} is {'a list' if this == 'list' else 'an integer'} but "
                            f"{first[0]} has label {first[1]!r}; expected every label to be of one type")
        elif this == "list" and len(lab) != len(first[1]):
            raise DataError(f"{where}: label {lab!r} has {len(lab)} findings but {first[0]} has "
                            f"{len(first[1])}; expected multilabel lists of one length")
        labels.append(lab)
    return labels, kind


def _resolve_task(params: ManifestParams, labels: list, kind: str | None, where: str) -> Task:
    task = params.task
    if kind == "list" and task not in ("auto", "multilabel"):
        raise DataError(f"{where}: labels are lists (multilabel) but task is {task!r}; expected class indices")
    if kind == "int" and task == "multilabel":
        raise DataError(f"{where}: labels are class indices but task is 'multilabel'; expected lists of 0/1")
    if kind == "list" or task == "multilabel":
        width = next((len(v) for v in labels if v is not None), len(params.label_names or ()) or 1)
        names = params.label_names or [f"class_{i}" for i in range(width)]
        if len(names) != width:
            raise DataError(f"{where}: labels have {width} findings but label_names has {len(names)}; "
                            "expected equal")
        task = "multilabel"
    else:
        top = max((v for v in labels if v is not None), default=0)
        n = 2 if task == "binary" else max(2, top + 1)
        names = params.label_names or [f"class_{i}" for i in range(n)]
        if task == "auto":
            task = "binary" if len(names) == 2 else "multiclass"
    try:
        return Task(task, tuple(names))
    except DataError as err:
        raise DataError(f"{where}: {err}") from None


def _label_array(labels: list, task: Task, entries: list[tuple[str, dict]]) -> np.ndarray:
    """int64 ``[N]`` or ``[N, L]`` with ``-1`` for unlabeled entries; out-of-range values raise."""
    n_out = task.n_outputs
    out = np.full((len(labels), n_out) if task.multilabel else len(labels), UNLABELED, dtype=np.int64)
    for i, lab in enumerate(labels):
        if lab is None:
            continue
        if task.multilabel:
            if any(v not in (0, 1) for v in lab):
                raise DataError(f"{entries[i][0]}: label {lab!r}; expected 0 or 1 for each finding")
        elif not 0 <= lab < n_out:
            raise DataError(f"{entries[i][0]}: label {lab!r} out of range; expected a class index 0..{n_out - 1} "
                            f"for {task.kind} ({n_out} classes), or null for unlabeled")
        out[i] = lab
    return out


def _all_or_none(entries: list[tuple[str, dict]], key: str, what: str) -> bool:
    """Whether every entry has ``key``; an error names the first entry lacking it when only some do."""
    has = [key in e for _, e in entries]
    if any(has) and not all(has):
        i = has.index(False)
        raise DataError(f"{entries[i][0]}: missing key {key!r} while other entries have it; expected {what} "
                        "in every entry or in none")
    return all(has)


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


@register("data", "manifest")
def load_manifest(params: ManifestParams | str | Path) -> Dataset:
    """Load a JSONL image(-text) manifest into a :class:`Dataset`.

    Args:
        params: :class:`ManifestParams`, or just the path of the manifest.

    Returns:
        The data set; ``texts`` is ``None`` when no entry has text.

    Raises:
        DataError: naming the manifest, the entry index, the bad value and what was expected.
    """
    if not isinstance(params, ManifestParams):
        params = ManifestParams(path=str(params))
    path = Path(params.path)
    entries = read_entries(path)
    images, first = [], None
    for where, entry in entries:
        file = image_path(path, entry, where)
        img = read_image(file, where)
        if first is None:
            first = (where, file, img.shape)
        elif img.shape != first[2]:
            raise DataError(f"{where}: image {file} has shape {img.shape} but the first image ({first[0]}, "
                            f"{first[1]}) has shape {first[2]}; expected one shape for all images")
        images.append(img)
    if any(img.dtype == np.float32 for img in images):
        images = [img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img for img in images]
    labels, kind = _parse_labels(entries)
    task = _resolve_task(params, labels, kind, str(path))
    y = _label_array(labels, task, entries)
    texts, indications = _strings(entries, "text", "a report 'text'"), _strings(entries, "indication", "an 'indication'")
    site_of = []
    for where, entry in entries:
        site = entry.get("site", "all")
        if not isinstance(site, str) or not site:
            raise DataError(f"{where}: site {site!r}; expected a non-empty string")
        site_of.append(site)
    site_names = tuple(sorted(set(site_of)))
    sites = np.searchsorted(np.asarray(site_names), np.asarray(site_of)).astype(np.int64)
    if _all_or_none(entries, "split", "a 'split'"):
        for where, entry in entries:
            if entry["split"] not in SPLITS:
                raise DataError(f"{where}: split {entry['split']!r}; expected one of {', '.join(SPLITS)}")
        split_id = np.array([SPLITS.index(e["split"]) for _, e in entries], dtype=np.int64)
    else:
        keys = [f"{s}|{lab}" for s, lab in zip(site_of, labels)]
        split_id = stratified_split(keys, params.split_fractions, params.split_seed)
    shape, dtype = images[0].shape, images[0].dtype
    splits = {}
    for k, name in enumerate(SPLITS):
        idx = np.flatnonzero(split_id == k)
        x = np.stack([images[i] for i in idx]) if len(idx) else np.empty((0, *shape), dtype=dtype)
        splits[name] = Split(images=x, labels=y[idx], sites=sites[idx],
                             texts=None if texts is None else [texts[i] for i in idx],
                             indications=None if indications is None else [indications[i] for i in idx])
    name = path.parent.name if path.stem == "manifest" and path.parent.name else path.stem
    return Dataset(name=name, task=task, site_names=site_names, source=str(path), **splits)


def _strings(entries: list, key: str, what: str) -> list[str] | None:
    """Every entry's string ``key`` (None when no entry has it; an error when only some have it or one is
    not a string)."""
    if not _all_or_none(entries, key, what):
        return None
    for where, entry in entries:
        if not isinstance(entry[key], str):
            raise DataError(f"{where}: {key} {entry[key]!r}; expected a string")
    return [entry[key] for _, entry in entries]


load_manifest.Params = ManifestParams  # type: ignore[attr-defined]
