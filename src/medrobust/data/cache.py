"""On-disk cache of decoded, resized images, so a second study on the same manifest does not decode again.

The key hashes everything the arrays depend on: the manifest's bytes, the reading parameters (size, channels,
resize rule, window, frame, image folder) and each image file's path, size and modification time; any change
gives a new key (a stale entry is never read). Location: ``data.cache_dir``, else ``$MEDROBUST_CACHE``, else
``$XDG_CACHE_HOME/medrobust`` (``~/.cache/medrobust``). Entries are ``.npz`` files written atomically; an unreadable
entry is ignored (and rewritten). Failures are never cached: a
data set with unreadable files is decoded again next time (a decoder installed since may read them). The key
also holds the versions of medrobust, Pillow, pydicom, nibabel, numpy and torch. A file rewritten with the same
size and modification time (``cp -p``) is not noticed: clear the cache folder after such a copy.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from medrobust.fileio import atomic_write

VERSION = 1  # bump when the decoding or resizing rule changes


def cache_root(configured: str | None = None) -> Path:
    if configured:
        return Path(configured)
    if os.environ.get("MEDROBUST_CACHE"):
        return Path(os.environ["MEDROBUST_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "medrobust"


def key_of(manifest: Path, params: dict[str, Any], files: list[Path]) -> str:
    """sha256 over the manifest bytes, ``params`` (JSON) and every file's path, size and mtime."""
    h = hashlib.sha256(f"v{VERSION}|{_versions()}".encode())
    h.update(manifest.read_bytes() if manifest.is_file() else str(manifest).encode())  # a folder source: its path
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    for f in files:
        for part in (sorted(p for p in f.rglob("*") if p.is_file()) if f.is_dir() else [f]):  # a series folder
            try:
                st = part.stat()
                h.update(f"{part}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{part}\0missing\n".encode())
    return h.hexdigest()


def _versions() -> str:
    """The versions of the code that decodes (a new release may decode or resize differently)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("medrobust", "pillow", "pydicom", "nibabel", "numpy", "torch"):
        try:
            out.append(f"{pkg}={version(pkg)}")
        except PackageNotFoundError:
            out.append(f"{pkg}=-")
    return ",".join(out)


def load(root: Path, key: str) -> dict[str, np.ndarray] | None:
    path = root / "images" / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception:  # any damage (zip, zlib, numpy's header parser, a header claiming a huge array): a miss
        return None


def save(root: Path, key: str, arrays: dict[str, np.ndarray]) -> Path | None:
    """Write the entry atomically; returns its path, or None when the cache folder cannot be written."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        return atomic_write(root / "images" / f"{key}.npz", lambda f: f.write(buf.getvalue()))
    except OSError:
        return None
