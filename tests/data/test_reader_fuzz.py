"""Property-based fuzzing of every data reader, ``describe`` and ``medrobust data inspect``.

Each test starts from a small *valid* file of one format, built here, and checks that it reads (a valid file is
never refused). Hypothesis then corrupts it: truncated at a random byte, a random span overwritten, the whole file
replaced by garbage (plain, or behind the format's magic bytes so the parser goes deeper), and for the text and
structured formats values mis-typed (JSON values replaced by numbers / lists / null / nested objects / huge strings;
CSV cells shuffled, extra or missing cells, no header, non-UTF-8 bytes; DICOM tags, NIfTI header fields and
MedMNIST arrays of the wrong kind). For every corrupted file each reader either succeeds with sane output (a
corruption can leave a valid file) or raises one :class:`DataError` line naming the file; any other exception
fails the test. The CLI returns 0 or 2 (one ``error:`` line on stderr), never a traceback.

Derandomized (the same examples in every run, so CI is deterministic); ``MEDROBUST_FUZZ_EXAMPLES=500`` runs a deeper,
randomized search locally (``--hypothesis-seed=N`` to repeat one).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
import struct
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medrobust.data.base import DataError, Dataset

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")
PIL_Image = pytest.importorskip("PIL.Image")

from pydicom.dataset import Dataset as DicomDataset  # noqa: E402
from pydicom.dataset import FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402

from medrobust.cli import main  # noqa: E402
from medrobust.data.images import read_image  # noqa: E402
from medrobust.data.inspect import describe  # noqa: E402
from medrobust.data.manifest import ManifestParams, load_manifest  # noqa: E402
from medrobust.data.medmnist import load_medmnist  # noqa: E402
from medrobust.data.volume_folder import VolumesParams, load_volumes  # noqa: E402
from medrobust.data.volumes import read_dicom, read_dicom_series, read_nifti  # noqa: E402
from medrobust.data.vqa import read_vqa_file, read_vqa_json  # noqa: E402
from medrobust.data.vqa_source import VQAParams, load_vqa  # noqa: E402

EXAMPLES = int(os.environ.get("MEDROBUST_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=EXAMPLES or 15, deadline=None, derandomize=not EXAMPLES, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
FEW = settings(FUZZ, max_examples=EXAMPLES or 10)


# ------------------------------------------------------------------------------------------------ valid files


def _pil_bytes(fmt: str, mode: str = "L", size: tuple[int, int] = (8, 6)) -> bytes:
    rng = np.random.default_rng(0)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    im = PIL_Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def _npy_bytes() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.linspace(0, 1, 48, dtype=np.float32).reshape(1, 6, 8))
    return buf.getvalue()


def _medmnist_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    out = {}
    for split, n in (("train", 6), ("val", 2), ("test", 2)):
        out[f"{split}_images"] = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
        out[f"{split}_labels"] = (np.arange(n, dtype=np.uint8) % 2)[:, None]
    return out


def _npz_bytes(arrays: dict[str, np.ndarray], compressed: bool) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def _dicom_dataset(instance: int = 1, rows: int = 8, cols: int = 8) -> DicomDataset:
    """A CT slice: int16 stored values, rescale slope 1 / intercept -1024 (HU), window, spacing, position."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(instance)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = DicomDataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [0.0, 0.0, 2.5 * instance]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 2.5
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.WindowCenter, ds.WindowWidth = 40, 400
    pixels = (np.arange(rows * cols, dtype=np.int16).reshape(rows, cols) * 37 + 24 * instance).astype("<i2")
    ds.PixelData = pixels.tobytes()
    return ds


def _dicom_bytes(ds: DicomDataset | None = None) -> bytes:
    buf = io.BytesIO()
    (ds if ds is not None else _dicom_dataset()).save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _nifti_image() -> "nib.Nifti1Image":
    data = (np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4) * 3 - 50)
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0]))
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = b"fuzz"
    return img


def _nifti_bytes(img=None) -> bytes:
    return (img if img is not None else _nifti_image()).to_bytes()


MANIFEST_ROWS = [
    {"image": "img0.png", "text": "no finding", "label": 0, "site": "A", "split": "train", "group": "p0"},
    {"image": "img1.png", "text": "effusion", "label": 1, "site": "A", "split": "train", "group": "p1"},
    {"image": "img0.png", "text": "nodule", "label": 1, "site": "B", "split": "val", "group": "p2"},
    {"image": "img1.png", "text": "clear", "label": 0, "site": "B", "split": "test", "group": "p3"},
]
VQA_ENTRIES = [
    {"qid": 1, "image_name": "img0.png", "image_organ": "CHEST", "answer": "Yes", "answer_type": "CLOSED",
     "question_type": "PRES", "question": "Is there a nodule?", "phrase_type": "freeform"},
    {"qid": 2, "image_name": "img0.png", "answer": "No", "answer_type": "CLOSED ", "question_type": "PRES",
     "question": "Is there an effusion?"},
    {"qid": 3, "image_name": "img1.png", "answer": 2, "answer_type": "OPEN", "question_type": "COUNT",
     "question": "How many findings are there?"},
    {"qid": 4, "image_name": "img1.png", "answer": "left", "answer_type": "OPEN", "question_type": "POS",
     "question": "Which side is the effusion on?"},
    {"qid": 5, "img_name": "img2.png", "answer": "Yes", "question": "Is the heart enlarged?", "q_lang": "en"},
]
VQA_TEST = [{"qid": 10, "image_name": "img2.png", "answer": "no", "answer_type": "CLOSED",
             "question": "Is there consolidation?"}]


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _csv_bytes(table: list[list[str]], delimiter: str = ",") -> bytes:
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator="\n").writerows(table)
    return buf.getvalue().encode("utf-8", "surrogateescape")  # a lone surrogate \udcff becomes the byte 0xff


CSV_TABLE = [["image", "text", "label", "site", "split"]] + [
    [r["image"], r["text"], ["normal", "pneumonia"][r["label"]], r["site"], r["split"]] for r in MANIFEST_ROWS]
LABELS_TABLE = [["case", "label", "site"], ["ct0", "0", "A"], ["mr1", "1", "A"], ["mr0.nii.gz", "1", "B"]]

PNG = _pil_bytes("PNG")
IMAGES = {"img0.png": PNG, "img1.png": _pil_bytes("PNG", size=(6, 8)), "img2.png": _pil_bytes("PNG", "RGB")}
VALID = {
    "png": ("image.png", PNG),
    "jpeg": ("image.jpg", _pil_bytes("JPEG", "RGB", (16, 16))),
    "bmp": ("image.bmp", _pil_bytes("BMP")),
    "tiff": ("image.tif", _pil_bytes("TIFF")),
    "npy": ("image.npy", _npy_bytes()),
    "dcm": ("ct.dcm", _dicom_bytes()),
    "nii": ("mr.nii", _nifti_bytes()),
    "nii.gz": ("mr.nii.gz", gzip.compress(_nifti_bytes(), mtime=0)),
}
NPZ = {False: _npz_bytes(_medmnist_arrays(), False), True: _npz_bytes(_medmnist_arrays(), True)}
# The magic bytes each format starts with: garbage behind them gets past the format sniffing.
MAGIC = {"png": PNG[:16], "jpeg": b"\xff\xd8\xff\xe0", "bmp": b"BM", "tiff": b"II*\x00", "npy": b"\x93NUMPY\x01\x00",
         "dcm": b"\x00" * 128 + b"DICM", "nii": VALID["nii"][1][:4], "nii.gz": b"\x1f\x8b\x08\x00",
         "npz": b"PK\x03\x04"}


# ------------------------------------------------------------------------------------------------ strategies


def _splice(data: bytes, at: int, chunk: bytes) -> bytes:
    return data[:at] + chunk + data[at + len(chunk):]


def corrupted(data: bytes, magic: bytes = b"") -> st.SearchStrategy[bytes]:
    """``data`` truncated, with a span overwritten (anywhere, or in the header), or replaced by garbage."""
    n = len(data)
    head = min(n, 512)
    return st.one_of(
        st.integers(0, n - 1).map(lambda k: data[:k]),
        st.tuples(st.integers(0, n - 1), st.binary(min_size=1, max_size=16)).map(lambda t: _splice(data, *t)),
        st.tuples(st.integers(0, head - 1), st.binary(min_size=1, max_size=8)).map(lambda t: _splice(data, *t)),
        st.lists(st.tuples(st.integers(0, head - 1), st.integers(0, 255)), min_size=1, max_size=6).map(
            lambda flips: _flip(data, flips)),
        st.binary(max_size=2 * n),
        st.binary(max_size=n).map(lambda b: magic + b),
    )


def _flip(data: bytes, flips) -> bytes:
    out = bytearray(data)
    for at, value in flips:
        out[at] = value
    return bytes(out)


HUGE = ["x" * 200_000, "a/" * 3000, "../" * 2000 + "img0.png", "\x00", "", " ", "img0.png\x00.png", "\udcff",
        "img0.png/", ".", "/", "images", "img0.PNG"]
scalar_junk = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-3, 3), st.floats(),
                        st.text(max_size=12), st.sampled_from(HUGE))
json_junk = st.recursive(scalar_junk, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=6)
DEEP = ["[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000, "[" * 5000]


@st.composite
def mistyped_objects(draw, objects: list[dict], keys: list[str]) -> list:
    """A list of JSON objects with some values replaced, removed, or whole objects replaced by junk."""
    out: list = [dict(o) for o in objects]
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(out) - 1))
        op = draw(st.sampled_from(["set", "set", "set", "del", "entry", "drop", "dup"]))
        if op == "entry":
            out[i] = draw(json_junk)
        elif op == "drop" and len(out) > 1:
            out.pop(i)
        elif op == "dup":
            out.append(out[i])
        elif isinstance(out[i], dict):
            key = draw(st.sampled_from(keys + ["extra"]))
            if op == "del":
                out[i].pop(key, None)
            else:
                out[i][key] = draw(json_junk)
    return out


def _jsonl_text(rows: list) -> bytes:
    return "".join(json.dumps(r, allow_nan=True) + "\n" for r in rows).encode()


@st.composite
def mistyped_jsonl(draw, rows: list[dict]) -> bytes:
    data = _jsonl_text(draw(mistyped_objects(rows, list(rows[0]))))
    if draw(st.integers(0, 4)) == 0:  # a raw line: deep nesting, not JSON, a bare value, a non-UTF-8 byte
        lines = data.split(b"\n")
        raw = draw(st.sampled_from(DEEP + ["{", "null", "1", '"image"', "[]", "NaN", '{"image": }'])).encode()
        lines.insert(draw(st.integers(0, len(lines))), raw if draw(st.booleans()) else b"\xff\xfe" + raw)
        data = b"\n".join(lines)
    return data


@st.composite
def mistyped_json(draw, entries: list[dict]) -> bytes:
    keys = sorted({k for e in entries for k in e} | {"image_name", "img_name", "answer", "question"})
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return json.dumps(draw(json_junk)).encode()
    if kind == 1:
        return draw(st.sampled_from(DEEP)).encode()
    data = json.dumps(draw(mistyped_objects(entries, keys)), allow_nan=True).encode()
    if kind == 2:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"])) + data[at:]
    return data


csv_cell = st.one_of(st.text(max_size=8), st.sampled_from(HUGE[1:] + ['"', '"quoted, cell"', "a,b", "\n", "\r",
                                                                   "x" * 140_000, "1", "-1", "99999999999999999"]))


@st.composite
def mistyped_csv(draw, table: list[list[str]], delimiter: str = ",") -> bytes:
    rows = [list(r) for r in table]
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(rows) - 1))
        op = draw(st.sampled_from(["shuffle", "extra", "missing", "cell", "header", "dup_header", "delimiter"]))
        if op == "shuffle":
            rows[i] = draw(st.permutations(rows[i]))
        elif op == "extra":
            rows[i] = rows[i] + draw(st.lists(csv_cell, min_size=1, max_size=3))
        elif op == "missing" and rows[i]:
            rows[i] = rows[i][: draw(st.integers(0, len(rows[i]) - 1))]
        elif op == "cell" and rows[i]:
            rows[i][draw(st.integers(0, len(rows[i]) - 1))] = draw(csv_cell)
        elif op == "header" and len(rows) > 1:
            rows.pop(0)
        elif op == "dup_header" and rows[0]:
            rows[0][-1] = rows[0][0]
        elif op == "delimiter":
            rows[i] = [";".join(rows[i])]
    data = _csv_bytes(rows, delimiter)
    if draw(st.integers(0, 3)) == 0:  # non-UTF-8 bytes, a BOM, a NUL or a lone quote somewhere
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xef\xbb\xbf", b"\x00", b'"'])) + data[at:]
    return data


# ------------------------------------------------------------------------------------------------ checks


@contextlib.contextmanager
def example_dir():
    with tempfile.TemporaryDirectory(prefix="fuzz-") as d:
        yield Path(d)


def refused_or_sane(fn, *names: str, check=None):
    """Call ``fn``: it returns (then ``check`` the result) or raises one DataError line naming one of ``names``.

    Any other exception propagates and fails the test. Returns the result, or None when refused.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # readers may warn about odd values; only exceptions matter here
            result = fn()
    except DataError as err:
        msg = str(err)
        assert "\n" not in msg, f"multi-line DataError: {msg!r}"
        assert any(n in msg for n in names), f"DataError names none of {names}: {msg}"
        return None
    if check is not None:
        check(result)
    return result


def sane_image(img) -> None:
    assert isinstance(img, np.ndarray), type(img)
    assert img.ndim in (3, 4), img.shape
    assert min(img.shape) > 0, img.shape
    assert img.dtype in (np.uint8, np.float32), img.dtype
    if img.dtype == np.float32:
        assert np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0


def sane_dataset(ds) -> None:
    assert isinstance(ds, Dataset)
    assert sum(len(s) for s in (ds.train, ds.val, ds.test)) > 0
    for split in (ds.train, ds.val, ds.test):
        assert split.images.ndim in (4, 5), split.images.shape
        if len(split):
            assert min(split.images.shape[1:]) > 0, split.images.shape
        if split.images.dtype == np.float32 and split.images.size:
            x = split.images
            assert np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0


def sane_text(text) -> None:
    assert isinstance(text, str) and text


def cli_inspect(path: Path, *names: str) -> int:
    """``medrobust data inspect path``: 0, or 2 with one ``error:`` line naming the file; never a traceback."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["data", "inspect", str(path)])
    lines = err.getvalue().splitlines()
    assert rc in (0, 2), rc
    if rc == 0:
        assert out.getvalue().strip() and not lines, err.getvalue()
    else:
        assert len(lines) == 1 and lines[0].startswith("medrobust data: error: "), lines
        assert any(n in lines[0] for n in (names or (path.name,))), lines[0]
    return rc


def _write(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (folder / name).write_bytes(data)


def _series_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"slice{i}.dcm").write_bytes(_dicom_bytes(_dicom_dataset(i)))
    return folder


def _cases_folder(folder: Path) -> Path:
    """A volumes folder: a CT series (ct0), and NIfTI volumes mr0 (.nii.gz) and mr1 (.nii)."""
    _series_folder(folder / "ct0")
    (folder / "mr0.nii.gz").write_bytes(VALID["nii.gz"][1])
    (folder / "mr1.nii").write_bytes(VALID["nii"][1])
    return folder


def _manifest(path: Path, strict: bool, **kw):
    return load_manifest(ManifestParams(path=str(path), strict=strict, cache=False, **kw))


# ------------------------------------------------------------------------------------------------ valid files read


def test_valid_files_read_and_describe(tmp_path):
    """The starting point of every fuzz test: each valid file reads, is described, and inspects with exit 0."""
    for key, (name, data) in VALID.items():
        p = tmp_path / name
        p.write_bytes(data)
        img = read_image(p, "valid")
        sane_image(img)
        assert img.shape == {"png": (1, 6, 8), "jpeg": (3, 16, 16), "bmp": (1, 6, 8), "tiff": (1, 6, 8),
                             "npy": (1, 6, 8), "dcm": (1, 8, 8), "nii": (1, 4, 5, 6), "nii.gz": (1, 4, 5, 6)}[key]
        if key in ("dcm", "nii", "nii.gz"):
            sane_text(describe(p))
            assert cli_inspect(p) == 0
    sane_image(read_dicom(tmp_path / "ct.dcm", "valid"))
    sane_image(read_nifti(tmp_path / "mr.nii.gz", "valid"))

    series = _series_folder(tmp_path / "series")
    assert read_dicom_series(series, "valid").shape == (1, 3, 8, 8)
    assert "DICOM series" in describe(series) and cli_inspect(series) == 0

    for compressed, data in NPZ.items():
        p = tmp_path / f"tiny{int(compressed)}.npz"
        p.write_bytes(data)
        ds = load_medmnist(p)
        sane_dataset(ds)
        assert ds.task.kind == "binary" and len(ds.train) == 6
        sane_text(describe(p))
        assert cli_inspect(p) == 0

    _write(tmp_path, IMAGES)
    (tmp_path / "manifest.jsonl").write_bytes(_jsonl(MANIFEST_ROWS))
    (tmp_path / "manifest.csv").write_bytes(_csv_bytes(CSV_TABLE))
    for name in ("manifest.jsonl", "manifest.csv"):
        for strict in (False, True):
            ds = _manifest(tmp_path / name, strict)
            sane_dataset(ds)
            assert (len(ds.train), len(ds.val), len(ds.test)) == (2, 1, 1)
        sane_text(describe(tmp_path / name))
        assert cli_inspect(tmp_path / name) == 0

    vqa = tmp_path / "vqa"
    (vqa / "images").mkdir(parents=True)
    _write(vqa / "images", IMAGES)
    (vqa / "trainset.json").write_text(json.dumps(VQA_ENTRIES))
    (vqa / "testset.json").write_text(json.dumps(VQA_TEST))
    assert len(read_vqa_json(vqa / "trainset.json")) == 5
    ds = load_vqa(VQAParams(path=str(vqa / "trainset.json"), test_path=str(vqa / "testset.json"), image_size=8))
    sane_dataset(ds)
    assert len(ds.test) == 1
    sane_text(describe(vqa / "trainset.json"))
    assert cli_inspect(vqa / "trainset.json") == 0

    cases = _cases_folder(tmp_path / "cases")
    (tmp_path / "labels.csv").write_bytes(_csv_bytes(LABELS_TABLE))
    ds = load_volumes(VolumesParams(path=str(cases), labels=str(tmp_path / "labels.csv"), image_size=8, cache=False))
    sane_dataset(ds)
    assert ds.train.images.shape[1:] == (1, 8, 8, 8)
    assert sum(len(s) for s in (ds.train, ds.val, ds.test)) == 3
    assert not any("skipped" in n or "no row" in n for n in ds.notes), ds.notes


# ------------------------------------------------------------------------------------------------ binary images


@pytest.mark.parametrize("key", ["png", "jpeg", "bmp", "tiff", "npy"])
@FUZZ
@given(data=st.data())
def test_corrupted_image_files(key, data):
    """read_image on a corrupted image, and a manifest whose row points at it (skipped, or strict: refused)."""
    name, valid = VALID[key]
    blob = data.draw(corrupted(valid, MAGIC[key]), label="file")
    with example_dir() as d:
        p = d / name
        p.write_bytes(blob)
        refused_or_sane(lambda: read_image(p, "row 0"), name, check=sane_image)
        (d / "img0.png").write_bytes(PNG)
        (d / "manifest.jsonl").write_bytes(_jsonl([{"image": name, "label": 0, "split": "train"},
                                                   {"image": "img0.png", "label": 1, "split": "train"}]))
        strict = data.draw(st.booleans(), label="strict")
        ds = refused_or_sane(lambda: _manifest(d / "manifest.jsonl", strict), name, check=sane_dataset)
        if not strict:
            assert ds is not None, "a manifest with one good row must load when not strict"


# ------------------------------------------------------------------------------------------------ DICOM


def _check_volume_reader(p: Path, read, *names: str) -> None:
    refused_or_sane(lambda: read(p, "inspect"), *names, check=sane_image)
    refused_or_sane(lambda: read_image(p, "row 0"), *names, check=sane_image)
    refused_or_sane(lambda: describe(p), *names, check=sane_text)
    cli_inspect(p, *names)


@FUZZ
@given(blob=corrupted(VALID["dcm"][1], MAGIC["dcm"]))
def test_corrupted_dicom(blob):
    with example_dir() as d:
        p = d / "ct.dcm"
        p.write_bytes(blob)
        _check_volume_reader(p, read_dicom, p.name)


@FEW
@given(blob=corrupted(_dicom_bytes(_dicom_dataset(1)), MAGIC["dcm"]), suffix=st.sampled_from([".dcm", ""]))
def test_corrupted_dicom_series_slice(blob, suffix):
    """A series folder with one corrupted slice (also as an extension-less export file)."""
    with example_dir() as d:
        folder = _series_folder(d / "series")
        (folder / "slice1.dcm").unlink()
        (folder / f"slice1{suffix}").write_bytes(blob)
        names = ("slice1", "series")
        refused_or_sane(lambda: read_dicom_series(folder, "series"), *names, check=sane_image)
        refused_or_sane(lambda: describe(folder), *names, check=sane_text)
        cli_inspect(folder, *names)


def _odd_value(draw):
    return draw(st.one_of(
        st.sampled_from(["nan", "inf", "-inf", "1e308", "-1e308", "0", "-1", "abc", "", "1\\2\\3", "1e-320"]),
        st.integers(-(2**31), 2**31 - 1), st.floats(), st.lists(st.floats(allow_nan=False, width=32), max_size=3),
        st.text(max_size=10)))


DICOM_TAGS = ["RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth", "PixelSpacing", "SliceThickness",
              "NumberOfFrames", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
              "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration", "ImagePositionPatient",
              "ImageOrientationPatient", "InstanceNumber", "VOILUTFunction", "Modality", "SpacingBetweenSlices"]


@st.composite
def mistyped_dicom(draw) -> bytes:
    """A CT slice with some tags set to values of the wrong range or type, or deleted."""
    ds = _dicom_dataset()
    for _ in range(draw(st.integers(1, 3))):
        keyword = draw(st.sampled_from(DICOM_TAGS + ["PixelData", "TransferSyntaxUID", "VOILUTSequence",
                                                     "ModalityLUTSequence"]))
        if draw(st.integers(0, 4)) == 0:
            if keyword in ds:
                delattr(ds, keyword)
            continue
        if keyword == "PixelData":
            ds.PixelData = draw(st.binary(max_size=256))
            continue
        if keyword == "TransferSyntaxUID":
            ds.file_meta.TransferSyntaxUID = draw(st.sampled_from(["1.2.3", "", "1.2.840.10008.1.2.4.50",
                                                                   "1.2.840.10008.1.2.5", "1.2.840.10008.1.2"]))
            continue
        if keyword in ("VOILUTSequence", "ModalityLUTSequence"):  # a lookup table with odd descriptor / data
            item = DicomDataset()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                item.add_new(0x00283002, "US", draw(st.lists(st.integers(0, 2**16 - 1), min_size=3, max_size=3)))
                item.add_new(0x00283006, "US", draw(st.lists(st.integers(0, 2**16 - 1), max_size=8)))  # LUTData
                if keyword == "ModalityLUTSequence":
                    item.ModalityLUTType = "HU"
            setattr(ds, keyword, [item])
            continue
        value = _odd_value(draw)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                setattr(ds, keyword, value)
        except Exception:  # pydicom refuses some values outright (a file cannot hold them)
            continue
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _dicom_bytes(ds)
    except Exception:  # not writable: fall back to the valid file with a garbage tail
        return _dicom_bytes() + draw(st.binary(max_size=32))


@FUZZ
@given(blob=mistyped_dicom())
def test_mistyped_dicom_tags(blob):
    with example_dir() as d:
        p = d / "ct.dcm"
        p.write_bytes(blob)
        _check_volume_reader(p, read_dicom, p.name)


# ------------------------------------------------------------------------------------------------ NIfTI


@pytest.mark.parametrize("key", ["nii", "nii.gz"])
@FUZZ
@given(data=st.data())
def test_corrupted_nifti(key, data):
    name, valid = VALID[key]
    blob = data.draw(corrupted(valid, MAGIC[key]), label="file")
    if key == "nii.gz" and data.draw(st.booleans(), label="inner"):  # corrupt the NIfTI, then gzip it
        blob = gzip.compress(data.draw(corrupted(VALID["nii"][1]), label="inner file"), mtime=0)
    with example_dir() as d:
        p = d / name
        p.write_bytes(blob)
        _check_volume_reader(p, read_nifti, p.name)


NIFTI_FIELDS = {  # header offset, struct format (little-endian NIfTI-1)
    "dim": (40, "8h"), "datatype": (70, "h"), "bitpix": (72, "h"), "pixdim": (76, "8f"), "vox_offset": (108, "f"),
    "scl_slope": (112, "f"), "scl_inter": (116, "f"), "qform_code": (252, "h"), "sform_code": (254, "h"),
    "quatern": (256, "6f"), "srow": (280, "12f"), "magic": (344, "4s"), "sizeof_hdr": (0, "i"), "dim_info": (39, "B"),
}


@st.composite
def mistyped_nifti(draw) -> bytes:
    """The NIfTI with header fields set to odd values (NaN / inf zooms, zero or negative dims, unknown datatype)."""
    data = bytearray(VALID["nii"][1])
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(sorted(NIFTI_FIELDS)))
        offset, fmt = NIFTI_FIELDS[field]
        count = int(fmt[:-1] or 1)
        code = fmt[-1]
        if code == "f":
            values = draw(st.lists(st.floats(width=32) | st.sampled_from([float("nan"), float("inf"), 0.0, -1.0]),
                                   min_size=count, max_size=count))
        elif code == "s":
            values = [draw(st.binary(min_size=4, max_size=4))]
        elif code == "B":
            values = [draw(st.integers(0, 255))]
        elif code == "i":
            values = [draw(st.sampled_from([348, 540, 0, -1, 2**31 - 1]))]
        else:
            values = draw(st.lists(st.one_of(st.integers(-3, 8), st.integers(-(2**15), 2**15 - 1)),
                                   min_size=count, max_size=count))
        struct.pack_into("<" + fmt, data, offset, *values)
    return bytes(data)


@FUZZ
@given(blob=mistyped_nifti(), gz=st.booleans())
def test_mistyped_nifti_header(blob, gz):
    with example_dir() as d:
        p = d / ("mr.nii.gz" if gz else "mr.nii")
        p.write_bytes(gzip.compress(blob, mtime=0) if gz else blob)
        _check_volume_reader(p, read_nifti, p.name)


@FEW
@given(blob=st.one_of(corrupted(VALID["nii.gz"][1], MAGIC["nii.gz"]), mistyped_nifti().map(gzip.compress)),
       labels=st.booleans())
def test_volume_folder_with_corrupted_case(blob, labels):
    """load_volumes over a folder with one good and one corrupted case: the bad one is skipped (not strict)."""
    with example_dir() as d:
        cases = _cases_folder(d / "cases")
        (cases / "mr0.nii.gz").write_bytes(blob)
        (d / "labels.csv").write_bytes(_csv_bytes(LABELS_TABLE))
        params = VolumesParams(path=str(cases), labels=str(d / "labels.csv") if labels else None, image_size=8,
                               cache=False)
        refused_or_sane(lambda: load_volumes(params), "mr0.nii.gz", check=sane_dataset)
        text = describe(cases)  # a folder listing: one line per volume, an unreadable one said so
        assert "mr1.nii: NIfTI" in text and "mr0.nii.gz: " in text
        assert cli_inspect(cases) == 0


# ------------------------------------------------------------------------------------------------ MedMNIST .npz


@FUZZ
@given(compressed=st.booleans(), data=st.data())
def test_corrupted_npz(compressed, data):
    blob = data.draw(corrupted(NPZ[compressed], MAGIC["npz"]), label="file")
    with example_dir() as d:
        p = d / "tiny.npz"
        p.write_bytes(blob)
        refused_or_sane(lambda: load_medmnist(p), p.name, check=sane_dataset)
        refused_or_sane(lambda: describe(p), p.name, check=sane_text)
        cli_inspect(p)


_dtypes = st.sampled_from([np.uint8, np.int8, np.int64, np.uint64, np.float32, np.float64, np.bool_, np.complex64,
                           np.dtype("U3"), np.dtype("S2"), np.dtype([("a", "u1"), ("b", "f4")])])


@st.composite
def odd_array(draw) -> np.ndarray:
    dtype = np.dtype(draw(_dtypes))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=5)))
    n = int(np.prod(shape))
    raw = draw(st.binary(min_size=n * dtype.itemsize, max_size=n * dtype.itemsize))
    arr = np.frombuffer(raw, dtype=np.uint8).view(dtype) if dtype.itemsize else np.zeros(n, dtype)
    return arr.reshape(shape)


@st.composite
def mistyped_npz(draw) -> dict[str, np.ndarray]:
    arrays = _medmnist_arrays()
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(arrays) + ["extra"]))
        op = draw(st.sampled_from(["odd", "odd", "drop", "labels", "shape"]))
        if op == "drop":
            arrays.pop(key, None)
        elif op == "labels":
            arrays[key] = np.full((np.atleast_1d(arrays.get(key, np.zeros(6))).shape[0], 1),
                                  draw(st.sampled_from([-5, -1, 2, 255, 10**6, 2**40, 2**62])), dtype=np.int64)
        elif op == "shape" and key in arrays:
            arrays[key] = arrays[key].reshape(-1)
        else:
            arrays[key] = draw(odd_array())
    return arrays


@FUZZ
@given(arrays=mistyped_npz(), compressed=st.booleans())
def test_mistyped_npz_arrays(arrays, compressed):
    with example_dir() as d:
        p = d / "tiny.npz"
        p.write_bytes(_npz_bytes(arrays, compressed))
        refused_or_sane(lambda: load_medmnist(p), p.name, check=sane_dataset)
        refused_or_sane(lambda: describe(p), p.name, check=sane_text)
        cli_inspect(p)


# ------------------------------------------------------------------------------------------------ manifests


def _check_manifest(d: Path, name: str) -> None:
    p = d / name
    _write(d, IMAGES)
    for strict in (False, True):
        refused_or_sane(lambda: _manifest(p, strict), name, check=sane_dataset)
    refused_or_sane(lambda: describe(p), name, check=sane_text)
    cli_inspect(p)


@FUZZ
@given(blob=st.one_of(corrupted(_jsonl(MANIFEST_ROWS)), mistyped_jsonl(MANIFEST_ROWS)))
def test_corrupted_jsonl_manifest(blob):
    with example_dir() as d:
        (d / "manifest.jsonl").write_bytes(blob)
        _check_manifest(d, "manifest.jsonl")


@pytest.mark.parametrize("suffix, delimiter", [(".csv", ","), (".tsv", "\t")])
@FUZZ
@given(data=st.data())
def test_corrupted_csv_manifest(suffix, delimiter, data):
    valid = _csv_bytes(CSV_TABLE, delimiter)
    blob = data.draw(st.one_of(corrupted(valid), mistyped_csv(CSV_TABLE, delimiter)), label="file")
    with example_dir() as d:
        (d / f"manifest{suffix}").write_bytes(blob)
        _check_manifest(d, f"manifest{suffix}")


@FEW
@given(blob=st.one_of(corrupted(_csv_bytes(LABELS_TABLE)), mistyped_csv(LABELS_TABLE)))
def test_corrupted_volume_labels(blob):
    with example_dir() as d:
        cases = _cases_folder(d / "cases")
        (d / "labels.csv").write_bytes(blob)
        params = VolumesParams(path=str(cases), labels=str(d / "labels.csv"), image_size=8, cache=False)
        refused_or_sane(lambda: load_volumes(params), "labels.csv", check=sane_dataset)


# ------------------------------------------------------------------------------------------------ VQA


@FUZZ
@given(blob=st.one_of(corrupted(json.dumps(VQA_ENTRIES).encode()), mistyped_json(VQA_ENTRIES)),
       which=st.sampled_from(["trainset.json", "testset.json"]))
def test_corrupted_vqa_json(blob, which):
    with example_dir() as d:
        (d / "images").mkdir()
        _write(d / "images", IMAGES)
        (d / "trainset.json").write_text(json.dumps(VQA_ENTRIES))
        (d / "testset.json").write_text(json.dumps(VQA_TEST))
        p = d / which
        p.write_bytes(blob)
        refused_or_sane(lambda: read_vqa_file(p, "en"), which)
        params = VQAParams(path=str(d / "trainset.json"), test_path=str(d / "testset.json"), image_size=8)
        refused_or_sane(lambda: load_vqa(params), which, check=sane_dataset)
        refused_or_sane(lambda: describe(p), which, check=sane_text)
        cli_inspect(p)


@FEW
@given(blob=corrupted(PNG, MAGIC["png"]), strict=st.booleans())
def test_vqa_with_corrupted_image(blob, strict):
    with example_dir() as d:
        (d / "images").mkdir()
        _write(d / "images", IMAGES)
        (d / "images" / "img1.png").write_bytes(blob)
        (d / "trainset.json").write_text(json.dumps(VQA_ENTRIES))
        params = VQAParams(path=str(d / "trainset.json"), image_size=8, strict=strict)
        refused_or_sane(lambda: load_vqa(params), "img1.png", check=sane_dataset)


# ------------------------------------------------------------------------------------------------ image cache


@FEW
@given(data=st.data())
def test_corrupted_cache_entry_is_ignored(data):
    """A damaged cache entry is never an error: the manifest (valid) reads as without a cache."""
    with example_dir() as d:
        _write(d, IMAGES)
        (d / "manifest.jsonl").write_bytes(_jsonl(MANIFEST_ROWS))
        params = ManifestParams(path=str(d / "manifest.jsonl"), cache_dir=str(d / "cache"))
        fresh = load_manifest(params)
        entry = next((d / "cache" / "images").glob("*.npz"))
        entry.write_bytes(data.draw(corrupted(entry.read_bytes(), MAGIC["npz"]), label="entry"))
        again = load_manifest(params)
        for s in ("train", "val", "test"):
            np.testing.assert_array_equal(getattr(again, s).images, getattr(fresh, s).images)


# ------------------------------------------------------------------------------------------------ regressions


def _refused(fn, *fragments: str) -> str:
    """``fn`` raises one DataError line containing every fragment; returns the message."""
    with pytest.raises(DataError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg, msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)
    return msg


@pytest.mark.parametrize("bad", ["x" * 5000, "a/" * 3000 + "img0.png", "img0\x00.png"])
def test_unusable_image_path_is_a_skipped_row(tmp_path, bad):
    """A cell too long for a file name (OSError ENAMETOOLONG) or with a NUL byte (ValueError) is a missing image,
    not a traceback: skipped and counted, or with strict a DataError naming the row."""
    _write(tmp_path, IMAGES)
    rows = [dict(MANIFEST_ROWS[0], image=bad)] + MANIFEST_ROWS[1:]
    (tmp_path / "manifest.jsonl").write_bytes(_jsonl(rows))
    ds = _manifest(tmp_path / "manifest.jsonl", strict=False)
    assert sum(len(s) for s in (ds.train, ds.val, ds.test)) == 3
    assert any("skipped 1 of 4 rows (missing image file)" in n for n in ds.notes), ds.notes
    msg = _refused(lambda: _manifest(tmp_path / "manifest.jsonl", strict=True), "manifest.jsonl entry 0 (line 1)",
                   "cannot name a file")
    assert len(msg) < 1000
    _refused(lambda: read_image(tmp_path / bad, "row 0"), "row 0", "cannot name a file")
    assert "first image unreadable" in describe(tmp_path / "manifest.jsonl")

    (tmp_path / "images").mkdir()
    _write(tmp_path / "images", IMAGES)
    entries = [dict(VQA_ENTRIES[0], image_name=bad)] + VQA_ENTRIES[1:]
    (tmp_path / "trainset.json").write_text(json.dumps(entries))
    ds = load_vqa(VQAParams(path=str(tmp_path / "trainset.json"), image_size=8))
    assert any("skipped 1 questions" in n for n in ds.notes), ds.notes
    _refused(lambda: load_vqa(VQAParams(path=str(tmp_path / "trainset.json"), image_size=8, strict=True)),
             "trainset.json: entry 0", "cannot name a file")


def test_deeply_nested_json_is_refused(tmp_path):
    """json.loads raises RecursionError (not a JSONDecodeError) on very deep nesting."""
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "manifest.jsonl").write_text(json.dumps(MANIFEST_ROWS[0]) + "\n" + deep + "\n")
    _refused(lambda: _manifest(tmp_path / "manifest.jsonl", strict=False), "manifest.jsonl entry 1 (line 2)",
             "nested too deeply")
    (tmp_path / "trainset.json").write_text(deep)
    _refused(lambda: read_vqa_file(tmp_path / "trainset.json"), "trainset.json", "nested too deeply")
    assert cli_inspect(tmp_path / "trainset.json") == 2
    assert cli_inspect(tmp_path / "manifest.jsonl") == 2


def _npy_with_header(header: bytes) -> bytes:
    data = np.zeros((1, 6, 8), np.float32).tobytes()
    header = header.ljust(118) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data


@pytest.mark.parametrize("header, fragment", [
    (b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 6, 8), \x00}", "expected a valid .npy"),  # NUL
    (b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 6, 8", "expected a valid .npy"),  # unclosed
    (b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 0, 8), }", "no pixels"),  # empty: division by 0
    (b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 60000000, 8000), }", "MemoryError"),
])
def test_npy_header_damage(tmp_path, header, fragment):
    p = tmp_path / "image.npy"
    p.write_bytes(_npy_with_header(header))
    _refused(lambda: read_image(p, "row 0"), "row 0", "image.npy", fragment)


def test_npz_renamed_npy_is_refused(tmp_path):
    (tmp_path / "image.npy").write_bytes(NPZ[False])
    _refused(lambda: read_image(tmp_path / "image.npy", "row 0"), "image.npy", "an .npz archive")


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_header_claiming_a_huge_array(tmp_path, compressed):
    """A member whose .npy header claims terabytes: MemoryError from np.load, now a DataError."""
    src = zipfile.ZipFile(io.BytesIO(NPZ[compressed]))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED) as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "train_images.npy":
                data = data.replace(b"(6, 8, 8), }", b"(6000000, 80000, 8), }"[: len(b"(6, 8, 8), }") + 10], 1)
                data = data.replace(b" " * 10 + b"\n", b"\n", 1)  # keep the header length
            out.writestr(info.filename, data)
    p = tmp_path / "tiny.npz"
    p.write_bytes(buf.getvalue())
    _refused(lambda: load_medmnist(p), "tiny.npz", "not a valid .npz archive", "MemoryError")
    assert cli_inspect(p) == 2


def test_npz_odd_arrays_described(tmp_path):
    """describe used len() of 0-d arrays and an axis-1 reduction of 0-d labels; the reader refuses them."""
    arrays = _medmnist_arrays()
    arrays["train_images"], arrays["val_labels"] = np.array(7, np.uint8), np.array(1, np.uint8)
    p = tmp_path / "tiny.npz"
    p.write_bytes(_npz_bytes(arrays, False))
    text = describe(p)
    assert "train: images shape (), labels shape (6, 1) (will not load)" in text
    assert "val: images shape (2, 8, 8), labels shape () (will not load)" in text
    _refused(lambda: load_medmnist(p), "tiny.npz key 'train_images'")


@pytest.mark.parametrize("label", [10**6, 2**62])
def test_huge_label_is_not_a_million_classes(tmp_path, label):
    """An inferred class count from one corrupt label made millions of class names (or ran out of memory)."""
    arrays = _medmnist_arrays()
    arrays["test_labels"] = np.array([[0], [label]], np.int64)
    p = tmp_path / "tiny.npz"
    p.write_bytes(_npz_bytes(arrays, False))
    _refused(lambda: load_medmnist(p), "tiny.npz", f"largest label is {label}")
    _write(tmp_path, IMAGES)
    (tmp_path / "manifest.jsonl").write_bytes(_jsonl([dict(MANIFEST_ROWS[0], label=label)] + MANIFEST_ROWS[1:]))
    _refused(lambda: _manifest(tmp_path / "manifest.jsonl", strict=False), "manifest.jsonl entry 0 (line 1)",
             f"label {label} would make")


def test_mistyped_json_label_described(tmp_path):
    """describe counted labels in a Counter: a JSON object label ({...}) is unhashable."""
    _write(tmp_path, IMAGES)
    (tmp_path / "manifest.jsonl").write_bytes(_jsonl([dict(MANIFEST_ROWS[0], label={"a": 1})] + MANIFEST_ROWS[1:]))
    assert "{'a': 1}: 1" in describe(tmp_path / "manifest.jsonl")
    _refused(lambda: _manifest(tmp_path / "manifest.jsonl", strict=False), "manifest.jsonl entry 0", "label {'a': 1}")


def test_repeated_image_with_given_splits_loads(tmp_path):
    """Rows sharing an image file are grouped; with a split column and no group column the leak warning read
    used['group'] (KeyError) — a valid manifest was refused with a traceback."""
    _write(tmp_path, IMAGES)
    (tmp_path / "manifest.csv").write_bytes(_csv_bytes(CSV_TABLE))
    ds = _manifest(tmp_path / "manifest.csv", strict=True)
    assert any("rows sharing an image file" in n for n in ds.notes), ds.notes


def test_vqa_single_answer_names_the_file(tmp_path):
    (tmp_path / "images").mkdir()
    _write(tmp_path / "images", IMAGES)
    (tmp_path / "trainset.json").write_text(json.dumps([dict(e, answer="yes") for e in VQA_ENTRIES[:2]]))
    _refused(lambda: load_vqa(VQAParams(path=str(tmp_path / "trainset.json"), image_size=8)), "trainset.json",
             "1 distinct answer(s)")


def test_volume_label_error_names_the_label_row(tmp_path):
    cases = _cases_folder(tmp_path / "cases")
    (tmp_path / "labels.csv").write_bytes(b"case,label\nct0,x\nmr0,0\n")
    _refused(lambda: load_volumes(VolumesParams(path=str(cases), labels=str(tmp_path / "labels.csv"), cache=False)),
             "labels.csv row", "expected every label to be of one type")


def _dicom_with(**tags) -> bytes:
    ds = _dicom_dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for keyword, value in tags.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        return _dicom_bytes(ds)


@pytest.mark.parametrize("tags, fragment", [
    ({"RescaleSlope": "nan"}, "rescales to NaN or infinite values"),  # was an all-NaN image
    ({"RescaleSlope": "1e308"}, "rescales to NaN or infinite values"),  # overflow to inf
    ({"Columns": None}, "no Columns attribute"),
    ({"Rows": ""}, "expected two positive integers"),  # empty Rows: int(None) in describe / series
    ({"Rows": 0}, "expected two positive integers"),
])
def test_dicom_bad_values_refused(tmp_path, tags, fragment):
    p = tmp_path / "ct.dcm"
    p.write_bytes(_dicom_with(**tags))
    _refused(lambda: read_dicom(p, "row 0"), "ct.dcm", fragment)
    sane_text(describe(p))  # describe says what it can
    folder = _series_folder(tmp_path / "series")
    (folder / "slice1.dcm").write_bytes(p.read_bytes())
    _refused(lambda: read_dicom_series(folder, "row 0"), "slice1.dcm", fragment)


def test_dicom_nan_window_center_falls_back_to_percentiles(tmp_path):
    p = tmp_path / "ct.dcm"
    p.write_bytes(_dicom_with(WindowCenter="nan"))
    img = read_dicom(p, "row 0")
    sane_image(img)
    assert img.min() == 0.0 and img.max() == 1.0  # the percentile rule, not NaN


def test_dicom_single_pixel_spacing_is_described(tmp_path):
    """PixelSpacing with one value: len() of a DSfloat in volume_info."""
    p = tmp_path / "ct.dcm"
    p.write_bytes(_dicom_with(PixelSpacing="0.7"))
    assert "spacing: not given" in describe(p)
    sane_image(read_dicom(p, "row 0"))


@pytest.mark.parametrize("uid", [b"1.2.3.4", b"garbage", b"1.2.840.10008.1.2\\1"])
def test_dicom_bad_transfer_syntax(tmp_path, uid):
    """A TransferSyntaxUID that is no transfer syntax (another UID, text, two values): ValueError from
    UID.is_compressed, AttributeError from .name / MultiValue."""
    raw = VALID["dcm"][1]
    assert raw.count(b"1.2.840.10008.1.2.1\x00") == 1  # the meta element, 20 bytes
    p = tmp_path / "ct.dcm"
    p.write_bytes(raw.replace(b"1.2.840.10008.1.2.1\x00", uid.ljust(20, b"\x00")))
    refused_or_sane(lambda: read_dicom(p, "row 0"), "ct.dcm", check=sane_image)
    refused_or_sane(lambda: describe(p), "ct.dcm", check=sane_text)
    cli_inspect(p)


def _nifti_patched(field: str, *values) -> bytes:
    data = bytearray(VALID["nii"][1])
    offset, fmt = NIFTI_FIELDS[field]
    struct.pack_into("<" + fmt, data, offset, *values)
    return bytes(data)


@pytest.mark.parametrize("field, values, fragment", [
    ("srow", (2.0, 0.0, 0.0, 0.0, 0.0, float("nan"), 0.0, 0.0, 0.0, 0.0, 3.0, 0.0), None),  # SVD did not converge
    ("dim", (3, 6, -5, 4, 1, 1, 1, 1), "expected every axis of length >= 1"),  # negative axis: broadcast error
    ("dim", (3, 6, 0, 4, 1, 1, 1, 1), "expected every axis of length >= 1"),  # empty: percentile of nothing
])
def test_nifti_bad_header(tmp_path, field, values, fragment):
    p = tmp_path / "mr.nii"
    p.write_bytes(_nifti_patched(field, *values))
    if fragment is None:
        sane_image(read_nifti(p, "row 0"))
        assert "orientation: ???" in describe(p)
    else:
        _refused(lambda: read_nifti(p, "row 0"), "mr.nii", fragment)
        _refused(lambda: describe(p), "mr.nii", fragment)
    assert cli_inspect(p) == (0 if fragment is None else 2)


def test_nifti_degenerate_affine_described(tmp_path):
    """A zero affine leaves the axis codes undefined (None): describe joined them into a string."""
    img = _nifti_image()
    img.set_sform(np.zeros((4, 4)), code=1)
    img.set_qform(None, code=0)
    p = tmp_path / "mr.nii"
    p.write_bytes(img.to_bytes())
    sane_image(read_nifti(p, "row 0"))
    assert "orientation: ???" in describe(p)


@pytest.mark.parametrize("keyword", ["ModalityLUTSequence", "VOILUTSequence"])
def test_dicom_unusable_lookup_table(tmp_path, keyword):
    """A LUT item without LUTData: pydicom's apply_modality_lut / apply_voi raised TypeError (read and describe)."""
    ds = _dicom_dataset()
    item = DicomDataset()
    item.add_new(0x00283002, "US", [4, 0, 16])  # LUTDescriptor: 4 entries from 0, 16 bits; no LUTData
    if keyword == "ModalityLUTSequence":
        item.ModalityLUTType = "HU"
    setattr(ds, keyword, [item])
    p = tmp_path / "ct.dcm"
    p.write_bytes(_dicom_bytes(ds))
    refused_or_sane(lambda: read_dicom(p, "row 0"), "ct.dcm", check=sane_image)
    refused_or_sane(lambda: describe(p), "ct.dcm", check=sane_text)
    cli_inspect(p)
