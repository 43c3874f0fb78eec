"""MedMNIST v2 / MedMNIST+ ``.npz`` files read from local disk.

The official files (Yang et al., "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical
image classification", Scientific Data 10, 41, 2023) hold six uint8 arrays: ``train_images``,
``train_labels``, ``val_images``, ``val_labels``, ``test_images``, ``test_labels``. Image layouts:
2D gray ``[N, H, W]``, 2D RGB ``[N, H, W, 3]``, 3D ``[N, D, H, W]``; they become ``[N, 1, H, W]``,
``[N, 3, H, W]`` and ``[N, 1, D, H, W]``. Labels ``[N, 1]`` (single-label) become int64 ``[N]``; ``[N, L]``
(multi-label, ChestMNIST has 14) become int64 ``[N, L]``. Integer label files written by
:func:`medrobust.data.writers.write_npz` may also hold ``-1`` (unlabeled).

Written by hand: the ``medmnist`` package needs torchvision, which cannot be installed here.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from medrobust.data.base import UNLABELED, Dataset, DataError, Split, Task, TaskKind
from medrobust.registry import register

SPLITS = ("train", "val", "test")
KEYS = tuple(f"{s}_{k}" for s in SPLITS for k in ("images", "labels"))


@dataclass(frozen=True)
class SubsetInfo:
    """One MedMNIST subset as described by the official ``INFO`` table (medmnist/info.py).

    Attributes:
        task: task kind in this project's words.
        label_names: class names (single-label) or finding names (multilabel).
        channels: 1 (gray) or 3 (RGB).
        spatial_dims: 2 or 3.
        md5: MD5 of the official 28-px file (``<name>.npz``), or ``None`` when not known.
    """

    task: TaskKind
    label_names: tuple[str, ...]
    channels: int
    spatial_dims: int
    md5: str | None


_ORGANS = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left",
           "lung-right", "pancreas", "spleen")

# Copied from the official MedMNIST INFO table (v2.1.0 / v3.0; the 28-px MD5s are the same in both).
KNOWN_SUBSETS: dict[str, SubsetInfo] = {
    "pathmnist": SubsetInfo("multiclass", (
        "adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa",
        "cancer-associated stroma", "colorectal adenocarcinoma epithelium"), 3, 2, "a8b06965200029087d5bd730944a56c1"),
    "chestmnist": SubsetInfo("multilabel", (
        "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia", "pneumothorax",
        "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"), 1, 2,
        "02c8a6516a18b556561a56cbdd36c4a8"),
    "dermamnist": SubsetInfo("multiclass", (
        "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma", "benign keratosis-like lesions",
        "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions"), 3, 2,
        "0744692d530f8e62ec473284d019b0c7"),
    "octmnist": SubsetInfo("multiclass", (
        "choroidal neovascularization", "diabetic macular edema", "drusen", "normal"), 1, 2,
        "c68d92d5b585d8d81f7112f81e2d0842"),
    "pneumoniamnist": SubsetInfo("binary", ("normal", "pneumonia"), 1, 2, "28209eda62fecd6e6a2d98b1501bb15f"),
    "retinamnist": SubsetInfo("ordinal", ("0", "1", "2", "3", "4"), 3, 2, "bd4c0672f1bba3e3a89f0e4e876791e4"),
    "breastmnist": SubsetInfo("binary", ("malignant", "normal, benign"), 1, 2, "750601b1f35ba3300ea97c75c52ff8f6"),
    "bloodmnist": SubsetInfo("multiclass", (
        "basophil", "eosinophil", "erythroblast",
        "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte", "monocyte",
        "neutrophil", "platelet"), 3, 2, "7053d0359d879ad8a5505303e11de1dc"),
    "tissuemnist": SubsetInfo("multiclass", (
        "Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule", "Glomerular endothelial cells",
        "Interstitial endothelial cells", "Leukocytes", "Podocytes", "Proximal Tubule Segments",
        "Thick Ascending Limb"), 1, 2, "ebe78ee8b05294063de985d821c1c34b"),
    "organamnist": SubsetInfo("multiclass", _ORGANS, 1, 2, "866b832ed4eeba67bfb9edee1d5544e6"),
    "organcmnist": SubsetInfo("multiclass", _ORGANS, 1, 2, "0afa5834fb105f7705a7d93372119a21"),
    "organsmnist": SubsetInfo("multiclass", _ORGANS, 1, 2, "e5c39f1af030238290b9557d9503af9d"),
    "organmnist3d": SubsetInfo("multiclass", (
        "liver", "kidney-right", "kidney-left", "femur-right", "femur-left", "bladder", "heart", "lung-right",
        "lung-left", "spleen", "pancreas"), 1, 3, "21f0a239e7f502e6eca33c3fc453c0b6"),
    "nodulemnist3d": SubsetInfo("binary", ("benign", "malignant"), 1, 3, "8755a7e9e05a4d9ce80a24c3e7a256f3"),
    "adrenalmnist3d": SubsetInfo("binary", ("normal", "hyperplasia"), 1, 3, "bbd3c5a5576322bc4cdfea780653b1ce"),
    "fracturemnist3d": SubsetInfo("multiclass", (
        "buckle rib fracture", "nondisplaced rib fracture", "displaced rib fracture"), 1, 3,
        "6aa7b0143a6b42da40027a9dda61302f"),
    "vesselmnist3d": SubsetInfo("binary", ("vessel", "aneurysm"), 1, 3, "2ba5b80617d705141f3f85627108fce8"),
    "synapsemnist3d": SubsetInfo("binary", ("inhibitory synapse", "excitatory synapse"), 1, 3,
                                 "1235b78a3cd6280881dd7850a78eadb6"),
}

_STEM = re.compile(r"(?P<name>.+?)(?:_(?P<size>28|32|64|128|224))?")


def recognise(path: str | Path) -> tuple[str | None, int | None]:
    """The known subset and image size named by a file stem (``breastmnist_64.npz`` -> ``("breastmnist", 64)``).

    Returns ``(None, None)`` for a stem that names no known subset; the size is ``None`` when absent.
    """
    m = _STEM.fullmatch(Path(path).stem.lower())
    if m is None or m["name"] not in KNOWN_SUBSETS:
        return None, None
    return m["name"], int(m["size"]) if m["size"] else None


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, read once; a corrupt, truncated or missing file raises :class:`DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected a MedMNIST .npz file")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: holds a single .npy array, not an .npz archive with keys {', '.join(KEYS)}")
        with archive:
            return {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: not a valid .npz archive (corrupt or truncated?): {err}") from err


class MedMNISTParams(BaseModel):
    """Parameters of the ``medmnist`` data source.

    Attributes:
        path: the ``.npz`` file; the stem names the subset (``breastmnist``, ``breastmnist_224``, ...).
        task: ``auto`` takes the task of a known subset, or infers it (labels with >1 column -> multilabel,
            2 classes -> binary, else multiclass).
        label_names: overrides the names of the known subset (or ``class_0``, ... for unknown ones).
    """

    model_config = ConfigDict(extra="forbid")

    path: str
    task: Literal["auto", "binary", "multiclass", "multilabel", "ordinal"] = "auto"
    label_names: list[str] | None = None


def _images(arr: np.ndarray, where: str, info: SubsetInfo | None) -> np.ndarray:
    """``[N, H, W]`` / ``[N, H, W, 3]`` / ``[N, D, H, W]`` uint8 -> ``[N, C, *spatial]``."""
    if arr.dtype != np.uint8:
        raise DataError(f"{where}: images have dtype {arr.dtype}; expected uint8 (0..255) as in MedMNIST")
    if arr.ndim == 3:
        return arr[:, None]  # [N, 1, H, W], a view
    if arr.ndim == 4:
        volume = info.spatial_dims == 3 if info is not None else arr.shape[-1] != 3
        if volume:
            return arr[:, None]  # [N, 1, D, H, W]
        if arr.shape[-1] != 3:
            raise DataError(f"{where}: images have shape {arr.shape}; expected RGB [N, H, W, 3]")
        return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))  # [N, 3, H, W]
    raise DataError(f"{where}: images have {arr.ndim} dimensions, shape {arr.shape}; expected [N, H, W] (gray), "
                    "[N, H, W, 3] (RGB) or [N, D, H, W] (3D)")


def _labels(arr: np.ndarray, n: int, where: str, split: str) -> np.ndarray:
    """``[N]`` / ``[N, 1]`` / ``[N, L]`` integer labels -> int64 ``[N]`` or ``[N, L]``."""
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{where}: labels have dtype {arr.dtype}; expected integers (uint8 in MedMNIST)")
    if arr.ndim not in (1, 2):
        raise DataError(f"{where}: labels have shape {arr.shape}; expected [N, 1] or [N, L]")
    if len(arr) != n:
        raise DataError(f"{where}: {split} split has {len(arr)} labels but {n} images; "
                        "expected one label row per image")
    return arr.astype(np.int64, copy=False)


def _resolve_task(params: MedMNISTParams, labels: dict[str, np.ndarray], info: SubsetInfo | None,
                  subset: str | None, where: str) -> Task:
    """The task from the params, the known subset or the labels themselves."""
    columns = {v.shape[1] if v.ndim == 2 else 1 for v in labels.values()}
    if len(columns) > 1:
        raise DataError(f"{where}: splits have different label widths {sorted(columns)}; expected one")
    width = columns.pop()
    kind = params.task
    if kind == "auto":
        kind = info.task if info is not None else ("multilabel" if width > 1 else "")
    if kind != "multilabel" and width > 1:
        raise DataError(f"{where}: labels have {width} columns (multilabel) but task is {kind!r}; "
                        "expected [N, 1] labels for a single-label task")
    if kind == "multilabel":
        names = params.label_names or (info.label_names if info is not None and info.task == "multilabel"
                                       else tuple(f"class_{i}" for i in range(width)))
        if len(names) != width:
            what = f"subset {subset!r} has" if params.label_names is None else "label_names has"
            raise DataError(f"{where}: labels have {width} columns but {what} {len(names)} names; expected equal")
    else:
        top = max((int(v.max()) for v in labels.values() if v.size), default=0)
        if params.label_names is not None:
            names = params.label_names
        elif info is not None and info.task != "multilabel":
            names = info.label_names
        else:
            names = tuple(f"class_{i}" for i in range(2 if kind == "binary" else max(2, top + 1)))
        kind = kind or ("binary" if len(names) == 2 else "multiclass")
    try:
        return Task(kind, tuple(names))
    except DataError as err:
        raise DataError(f"{where}: {err}") from None


def _check_values(labels: np.ndarray, task: Task, where: str) -> None:
    """Reject label values outside the task's range (``-1`` marks unlabeled samples)."""
    if task.multilabel:
        unlabeled = (labels == UNLABELED).all(axis=1)
        bad = ~np.isin(labels, (0, 1)) & ~unlabeled[:, None]
        expected = "0 or 1 per finding (or a whole row of -1 for unlabeled)"
    else:
        bad = (labels < UNLABELED) | (labels >= task.n_outputs)
        expected = f"class indices 0..{task.n_outputs - 1} for {task.kind} (or -1 for unlabeled)"
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        raise DataError(f"{where}: sample {i} has label {labels[i].tolist()}; expected {expected}")


@register("data", "medmnist")
def load_medmnist(params: MedMNISTParams | str | Path) -> Dataset:
    """Load a MedMNIST v2 / MedMNIST+ ``.npz`` (2D or 3D, any subset, any size) into a :class:`Dataset`.

    Args:
        params: :class:`MedMNISTParams`, or just the path of the file.

    Returns:
        The data set, with images uint8 ``[N, C, *spatial]``, one site (``"all"``) and no texts.

    Raises:
        DataError: missing or corrupt file, missing keys, wrong dtype or shape, label count or value errors,
            splits of different image shapes; the message names the file, the key and what was expected.
    """
    if not isinstance(params, MedMNISTParams):
        params = MedMNISTParams(path=str(params))
    path = Path(params.path)
    arrays = read_npz(path)
    missing = [k for k in KEYS if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing keys {', '.join(missing)}; a MedMNIST .npz holds {', '.join(KEYS)} "
                        f"(found {', '.join(sorted(arrays)) or 'none'})")
    subset, _ = recognise(path)
    info = KNOWN_SUBSETS.get(subset) if subset else None
    images, labels = {}, {}
    for split in SPLITS:
        images[split] = _images(arrays.pop(f"{split}_images"), f"{path} key '{split}_images'", info)
        labels[split] = _labels(arrays.pop(f"{split}_labels"), len(images[split]), f"{path} key '{split}_labels'",
                                split)
    shapes = {s: tuple(images[s].shape[1:]) for s in SPLITS if len(images[s])}
    if len(set(shapes.values())) > 1:
        raise DataError(f"{path}: splits have different image shapes {shapes}; expected one shape for all splits")
    task = _resolve_task(params, labels, info, subset, str(path))
    splits = {}
    for split in SPLITS:
        y = labels[split]
        if not task.multilabel and y.ndim == 2:
            y = y[:, 0]
        _check_values(y, task, f"{path} key '{split}_labels'")
        splits[split] = Split(images=images[split], labels=np.ascontiguousarray(y),
                              sites=np.zeros(len(y), dtype=np.int64))
    return Dataset(name=path.stem, task=task, site_names=("all",), source=str(path), **splits)


load_medmnist.Params = MedMNISTParams  # type: ignore[attr-defined]
