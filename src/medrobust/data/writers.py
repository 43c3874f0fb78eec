"""Write a :class:`Dataset` as a MedMNIST ``.npz`` or as a JSONL image(-text) manifest.

The inverses of :func:`medrobust.data.medmnist.load_medmnist` and :func:`medrobust.data.manifest.load_manifest`.
Both write atomically: each file goes to a temporary file in the same folder and is moved in place with
:func:`os.replace`, so a crash never leaves a half-written file under the final name.

Neither format stores the task or the label names (MedMNIST takes them from the subset named by the file
stem); pass ``task`` / ``label_names`` to the loader to restore them for other data sets.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Literal

import numpy as np

from medrobust.data.base import UNLABELED, Dataset, DataError
from medrobust.fileio import atomic_write

SPLITS = ("train", "val", "test")


def _uint8(images: np.ndarray) -> np.ndarray:
    """uint8 as is; float32 in [0, 1] quantised to ``round(255 x)``."""
    if images.dtype == np.uint8:
        return images
    return np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)


def _npz_labels(labels: np.ndarray) -> np.ndarray:
    """``[N]`` -> ``[N, 1]``; uint8 when every value fits (as MedMNIST), else int64 (keeps ``-1``)."""
    y = labels[:, None] if labels.ndim == 1 else labels
    fits = y.size == 0 or (y.min() >= 0 and y.max() <= 255)
    return y.astype(np.uint8 if fits else np.int64)


def write_npz(dataset: Dataset, path: str | Path) -> Path:
    """Write ``dataset`` in the MedMNIST ``.npz`` layout.

    Images are stored uint8: 2D gray as ``[N, H, W]``, 2D RGB as ``[N, H, W, 3]``, 3D as ``[N, D, H, W]``.
    Note: float32 images are quantised to ``round(255 x)``, so a float data set does not round-trip exactly.
    Labels are stored ``[N, 1]`` (single-label) or ``[N, L]`` (multilabel), uint8 when every value is in
    0..255, else int64 (so unlabeled ``-1`` survives). A multilabel task with one finding is indistinguishable
    from a single-label one: load it with ``task="multilabel"``. Name the file after a MedMNIST subset
    (``breastmnist.npz``) to get that subset's task and names back on loading.

    Args:
        dataset: the data set; 2D images need 1 or 3 channels, 3D images 1.
        path: the ``.npz`` file to write.

    Returns:
        The path written.

    Raises:
        DataError: when the images cannot be held by the MedMNIST layout.
    """
    c, dims = dataset.channels, dataset.spatial_dims
    if (dims == 2 and c not in (1, 3)) or (dims == 3 and c != 1):
        raise DataError(f"{path}: cannot write {dataset.name!r} images of shape {dataset.image_shape} in the "
                        "MedMNIST layout; expected 1 or 3 channels (2D) or 1 channel (3D)")
    arrays = {}
    for split in SPLITS:
        s = getattr(dataset, split)
        x = _uint8(s.images)
        arrays[f"{split}_images"] = x.transpose(0, 2, 3, 1) if c == 3 else x[:, 0]
        arrays[f"{split}_labels"] = _npz_labels(s.labels)
    return atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    arr = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")  # [H, W] -> L, [H, W, 3] -> RGB
    return buf.getvalue()


def _json_label(row: np.ndarray, where: str) -> int | list[int] | None:
    if row.ndim == 0:
        return None if row == UNLABELED else int(row)
    if (row == UNLABELED).all():
        return None
    if (row == UNLABELED).any():
        raise DataError(f"{where}: multilabel row {row.tolist()} is partly -1; expected 0/1 or a whole row of -1")
    return [int(v) for v in row]


def write_manifest(dataset: Dataset, out_dir: str | Path, image_format: Literal["png", "npy"] = "png") -> Path:
    """Write ``dataset`` as ``out_dir/manifest.jsonl`` plus ``out_dir/images/<split>_<index>.<ext>``.

    PNG is used for uint8 2D images with 1 or 3 channels. 3D volumes, float32 images and other channel
    counts are written as NPY (``[C, H, W]`` or ``[1, D, H, W]``, dtype kept) so that round trips are exact;
    ``image_format="npy"`` writes NPY for everything. Each line holds ``image`` (relative path), ``text``
    (when the data set has text), ``label`` (int, list of 0/1, or ``null`` for unlabeled), ``site`` (name)
    and ``split``.

    Args:
        dataset: the data set.
        out_dir: folder to write into (created when missing).
        image_format: ``"png"`` or ``"npy"``.

    Returns:
        The path of ``manifest.jsonl``.

    Raises:
        DataError: for an unknown image format or a partly unlabeled multilabel row.
    """
    if image_format not in ("png", "npy"):
        raise DataError(f"write_manifest: image_format {image_format!r}; expected 'png' or 'npy'")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    png = (image_format == "png" and dataset.spatial_dims == 2 and dataset.channels in (1, 3)
           and dataset.train.images.dtype == np.uint8)
    lines = []
    for split in SPLITS:
        s = getattr(dataset, split)
        for i in range(len(s)):
            rel = f"images/{split}_{i}.{'png' if png else 'npy'}"
            image = s.images[i]
            if png:
                data = _png_bytes(image)
                atomic_write(out_dir / rel, lambda f, data=data: f.write(data))
            else:
                atomic_write(out_dir / rel, lambda f, image=image: np.save(f, np.ascontiguousarray(image)))
            entry = {"image": rel}
            if s.texts is not None:
                entry["text"] = s.texts[i]
            if s.indications is not None:
                entry["indication"] = s.indications[i]
            entry["label"] = _json_label(s.labels[i], f"{dataset.name} {split} sample {i}")
            entry["site"] = dataset.site_names[int(s.sites[i])]
            entry["split"] = split
            lines.append(json.dumps(entry, ensure_ascii=False))
    text = ("\n".join(lines) + "\n").encode("utf-8")
    return atomic_write(out_dir / "manifest.jsonl", lambda f: f.write(text))
