"""DICOM and NIfTI readers: one image or volume as float32 in ``[0, 1]``, ready for ``[C, *spatial]`` batches.

Shapes (the channel axis first, as everywhere in the project):

* DICOM, grayscale: one frame -> ``[1, H, W]``; a multi-frame file (e.g. enhanced CT / MR) -> ``[1, D, H, W]``
  with the frames as depth, in file order (frames are not re-sorted by position).
* DICOM, colour (``RGB``, ``YBR_*``, ``PALETTE COLOR``, e.g. ultrasound) -> ``[3, H, W]`` in RGB; of a
  multi-frame colour file (a cine loop) only the first frame is read.
* A folder of single-frame DICOM slices of one series (:func:`read_dicom_series`) -> ``[1, D, H, W]``.
* NIfTI (:func:`read_nifti`) -> ``[1, D, H, W]``; a 2D image (third voxel axis of length 1) -> ``[1, H, W]``;
  of a 4D series one time point (``frame``).

Intensity rules.

DICOM grayscale: the stored values go through the Modality LUT (``ModalityLUTSequence``) or the rescale
``value * RescaleSlope + RescaleIntercept`` (CT: Hounsfield units). Enhanced (multi-frame) files keep the rescale
per frame in the functional groups (``PixelValueTransformationSequence``); it is applied frame by frame here
(pydicom 3's ``apply_rescale`` reads only the top-level tags). Then one intensity window maps to ``[0, 1]``, the
first that applies of:

1. the ``window=(center, width)`` argument (e.g. ``(40, 400)`` for CT soft tissue in HU), applied as
   ``clip((x - (center - width / 2)) / width, 0, 1)``;
2. the file's own window: a ``VOILUTSequence`` table (its first LUT, scaled by the range of its entries;
   preferred when both are present, as in pydicom), else ``WindowCenter`` / ``WindowWidth`` (the first value
   when multi-valued; in enhanced files the ``FrameVOILUTSequence`` of the first frame), applied with the file's
   ``VOILUTFunction`` by the DICOM formulas (PS3.3 C.11.2.1.2): ``LINEAR`` (the default)
   ``clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1)``, ``LINEAR_EXACT`` ``clip((x - c) / w + 0.5, 0, 1)``,
   ``SIGMOID`` ``1 / (1 + exp(-4 (x - c) / w))``; a window the standard forbids (``LINEAR`` with width < 1,
   others with width <= 0) is ignored;
3. the 0.5th-99.5th percentile of the image (of the whole volume for multi-frame files and series), values
   clipped; when those percentiles are equal the min-max range is used; a constant image gives zeros.

``MONOCHROME1`` (white is low) is inverted, ``1 - x``, after the window. A series uses one window for all its
slices: the ``window`` argument, else the window of its first slice, else the percentiles of the whole volume.
Colour images are not windowed: the RGB values are divided by ``2 ** BitsStored - 1`` (palette colour: by the
maximum of the LUT entry type, 255 or 65535).

NIfTI: the voxel values with ``scl_slope`` / ``scl_inter`` applied (nibabel), any byte order. The volume is
turned to the closest canonical (RAS+) orientation (``nibabel.as_closest_canonical``'s rule: axes permuted and
flipped, never resampled), then the voxel axes ``(i, j, k)`` become ``[1, k, j, i]``: depth runs toward Superior,
rows toward Anterior, columns toward the patient's Right (so, shown with row 0 on top, an axial slice has
posterior at the top and the patient's left on the left; flip if you want the radiological display).
Non-finite voxels (NaN / inf, e.g. outside a brain mask) are replaced by the minimum of the finite voxels; then the
0.5th-99.5th percentile of the voxels (of the chosen time point) maps to ``[0, 1]``, as for DICOM rule 3.

Every failure is a :class:`~medrobust.data.base.DataError` with one line naming the file and what was expected.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from medrobust.data.base import DataError

VOLUME_SUFFIXES = (".dcm", ".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm", ".dicom")
PERCENTILES = (0.5, 99.5)
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_PARTIAL_422", "YBR_ICT", "YBR_RCT",
           "PALETTE COLOR")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# The packages that decode each compressed family (pydicom's plugins), for the "install" hint.
_DECODER_HINTS = (
    ("JPEG-LS", "pyjpegls (pip install pyjpegls) or pylibjpeg with pylibjpeg-libjpeg"),
    ("High-Throughput JPEG 2000", "pylibjpeg with pylibjpeg-openjpeg (pip install pylibjpeg pylibjpeg-openjpeg)"),
    ("JPEG 2000", "pylibjpeg with pylibjpeg-openjpeg (pip install pylibjpeg pylibjpeg-openjpeg) or pillow"),
    ("JPEG", "pylibjpeg with pylibjpeg-libjpeg (pip install pylibjpeg pylibjpeg-libjpeg); pillow decodes "
             "8-bit baseline only"),
    ("RLE", "pylibjpeg with pylibjpeg-rle (pip install pylibjpeg pylibjpeg-rle)"),
)


def volume_suffix(path: str | Path) -> str | None:
    """The volume suffix of ``path`` (one of :data:`VOLUME_SUFFIXES`, case-insensitive), or ``None``.

    ``.nii.gz`` is recognised as a whole; ``.dicom`` counts as ``.dcm``.
    """
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    suffix = Path(name).suffix
    if suffix in DICOM_SUFFIXES:
        return ".dcm"
    return ".nii" if suffix == ".nii" else None


# --------------------------------------------------------------------------------------------------- normalisation


def _percentile_unit(x: np.ndarray) -> np.ndarray:
    """Rule 3: the 0.5th-99.5th percentile range to [0, 1] (min-max when those are equal; constant -> zeros)."""
    lo, hi = (float(v) for v in np.percentile(x, PERCENTILES))
    if hi <= lo:
        lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros(x.shape, np.float32)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _window_unit(x: np.ndarray, center: float, width: float, function: str = "LINEAR_EXACT") -> np.ndarray:
    """A DICOM VOI window (PS3.3 C.11.2.1.2) mapping to [0, 1]."""
    x = x.astype(np.float64, copy=False)
    if function == "SIGMOID":
        y = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    elif function == "LINEAR":
        if width == 1:  # the standard's formula degenerates to a step at c - 0.5
            y = (x > center - 0.5).astype(np.float64)
        else:
            y = (x - (center - 0.5)) / (width - 1) + 0.5
    else:  # LINEAR_EXACT, and the `window` argument
        y = (x - center) / width + 0.5
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def _valid_window(width: float, function: str) -> bool:
    return width >= 1 if function == "LINEAR" else width > 0


# --------------------------------------------------------------------------------------------------------- DICOM


def _pydicom():
    try:
        import pydicom
    except ImportError as err:  # pragma: no cover - pydicom is a dependency of the data extra
        raise DataError("reading DICOM files needs pydicom: pip install pydicom") from err
    return pydicom


def _dcmread(path: Path, where: str, *, stop_before_pixels: bool = False):
    """The dataset of ``path``; a missing, truncated or non-DICOM file is a one-line DataError."""
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    if not path.is_file():
        raise DataError(f"{where}: DICOM file {path} not found")
    try:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
        except InvalidDicomError:
            # No 128-byte preamble + "DICM": older files may still be a bare data set. Accept one only if it
            # parses to an image header (a random file "parses" to a few garbage elements).
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=stop_before_pixels)
            if "Rows" not in ds or "Columns" not in ds or "SOPClassUID" not in ds:
                raise DataError(f"{where}: {path} is not a DICOM file (no 'DICM' header and no image attributes); "
                                "expected a DICOM file")
            if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
                from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

                ds.file_meta.TransferSyntaxUID = (
                    ImplicitVRLittleEndian if ds.original_encoding == (True, True) else ExplicitVRLittleEndian)
        # Touch every element now so that a truncated header fails here, not later.
        for _ in ds.iterall():
            pass
    except DataError:
        raise
    except Exception as err:  # pydicom raises many kinds for a bad file; the user needs one line
        raise DataError(f"{where}: cannot read {path} ({type(err).__name__}: {_first_line(err)}); "
                        "expected a DICOM file") from err
    return ds


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else "no details"


def _has_pixels(ds) -> bool:
    return any(k in ds for k in _PIXEL_KEYWORDS)


def _int_tag(ds, keyword: str, default: int | None = None) -> int | None:
    """A single-valued integer tag, or ``default`` when it is missing, empty or malformed (several values, text)."""
    value = ds.get(keyword)
    try:
        return default if value is None or value == "" else int(value)
    except (TypeError, ValueError, OverflowError):
        return default


def _image_size(ds) -> tuple[int, int] | None:
    """(Rows, Columns) when both are positive integers, else None."""
    rows, cols = _int_tag(ds, "Rows"), _int_tag(ds, "Columns")
    return (rows, cols) if rows is not None and cols is not None and rows > 0 and cols > 0 else None


def _check_pixels(ds, path: Path, where: str) -> None:
    if not _has_pixels(ds):
        raise DataError(f"{where}: {path} has no pixel data (a DICOM without an image, e.g. a structured report); "
                        "expected an image")
    for key in ("Rows", "Columns"):
        if key not in ds:
            raise DataError(f"{where}: {path} has pixel data but no {key} attribute; expected a DICOM image")
    if _image_size(ds) is None:
        raise DataError(f"{where}: {path} has Rows {ds.get('Rows')!r} and Columns {ds.get('Columns')!r}; expected "
                        "two positive integers")


def _transfer_syntax(ds):
    """The file's transfer syntax (a pydicom UID); None when missing, or when the value is not a transfer syntax UID
    (a damaged header: text, several values, or another kind of UID)."""
    from pydicom.uid import UID

    meta = getattr(ds, "file_meta", None)
    value = meta.get("TransferSyntaxUID") if meta is not None else None
    if not isinstance(value, str):
        return None
    uid = value if isinstance(value, UID) else UID(value)
    return uid if uid.is_transfer_syntax else None


def _pixels(ds, path: Path, where: str, index: int | None = None) -> np.ndarray:
    """The decoded pixel array (colour already converted to RGB by pydicom), or a DataError."""
    from pydicom.pixels import get_decoder

    ts = _transfer_syntax(ds)
    meta = getattr(ds, "file_meta", None)
    if ts is None and meta is not None and meta.get("TransferSyntaxUID") is not None:
        raise DataError(f"{where}: {path} has TransferSyntaxUID {str(meta.get('TransferSyntaxUID'))[:80]!r}, which is "
                        "not a transfer syntax; expected e.g. 1.2.840.10008.1.2.1 (Explicit VR Little Endian)")
    if ts is not None and ts.is_compressed:
        try:
            decoder = get_decoder(ts)
        except NotImplementedError as err:
            raise DataError(f"{where}: {path} uses transfer syntax {ts.name} ({ts}), which pydicom cannot decode; "
                            "expected an uncompressed or JPEG / JPEG-LS / JPEG 2000 / RLE DICOM") from err
        if not decoder.is_available:
            raise DataError(f"{where}: {path} is compressed with {ts.name} ({ts}) and no decoder for it is "
                            f"installed; install {_decoder_hint(ts.name)}")
    try:
        if index is not None:
            ds.pixel_array_options(index=index)
        return ds.pixel_array
    except Exception as err:
        name = ts.name if ts is not None else "unknown transfer syntax"
        raise DataError(f"{where}: cannot decode the pixel data of {path} ({name}; {type(err).__name__}: "
                        f"{_first_line(err)}); expected a DICOM file with complete pixel data") from err
    finally:
        if index is not None:
            ds.pixel_array_options(index=None)


def _decoder_hint(ts_name: str) -> str:
    for family, hint in _DECODER_HINTS:
        if family in ts_name:
            return hint
    return "pylibjpeg and its plugins (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg) or gdcm"


def _frames(ds) -> int:
    return max(_int_tag(ds, "NumberOfFrames", 1) or 1, 1)


def _group_item(ds, frame: int, keyword: str):
    """The first item of the functional-group sequence ``keyword`` for ``frame`` (per-frame, else shared)."""
    for groups, i in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(groups)
        if seq is not None and len(seq) > i:
            inner = seq[i].get(keyword)
            if inner:
                return inner[0]
    return None


def _first(value) -> float | None:
    """A tag's value (the first when multi-valued) as float, or None."""
    if value is not None and not isinstance(value, (str, bytes, int, float)) and hasattr(value, "__len__"):
        value = value[0] if len(value) else None
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _rescale(frames: np.ndarray, ds) -> np.ndarray:
    """Modality LUT or rescale slope / intercept (per frame for enhanced files); ``frames`` is ``[F, H, W]``."""
    from pydicom.pixels import apply_modality_lut

    if ds.get("ModalityLUTSequence"):
        return np.asarray(apply_modality_lut(frames, ds), dtype=np.float64)
    out = frames.astype(np.float64)
    for f in range(len(out)):
        item = _group_item(ds, f, "PixelValueTransformationSequence")
        src = item if item is not None and "RescaleSlope" in item else ds
        slope = _first(src.get("RescaleSlope"))
        intercept = _first(src.get("RescaleIntercept"))
        with np.errstate(over="ignore", invalid="ignore"):  # a huge or NaN slope: refused by _rescaled
            if slope is not None and slope != 1:
                out[f] *= slope
            if intercept:
                out[f] += intercept
    return out


def _rescaled(frames: np.ndarray, ds, path: Path, where: str) -> np.ndarray:
    """:func:`_rescale`, refusing a rescale that gives NaN or infinite values (e.g. ``RescaleSlope`` NaN or 1e308)
    and a Modality LUT that pydicom cannot apply."""
    try:
        out = _rescale(frames, ds)
    except Exception as err:  # apply_modality_lut on a malformed table: TypeError, IndexError, ValueError, ...
        raise DataError(f"{where}: {path} has an unusable ModalityLUTSequence ({type(err).__name__}: "
                        f"{_first_line(err)}); expected a valid Modality LUT or rescale slope / intercept") from err
    if not np.isfinite(out).all():
        raise DataError(f"{where}: {path} rescales to NaN or infinite values (RescaleSlope "
                        f"{ds.get('RescaleSlope')!r}, RescaleIntercept {ds.get('RescaleIntercept')!r}); expected a "
                        "finite slope and intercept")
    return out


def _file_window(ds) -> tuple[float, float, str] | None:
    """The file's first window (center, width, VOI LUT function), enhanced files' first frame first."""
    item = _group_item(ds, 0, "FrameVOILUTSequence")
    for src in (item, ds):
        if src is None:
            continue
        center, width = _first(src.get("WindowCenter")), _first(src.get("WindowWidth"))
        if center is not None and width is not None:
            function = str(src.get("VOILUTFunction") or "LINEAR").upper()
            if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
                function = "LINEAR"
            return center, width, function
    return None


def _voi_lut(x: np.ndarray, ds) -> np.ndarray | None:
    """The file's VOI LUT table applied and scaled by the range of its entries, or None without one."""
    seq = ds.get("VOILUTSequence")
    if not seq or seq[0].get("LUTDescriptor") is None or seq[0].get("LUTData") is None:
        return None
    from pydicom.pixels import apply_voi

    n, first_map = int(seq[0].LUTDescriptor[0]) or 2**16, int(seq[0].LUTDescriptor[1])
    # LUT Descriptor "first value mapped" may be stored unsigned though meant signed (PS3.3 C.11.2.1.1)
    if first_map >= 2**15 and ds.get("PixelRepresentation") == 1:
        first_map -= 2**16
    table = np.asarray(apply_voi(np.arange(first_map, first_map + n, dtype=np.int64), ds), np.float64)
    lo, hi = float(table.min()), float(table.max())
    if hi <= lo:
        return None
    index = np.clip(np.rint(x).astype(np.int64) - first_map, 0, n - 1)
    return ((table[index] - lo) / (hi - lo)).astype(np.float32)


def _gray_unit(values: np.ndarray, ds, window: tuple[float, float] | None, path: Path, where: str) -> np.ndarray:
    """Rescaled gray values -> [0, 1] by the module's window rule; MONOCHROME1 inverted."""
    if window is not None:
        center, width = _window_arg(window, path, where)
        out = _window_unit(values, center, width)
    else:
        try:
            out = _voi_lut(values, ds)
        except Exception as err:  # a malformed table: pydicom's apply_voi raises TypeError, IndexError, ...
            raise DataError(f"{where}: {path} has an unusable VOILUTSequence ({type(err).__name__}: "
                            f"{_first_line(err)}); expected a valid VOI LUT, or pass a window") from err
        if out is None:
            file_window = _file_window(ds)
            if (file_window is not None and np.isfinite(file_window[:2]).all()
                    and _valid_window(file_window[1], file_window[2])):
                out = _window_unit(values, *file_window)
            else:
                out = _percentile_unit(values)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        out = 1.0 - out
    return out.astype(np.float32, copy=False)


def _window_arg(window, path: Path, where: str) -> tuple[float, float]:
    try:
        center, width = (float(v) for v in window)
    except (TypeError, ValueError) as err:
        raise DataError(f"{where}: window for {path} must be (center, width), got {window!r}") from err
    if not (np.isfinite(center) and np.isfinite(width) and width > 0):
        raise DataError(f"{where}: window for {path} must be (center, width) with width > 0, got {window!r}")
    return center, width


def _colour_unit(arr: np.ndarray, ds, path: Path, where: str) -> np.ndarray:
    """A colour frame ``[H, W, 3]`` (or palette indices ``[H, W]``) -> RGB ``[3, H, W]`` in [0, 1]."""
    pi = str(ds.get("PhotometricInterpretation", "")).upper()
    if pi == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            rgb = apply_color_lut(arr, ds)
        except Exception as err:
            raise DataError(f"{where}: {path} is PALETTE COLOR but its colour lookup table is unusable "
                            f"({_first_line(err)}); expected a valid palette") from err
        scale = float(np.iinfo(rgb.dtype).max) if np.issubdtype(rgb.dtype, np.integer) else 1.0
    else:
        rgb = arr
        bits = _int_tag(ds, "BitsStored", 8) or 8
        scale = float(2**bits - 1)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise DataError(f"{where}: {path} is {pi} but decodes to shape {rgb.shape}; expected [rows, columns, 3]")
    return np.clip(rgb.astype(np.float32) / scale, 0.0, 1.0).transpose(2, 0, 1).copy()


def _is_colour(ds) -> bool:
    pi = str(ds.get("PhotometricInterpretation", "")).upper()
    return pi in _COLOUR or _int_tag(ds, "SamplesPerPixel", 1) == 3


def read_dicom(path: Path, where: str, *, window: tuple[float, float] | None = None) -> np.ndarray:
    """One DICOM file as float32 in [0, 1]: ``[1, H, W]``, ``[1, D, H, W]`` (multi-frame) or RGB ``[3, H, W]``.

    Grayscale: Modality LUT / rescale (per frame for enhanced files), then the window: ``window=(center, width)``
    if given, else the file's VOI LUT / window (first value), else the 0.5th-99.5th percentile; MONOCHROME1 is
    inverted after windowing. Colour (RGB / YBR, converted to RGB; palette colour through its LUT): divided by
    the stored bit depth, no window; a multi-frame colour file gives its first frame. See the module docstring.

    Raises:
        DataError: a missing, truncated or non-DICOM file, a DICOM without pixel data, a compressed transfer
            syntax without an installed decoder, or pixel data that does not decode.
    """
    path = Path(path)
    ds = _dcmread(path, where)
    _check_pixels(ds, path, where)
    n_frames = _frames(ds)
    if _is_colour(ds):
        arr = _pixels(ds, path, where, index=0 if n_frames > 1 else None)
        if arr.ndim == 4:  # a decoder that ignored the frame index
            arr = arr[0]
        return _colour_unit(arr, ds, path, where)
    arr = _pixels(ds, path, where)
    if arr.ndim not in (2, 3) or (arr.ndim == 3) != (n_frames > 1):
        raise DataError(f"{where}: {path} decodes to shape {arr.shape} with {n_frames} frame(s); expected a "
                        "grayscale image [rows, columns] or [frames, rows, columns]")
    frames = arr.reshape(-1, *arr.shape[-2:])
    out = _gray_unit(_rescaled(frames, ds, path, where), ds, window, path, where)
    return out[None] if n_frames > 1 else out  # [1, D, H, W] or [1, H, W]


# ------------------------------------------------------------------------------------------------- DICOM series


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly in ``folder``, by name: ``.dcm`` / ``.dicom`` files, and extension-less files
    with the ``DICM`` marker at byte 128 (the usual export layout); ``DICOMDIR`` and hidden files are left out."""
    out = []
    for p in sorted(Path(folder).iterdir()):
        if not p.is_file() or p.name.startswith(".") or p.name.upper() == "DICOMDIR":
            continue
        if p.suffix.lower() in DICOM_SUFFIXES or (not p.suffix and _has_dicm_marker(p)):
            out.append(p)
    return out


def _has_dicm_marker(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _series(folder: Path, where: str) -> tuple[list[tuple[Path, Any]], str]:
    """The slices of the one series in ``folder``, ordered; and the ordering used (position / instance / name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{where}: DICOM series folder {folder} not found")
    files = dicom_files(folder)
    if not files:
        raise DataError(f"{where}: {folder} holds no DICOM files (.dcm, .dicom, or extension-less files with a "
                        "'DICM' header); expected a folder of the DICOM slices of one series")
    items = []
    for p in files:
        ds = _dcmread(p, where)
        _check_pixels(ds, p, where)
        if _frames(ds) > 1:
            raise DataError(f"{where}: {p} has {_frames(ds)} frames; a series folder must hold single-frame slices "
                            "(read a multi-frame file on its own)")
        if _is_colour(ds):
            raise DataError(f"{where}: {p} is a colour image ({ds.get('PhotometricInterpretation')}); a series "
                            "folder must hold grayscale slices")
        items.append((p, ds))
    uids = Counter(str(ds.get("SeriesInstanceUID", "")) for _, ds in items)
    if len(uids) > 1:
        parts = ", ".join(f"{uid or '(none)'}: {n} files" for uid, n in uids.most_common())
        raise DataError(f"{where}: {folder} holds {len(uids)} series ({parts}); expected the slices of one series")
    shapes = Counter(_image_size(ds) for _, ds in items)  # checked by _check_pixels
    expected = shapes.most_common(1)[0][0]
    for p, ds in items:
        if _image_size(ds) != expected:
            rows, cols = _image_size(ds)
            raise DataError(f"{where}: {p} is {rows}x{cols} but the other slices of {folder} are "
                            f"{expected[0]}x{expected[1]}; expected slices of one shape")
    return _order_slices(items)


def _slice_positions(items) -> list[float] | None:
    """Each slice's ImagePositionPatient projected on the slice normal, or None when not usable."""
    try:
        iop = np.asarray([float(v) for v in items[0][1].ImageOrientationPatient], np.float64)
        normal = np.cross(iop[:3], iop[3:])
        if iop.shape != (6,) or np.linalg.norm(normal) < 1e-6:
            return None
        positions = [float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)) for _, ds in items]
    except (AttributeError, TypeError, ValueError, KeyError):
        return None
    return positions if len(set(np.round(positions, 4))) == len(positions) else None


def _order_slices(items):
    positions = _slice_positions(items)
    if positions is not None:
        order = np.argsort(positions, kind="stable")
        return [items[i] for i in order], "ImagePositionPatient along the slice normal"
    try:
        numbers = [int(ds.InstanceNumber) for _, ds in items]
    except (AttributeError, TypeError, ValueError):
        numbers = None
    if numbers is not None and len(set(numbers)) == len(numbers):
        order = np.argsort(numbers, kind="stable")
        return [items[i] for i in order], "InstanceNumber"
    return list(items), "file name"


def _series_values(items, where: str) -> np.ndarray:
    """Rescaled slices stacked to ``[D, H, W]`` float64."""
    slices = []
    for p, ds in items:
        arr = _pixels(ds, p, where)
        if arr.ndim != 2:
            raise DataError(f"{where}: {p} decodes to shape {arr.shape}; expected one grayscale slice")
        slices.append(_rescaled(arr[None], ds, p, where)[0])
    return np.stack(slices)


def read_dicom_series(folder: Path, where: str, *, window: tuple[float, float] | None = None) -> np.ndarray:
    """A folder of single-frame DICOM slices of one series as float32 ``[1, D, H, W]`` in [0, 1].

    Slices are ordered by ImagePositionPatient projected on the slice normal (the cross product of the
    ImageOrientationPatient row and column directions), falling back to InstanceNumber, then to the file name.
    Each slice is rescaled by its own slope / intercept; one window serves the whole volume: ``window`` if given,
    else the first slice's, else the 0.5th-99.5th percentile of all slices (see the module docstring).

    Raises:
        DataError: no DICOM files, a file that is not a grayscale single-frame image, several series, or slices
            of different shapes (naming the odd file).
    """
    folder = Path(folder)
    items, _ = _series(folder, where)
    values = _series_values(items, where)
    return _gray_unit(values, items[0][1], window, folder, where)[None]


# -------------------------------------------------------------------------------------------------------- NIfTI


def _load_nifti(path: Path, where: str):
    try:
        import nibabel as nib
    except ImportError as err:  # pragma: no cover - nibabel is a dependency of the data extra
        raise DataError("reading NIfTI files needs nibabel: pip install nibabel") from err
    if not path.is_file():
        raise DataError(f"{where}: NIfTI file {path} not found")
    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel and gzip raise many kinds for a bad file
        raise DataError(f"{where}: cannot read {path} ({type(err).__name__}: {_first_line(err)}); "
                        "expected a NIfTI file (.nii or .nii.gz)") from err
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(f"{where}: {path} is a {type(img).__name__}, not NIfTI; expected a NIfTI file")
    dtype = img.get_data_dtype()
    if dtype.fields is not None or dtype.kind == "c":
        raise DataError(f"{where}: {path} holds {dtype} voxels (colour or complex); expected scalar voxels")
    return img


def _nifti_shape(img, path: Path, where: str) -> tuple[int, ...]:
    """The image shape with trailing singleton axes beyond the third dropped; 2D, 3D or 4D."""
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if not 2 <= len(shape) <= 4:
        raise DataError(f"{where}: {path} has shape {tuple(img.shape)}; expected a 2D, 3D or 4D (time series) image")
    if min(shape) < 1:
        raise DataError(f"{where}: {path} has shape {tuple(img.shape)}; expected every axis of length >= 1")
    return shape


def _canonical_ornt(img) -> np.ndarray:
    """nibabel's closest-canonical (RAS+) orientation of the voxel axes; identity for a degenerate affine."""
    from nibabel.orientations import io_orientation

    identity = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all():  # NaN / inf zooms or quaternions: no orientation to speak of
        return identity
    try:
        ornt = io_orientation(affine)
    except (np.linalg.LinAlgError, ValueError):
        return identity
    if np.isnan(ornt).any():
        return identity
    return ornt


def _axcodes(img) -> tuple[str, ...]:
    """The NIfTI axis codes (e.g. ``('L', 'A', 'S')``), ``'?'`` for an axis a degenerate affine leaves undefined."""
    import nibabel as nib

    affine = np.asarray(img.affine, dtype=np.float64)
    try:
        codes = nib.aff2axcodes(affine) if np.isfinite(affine).all() else (None,) * 3
    except (np.linalg.LinAlgError, ValueError):
        codes = (None,) * 3
    return tuple("?" if c is None else str(c) for c in codes)


def read_nifti(path: Path, where: str, *, frame: int = 0) -> np.ndarray:
    """A NIfTI image as float32 in [0, 1]: ``[1, D, H, W]`` = ``[1, k, j, i]`` of the RAS+ voxel axes.

    The voxels are reoriented to the closest canonical (RAS+) orientation first (permutes and flips only), so
    depth runs toward Superior, rows toward Anterior and columns toward the patient's Right. A 2D image (the
    file's third voxel axis of length 1) gives ``[1, H, W]``; a 4D series gives time point ``frame``.
    ``scl_slope`` / ``scl_inter`` are applied, any byte order. Non-finite voxels become the minimum of the finite
    ones; the 0.5th-99.5th percentile then maps to [0, 1] (constant -> zeros).

    Raises:
        DataError: a missing, truncated or non-NIfTI file, colour / complex voxels, more than 4 axes, ``frame``
            out of range (naming the number of frames), or no finite voxel.
    """
    path = Path(path)
    img = _load_nifti(path, where)
    shape = _nifti_shape(img, path, where)
    if len(shape) == 4:
        if not 0 <= frame < shape[3]:
            raise DataError(f"{where}: frame {frame} is out of range for {path}, which has {shape[3]} frames "
                            f"(0..{shape[3] - 1})")
        index = (slice(None),) * 3 + (frame,) + (0,) * (len(img.shape) - 4)
    elif frame != 0:
        raise DataError(f"{where}: frame {frame} asked of {path}, which is {len(shape)}D with 1 frame; expected "
                        "frame 0")
    else:
        index = (slice(None),) * len(shape) + (0,) * (len(img.shape) - len(shape))
    try:
        data = np.asarray(img.dataobj[index], dtype=np.float32)
    except Exception as err:
        raise DataError(f"{where}: cannot read the voxels of {path} ({type(err).__name__}: {_first_line(err)}); "
                        "expected a complete NIfTI file") from err
    if data.ndim == 2:
        data = data[:, :, None]
    finite = np.isfinite(data)
    if not finite.all():
        if not finite.any():
            raise DataError(f"{where}: {path} has no finite voxel (all NaN or inf); expected image values")
        data[~finite] = data[finite].min()
    data = _canonical_kji(data, _canonical_ornt(img), two_d=len(shape) == 2 or shape[2] == 1)
    unit = _percentile_unit(data)
    return np.ascontiguousarray(unit)[None]


def _canonical_kji(data: np.ndarray, ornt: np.ndarray, *, two_d: bool) -> np.ndarray:
    """Voxels ``(i, j, k)`` -> RAS+ -> ``[k, j, i]``; for a 2D image the axis the file's third axis became is
    dropped (``[H, W]``)."""
    from nibabel.orientations import apply_orientation

    out = apply_orientation(data, ornt).transpose(2, 1, 0)
    return np.squeeze(out, axis=2 - int(ornt[2, 0])) if two_d else out


# --------------------------------------------------------------------------------------------------------- info


def volume_info(path: Path) -> dict:
    """What :func:`medrobust.data.inspect.describe` reports of a DICOM / NIfTI file or a DICOM series folder.

    Keys: ``format`` (``DICOM``, ``DICOM series``, ``NIfTI``), ``shape`` (raw: DICOM ``[frames,] rows, columns
    [, samples]``, a series ``slices, rows, columns``, NIfTI the header's), ``read_shape`` (what the reader
    returns), ``dtype``, ``spacing`` (mm, raw axis order: DICOM ``[slice thickness,] row, column`` from
    PixelSpacing / SliceThickness (the functional groups for enhanced files), a series uses the slice-position
    step, NIfTI the zooms), ``modality`` (DICOM Modality; NIfTI None), ``photometric``, ``frames``,
    ``value_range`` (raw min / max after rescale), ``window`` (the file's (center, width) or None),
    ``orientation`` (NIfTI axis codes, e.g. ``('L', 'A', 'S')``), ``endianness`` (NIfTI ``little`` / ``big``);
    and ``note`` (why there is no image or value range, or None). DICOM adds ``transfer_syntax``; a series adds
    ``slices`` and ``order``; NIfTI adds ``non_finite`` (count) and ``description``.

    Raises:
        DataError: an unsupported suffix or an unreadable file.
    """
    path = Path(path)
    if path.is_dir():
        return _series_info(path)
    suffix = volume_suffix(path)
    if suffix == ".dcm":
        return _dicom_info(path)
    if suffix in (".nii", ".nii.gz"):
        return _nifti_info(path)
    raise DataError(f"{path}: not a volume file; expected one of {', '.join(VOLUME_SUFFIXES)} (or .dicom), or a "
                    "folder of DICOM slices")


def _pair(value) -> tuple[float, float] | None:
    """A two-valued tag (PixelSpacing) as two finite floats, or None when it is missing or malformed."""
    try:
        if value is None or isinstance(value, (str, bytes)) or len(value) != 2:
            return None
        pair = (float(value[0]), float(value[1]))
    except (TypeError, ValueError):
        return None
    return pair if np.isfinite(pair).all() else None


def _spacing(ds) -> tuple[float | None, tuple[float, float] | None]:
    """(slice thickness, (row, column) pixel spacing) from the functional groups or the top level."""
    item = _group_item(ds, 0, "PixelMeasuresSequence")
    thickness, pixel = None, None
    for src in (item, ds):
        if src is None:
            continue
        if pixel is None:
            pixel = _pair(src.get("PixelSpacing"))
        if thickness is None:
            thickness = _first(src.get("SpacingBetweenSlices")) or _first(src.get("SliceThickness"))
    return thickness, pixel


def _dicom_info(path: Path) -> dict:
    where = "inspect"
    ds = _dcmread(path, where)
    frames, colour = _frames(ds), _is_colour(ds)
    ts = _transfer_syntax(ds)
    window = _file_window(ds)
    thickness, pixel = _spacing(ds)
    info = {"format": "DICOM", "modality": ds.get("Modality"), "photometric": ds.get("PhotometricInterpretation"),
            "frames": frames, "transfer_syntax": ts.name if ts is not None else None,
            "window": window[:2] if window else None, "voi_lut": bool(ds.get("VOILUTSequence")),
            "orientation": None, "endianness": None, "shape": None, "read_shape": None, "dtype": None,
            "spacing": None, "slice_thickness": None, "value_range": None, "note": None}
    if not _has_pixels(ds) or "Rows" not in ds:
        info["note"] = "no pixel data (a DICOM without an image, e.g. a structured report)"
        return info
    if _image_size(ds) is None:
        info["note"] = (f"Rows {ds.get('Rows')!r} and Columns {ds.get('Columns')!r} are not two positive integers "
                        "(will not load)")
        return info
    (rows, cols), samples = _image_size(ds), _int_tag(ds, "SamplesPerPixel", 1) or 1
    info["shape"] = (frames,) * (frames > 1) + (rows, cols) + (samples,) * (samples > 1)
    info["read_shape"] = (3, rows, cols) if colour else (1, frames, rows, cols) if frames > 1 else (1, rows, cols)
    if pixel is not None:
        info["spacing"] = ((thickness,) if frames > 1 else ()) + pixel
    info["slice_thickness"] = thickness
    try:
        arr = _pixels(ds, path, where)
    except DataError as err:
        info["note"] = str(err).split(": ", 1)[-1]
        return info
    info["dtype"] = str(arr.dtype)
    try:
        values = arr if colour else _rescaled(arr.reshape(-1, rows, cols), ds, path, where)
    except DataError as err:
        info["note"] = str(err).split(": ", 1)[-1]
        return info
    info["value_range"] = (float(values.min()), float(values.max()))
    return info


def _series_info(folder: Path) -> dict:
    where = "inspect"
    items, order = _series(folder, where)
    first = items[0][1]
    window = _file_window(first)
    thickness, pixel = _spacing(first)
    positions = _slice_positions(items)
    step = float(np.median(np.diff(positions))) if positions is not None and len(positions) > 1 else thickness
    values = _series_values(items, where)
    return {"format": "DICOM series", "modality": first.get("Modality"),
            "photometric": first.get("PhotometricInterpretation"), "frames": len(items), "slices": len(items),
            "order": order, "shape": values.shape, "read_shape": (1, *values.shape),
            "dtype": str(first.pixel_array.dtype), "spacing": (step, *pixel) if pixel is not None else None,
            "slice_thickness": thickness,
            "value_range": (float(values.min()), float(values.max())), "window": window[:2] if window else None,
            "voi_lut": bool(first.get("VOILUTSequence")), "orientation": None, "endianness": None,
            "transfer_syntax": (_transfer_syntax(first).name if _transfer_syntax(first) is not None else None),
            "note": None}


def _nifti_info(path: Path) -> dict:
    where = "inspect"
    img = _load_nifti(path, where)
    shape = _nifti_shape(img, path, where)
    header = img.header
    ornt = _canonical_ornt(img)
    note, value_range, non_finite = None, None, None
    try:  # one time point at a time: a long 4D series need not fit in memory as float64
        lo, hi, non_finite = np.inf, -np.inf, 0
        rest = (0,) * (len(img.shape) - len(shape))
        for t in range(shape[3] if len(shape) == 4 else 1):
            index = (slice(None),) * min(len(shape), 3) + ((t,) if len(shape) == 4 else ()) + rest
            data = np.asarray(img.dataobj[index], dtype=np.float64)
            finite = np.isfinite(data)
            non_finite += int(data.size - finite.sum())
            if finite.any():
                lo, hi = min(lo, float(data[finite].min())), max(hi, float(data[finite].max()))
        if hi >= lo:
            value_range = (lo, hi)
        else:
            note = "no finite voxel"
    except Exception as err:
        note = f"voxels unreadable ({type(err).__name__}: {_first_line(err)})"
    two_d = len(shape) == 2 or shape[2] == 1
    spatial = shape[:3] if len(shape) > 2 else (*shape, 1)
    read_shape = (1, *_canonical_kji(np.broadcast_to(np.uint8(0), spatial), ornt, two_d=two_d).shape)
    descrip = header.get("descrip")
    description = "" if descrip is None else descrip.item().decode("latin-1", "replace").replace("\x00", "").strip()
    return {"format": "NIfTI", "modality": None, "photometric": None,
            "frames": shape[3] if len(shape) == 4 else 1, "shape": tuple(int(s) for s in img.shape),
            "read_shape": tuple(int(s) for s in read_shape), "dtype": str(img.get_data_dtype()),
            "spacing": tuple(float(z) for z in header.get_zooms()), "slice_thickness": None,
            "value_range": value_range,
            "window": None, "voi_lut": False, "orientation": _axcodes(img),
            "endianness": "big" if header.endianness == ">" else "little", "non_finite": non_finite,
            "description": description or None, "transfer_syntax": None, "note": note}
