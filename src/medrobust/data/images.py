"""Reading one image file of any common medical format, and fitting it to the study's size and channels.

Formats (by suffix, case-insensitive):
    PNG, JPEG, BMP, TIFF (Pillow): modes ``L``/``1``/``LA`` -> 1 channel; ``RGB``/``P``/``PA``/``RGBA``/``CMYK``/
        ``YCbCr`` -> 3 channels (a palette is expanded; transparent pixels are composited onto black); 16-bit gray
        (``I;16*``, ``I``) -> float32 by the 0.5-99.5th percentile rule (:func:`percentile_unit`: such files often
        use only 10-12 of their bits, so no fixed scale fits); 32-bit float (``F``) -> float32, min-max scaled when outside [0, 1].
    NPY: uint8, or float in [0, 1] (float16/float64 cast to float32); ``[H, W]`` / ``[C, H, W]`` (2D) or
        ``[1, D, H, W]`` (3D).
    DICOM (``.dcm``) and NIfTI (``.nii``, ``.nii.gz``): see :mod:`medrobust.data.volumes` (rescale, window or
        percentile rule, MONOCHROME1, frames); float32 in [0, 1].

Fitting (:func:`fit_image`), the one documented resizing rule of every data source:
    size: the output's spatial shape — a square side for 2D, ``[D, H, W]`` (or one side for a cube) for 3D.
    resize ``pad`` (default): scale by ``min_i(target_i / n_i)`` (the whole image fits; aspect kept) and pad the
        short axes equally on both sides with 0 (black); ``crop``: scale by ``max_i(target_i / n_i)`` (the image
        covers the target) and centre-crop the long axes. Interpolation: bilinear with antialiasing (2D),
        trilinear (3D). uint8 stays uint8 (rounded); float stays float32 in [0, 1].
    channels: 1 (gray; RGB becomes ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B``) or 3 (gray is repeated).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np

from medrobust.data.base import DataError, check_images

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
IMAGE_SUFFIXES = PIL_SUFFIXES + (".npy", ".dcm", ".dicom", ".nii", ".nii.gz")
RESIZE_MODES = ("pad", "crop")
_PIL_CONVERT = {"1": "L", "LA": "L", "La": "L", "P": "RGB", "PA": "RGB", "RGBA": "RGB", "RGBa": "RGB",
                "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def suffix_of(path: str | Path) -> str:
    """The lower-case suffix, ``.nii.gz`` counted as one."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def short_path(path: str | Path, limit: int = 160) -> str:
    """``repr`` of a path, shortened in the middle when longer than ``limit`` (a corrupt cell can be megabytes)."""
    text = str(path)
    return repr(text) if len(text) <= limit else repr(text[: limit - 40]) + " ... " + repr(text[-30:])


def unusable_path(path: str | Path) -> str | None:
    """Why ``path`` cannot name a file on this system (a NUL byte, a name too long), or None when it can."""
    try:
        os.stat(path)
    except (ValueError, TypeError) as err:  # embedded NUL byte, or not encodable
        return str(err)
    except OSError as err:
        if err.errno == errno.ENAMETOOLONG:
            return err.strerror or "file name too long"
    return None


def is_dicom(path: Path) -> bool:
    """Whether ``path`` is a file with the DICOM marker ``DICM`` at byte 128 (extension-less DICOM files)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def read_image(file: Path, where: str, *, draft: int | None = None, window: tuple[float, float] | None = None,
               frame: int = 0) -> np.ndarray:
    """One image as ``[C, H, W]`` or ``[C, D, H, W]``, uint8 or float32 in [0, 1] (module docstring).

    Args:
        file: the image file; a folder is read as a DICOM series (one slice per file).
        where: the row or entry it comes from, for messages.
        draft: JPEG only: let the decoder downscale by a power of two while keeping both sides >= ``draft``
            (a speed-up for large photographs that are resized afterwards; the final resize is the same).
        window: DICOM intensity window ``(center, width)`` in the stored units after rescale (e.g. HU).
        frame: NIfTI 4D: the frame (volume) along the fourth axis.

    Raises:
        DataError: naming ``where`` and the file: not found, unsupported extension, unreadable or truncated.
    """
    file = Path(file)
    suffix = suffix_of(file)
    reason = unusable_path(file)
    if reason is not None:
        raise DataError(f"{where}: image path {short_path(file)} cannot name a file ({reason}); expected the path of "
                        "an image file")
    if file.is_dir():
        from medrobust.data.volumes import read_dicom_series

        return read_dicom_series(file, where, window=window)
    if suffix not in IMAGE_SUFFIXES and is_dicom(file):  # DICOM files often have no extension
        suffix = ".dcm"
    if suffix not in IMAGE_SUFFIXES:
        raise DataError(f"{where}: image {file} has unsupported extension {suffix or '(none)'!r}; "
                        f"expected one of {', '.join(IMAGE_SUFFIXES)} or a DICOM series folder")
    if not file.is_file():
        raise DataError(f"{where}: image file {file} not found")
    if suffix in (".dcm", ".dicom"):
        from medrobust.data.volumes import read_dicom

        return read_dicom(file, where, window=window)
    if suffix in (".nii", ".nii.gz"):
        from medrobust.data.volumes import read_nifti

        return read_nifti(file, where, frame=frame)
    try:
        if suffix == ".npy":
            arr = _npy_image(_load_npy(file, where), file, where)
        else:
            arr = _pil_read(file, where, draft)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, SyntaxError, MemoryError) as err:  # Pillow's truncated / garbage files
        raise DataError(f"{where}: cannot read image {file}: {err}; expected a valid {suffix} file") from None
    except Exception as err:  # Pillow's DecompressionBombError (not an OSError): a gigapixel slide
        if type(err).__name__ != "DecompressionBombError":
            raise
        raise DataError(f"{where}: image {file} is too large to decode safely ({err}); expected an image of at most "
                        "about 179 million pixels (downsample it first)") from None
    if arr.dtype == np.float32:
        check_images(arr[None], f"{where} ({file})")
    return arr


def _pil_read(file: Path, where: str, draft: int | None) -> np.ndarray:
    from PIL import Image

    with Image.open(file) as im:
        if draft and im.format == "JPEG":
            im.draft(im.mode if im.mode in ("L", "RGB") else "RGB", (draft, draft))
        im.load()  # decode now: a truncated file fails here, inside the caller's try
        if "A" in im.mode or im.mode in ("P", "PA") and "transparency" in im.info:  # transparent -> black
            im = _on_black(im)
        if im.mode in _PIL_CONVERT:
            im = im.convert(_PIL_CONVERT[im.mode])
        if im.mode == "L":
            return np.asarray(im)[None]  # [1, H, W]
        if im.mode == "RGB":
            return np.ascontiguousarray(np.asarray(im).transpose(2, 0, 1))  # [3, H, W]
        if im.mode.startswith("I"):  # 16-bit (or 32-bit integer) gray: often 10-12 bits used, so no fixed scale
            return percentile_unit(np.asarray(im).astype(np.float32))[None]
        if im.mode == "F":
            arr = np.asarray(im).astype(np.float32)
            if not np.isfinite(arr).all():
                raise DataError(f"{where}: image {file} has NaN or infinite pixels; expected finite values")
            lo, hi = float(arr.min()), float(arr.max())
            if lo < 0.0 or hi > 1.0:
                arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
            return arr[None]
    raise DataError(f"{where}: image {file} has mode {im.mode!r}; expected gray, RGB, palette or 16-bit gray")


def _on_black(im):
    """A transparent image composited onto black (the padding colour), so hidden colour never shows."""
    from PIL import Image

    rgba = im.convert("RGBA")
    out = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    return out.convert("L") if im.mode in ("LA", "La") else out


def percentile_unit(arr: np.ndarray, lo: float = 0.5, hi: float = 99.5) -> np.ndarray:
    """float32 in [0, 1]: ``(x - p_lo) / (p_hi - p_lo)`` clipped, percentiles of the finite values (min-max when
    they coincide; zeros for a constant image) — the rule for raw intensities without a known window."""
    finite = arr[np.isfinite(arr)]
    if not finite.size:
        return np.zeros(arr.shape, np.float32)
    a, b = np.percentile(finite, [lo, hi])
    if b <= a:
        a, b = float(finite.min()), float(finite.max())
    if b <= a:
        return np.zeros(arr.shape, np.float32)
    return np.clip((arr - a) / (b - a), 0.0, 1.0).astype(np.float32)


def _load_npy(file: Path, where: str) -> np.ndarray:
    """``np.load`` of one ``.npy`` array; a damaged file is a one-line DataError."""
    try:
        arr = np.load(file, allow_pickle=False)
    except Exception as err:  # numpy's header parser raises many kinds (SyntaxError, tokenize.TokenError, ...)
        detail = (str(err).strip().splitlines() or ["no details"])[0]
        raise DataError(f"{where}: cannot read image {file} ({type(err).__name__}: {detail}); expected a valid .npy "
                        "file (one array written by numpy.save)") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive (np.load returns its NpzFile)
        arr.close()
        raise DataError(f"{where}: image {file} is an .npz archive, not one .npy array; expected a .npy file")
    return arr


def _npy_image(arr: np.ndarray, file: Path, where: str) -> np.ndarray:
    if arr.dtype in (np.float16, np.float64):
        arr = arr.astype(np.float32)
    if arr.dtype not in (np.uint8, np.float32):
        raise DataError(f"{where}: image {file} has dtype {arr.dtype}; expected uint8 or float32 in [0, 1]")
    if arr.ndim in (2, 3, 4) and arr.size == 0:
        raise DataError(f"{where}: image {file} has shape {arr.shape}, no pixels; expected every axis of length >= 1")
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3 or (arr.ndim == 4 and arr.shape[0] == 1):
        return arr
    raise DataError(f"{where}: image {file} has shape {arr.shape}; expected [H, W] or [C, H, W] (2D) "
                    "or [1, D, H, W] (3D)")


def target_shape(size: int | list[int] | tuple[int, ...], spatial_dims: int, where: str = "data.image_size"
                 ) -> tuple[int, ...]:
    """``size`` as a spatial shape of ``spatial_dims`` axes (one side -> a square / cube)."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        return (int(size),) * spatial_dims
    size = tuple(int(s) for s in size)
    if spatial_dims == 3 and len(size) == 3:
        return size
    if spatial_dims == 2 and len(size) == 2:
        return size
    raise DataError(f"{where}: {list(size)} does not fit {spatial_dims}D images; expected one side or "
                    f"{'[D, H, W]' if spatial_dims == 3 else '[H, W]'}")


def fit_image(img: np.ndarray, size: tuple[int, ...] | None, channels: int | None, resize: str = "pad"
              ) -> np.ndarray:
    """``img`` ``[C, *spatial]`` resized to ``size`` (None: unchanged) with ``channels`` (None: unchanged), by
    the module's rule; dtype kept (uint8 rounded, float32 clipped to [0, 1])."""
    if resize not in RESIZE_MODES:
        raise DataError(f"data.resize {resize!r}; expected one of {', '.join(RESIZE_MODES)}")
    out = img
    if size is not None and tuple(img.shape[1:]) != tuple(size):
        out = _resize(img, tuple(size), resize)
    if channels is not None and out.shape[0] != channels:
        out = _channels(out, channels)
    return out


def _resize(img: np.ndarray, size: tuple[int, ...], mode: str) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    spatial = img.shape[1:]
    if len(size) != len(spatial):
        raise DataError(f"cannot resize a {len(spatial)}D image {tuple(img.shape)} to {len(size)}D size {size}")
    ratios = [t / n for t, n in zip(size, spatial)]
    scale = min(ratios) if mode == "pad" else max(ratios)
    scaled = tuple(max(1, round(n * scale)) for n in spatial)
    if mode == "pad":
        scaled = tuple(min(s, t) for s, t in zip(scaled, size))
    else:
        scaled = tuple(max(s, t) for s, t in zip(scaled, size))
    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None]  # [1, C, *spatial]
    if scaled != tuple(spatial):
        if len(spatial) == 2:
            x = F.interpolate(x, size=scaled, mode="bilinear", align_corners=False, antialias=True)
        else:
            x = F.interpolate(x, size=scaled, mode="trilinear", align_corners=False)
    out = torch.zeros((1, img.shape[0], *size), dtype=x.dtype)
    src, dst = [], []
    for s, t in zip(scaled, size):
        if s <= t:  # pad this axis
            lo = (t - s) // 2
            src.append(slice(0, s))
            dst.append(slice(lo, lo + s))
        else:  # crop this axis
            lo = (s - t) // 2
            src.append(slice(lo, lo + t))
            dst.append(slice(0, t))
    out[(slice(None), slice(None), *dst)] = x[(slice(None), slice(None), *src)]
    arr = out[0].numpy()
    if img.dtype == np.uint8:
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return np.clip(arr, 0.0, 1.0).astype(np.float32)


def _channels(img: np.ndarray, channels: int) -> np.ndarray:
    if channels == 3 and img.shape[0] == 1:
        return np.repeat(img, 3, axis=0)
    if channels == 1 and img.shape[0] == 3:
        gray = np.tensordot(LUMA, img.astype(np.float32), axes=1)[None]
        return np.clip(np.rint(gray), 0, 255).astype(np.uint8) if img.dtype == np.uint8 else gray.astype(np.float32)
    raise DataError(f"cannot turn a {img.shape[0]}-channel image into {channels} channels; expected 1 or 3 channels")


def is_gray(img: np.ndarray, tolerance: int = 2) -> bool:
    """Whether an image is gray: one channel, or three that differ by at most ``tolerance`` levels (of 255)."""
    if img.shape[0] == 1:
        return True
    x = img.astype(np.float32) * (1.0 if img.dtype == np.uint8 else 255.0)
    return float(np.abs(x - x.mean(axis=0, keepdims=True)).max()) <= tolerance
