"""DICOM and NIfTI readers (medrobust.data.volumes) and their descriptions: files written here, and the real ones."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import convert_color_space, get_decoder
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

from medrobust.data.base import DataError
from medrobust.data.inspect import describe
from medrobust.data.volumes import (VOLUME_SUFFIXES, read_dicom, read_dicom_series, read_nifti, volume_info,
                                    volume_suffix)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
VOLUMES = SHARED / "volumes"


# ------------------------------------------------------------------------------------------------------ helpers


def percentile_unit(x):
    """The documented fallback normalisation: 0.5th-99.5th percentile to [0, 1], clipped."""
    x = np.asarray(x, np.float64)
    lo, hi = np.percentile(x, [0.5, 99.5])
    return np.clip((x - lo) / (hi - lo), 0, 1)


def dicom_linear(x, center, width):
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window, mapped to [0, 1]."""
    return np.clip((np.asarray(x, np.float64) - (center - 0.5)) / (width - 1) + 0.5, 0, 1)


def write_dicom(path, pixels, *, photometric="MONOCHROME2", modality="CT", ts=ExplicitVRLittleEndian, **tags):
    """A minimal valid DICOM file: ``pixels`` is [H, W], [F, H, W] (gray) or [H, W, 3] / [F, H, W, 3] (colour)."""
    pixels = np.asarray(pixels)
    colour = photometric not in ("MONOCHROME1", "MONOCHROME2")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.SeriesInstanceUID = tags.pop("SeriesInstanceUID", "1.2.3.4")
    frames = pixels.shape[0] if pixels.ndim == (4 if colour else 3) else 1
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = photometric
    if colour:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    for key, value in tags.items():
        setattr(ds, key, value)
    if ts == ExplicitVRLittleEndian:
        ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def ct_image():
    """int16 stored values for HU -1100 .. 1500 (slope 2, intercept -1024)."""
    hu = np.linspace(-1100, 1500, 12 * 10).reshape(12, 10)
    stored = np.round((hu + 1024) / 2).astype(np.int16)
    return stored, stored * 2.0 - 1024


def write_nifti(path, data, affine=None, header=None):
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine, header=header), path)
    return path


def encoded_volume(shape=(4, 5, 6)):
    """Values encoding the voxel index: v[i, j, k] = i + 10 j + 100 k."""
    i, j, k = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return (i + 10 * j + 100 * k).astype(np.int16)


# -------------------------------------------------------------------------------------------------- suffixes


@pytest.mark.parametrize("name, expected", [
    ("a.dcm", ".dcm"), ("A.DCM", ".dcm"), ("x.dicom", ".dcm"), ("b.nii", ".nii"), ("b.NII.GZ", ".nii.gz"),
    ("dir/c.nii.gz", ".nii.gz"), ("c.gz", None), ("d.png", None), ("noext", None), ("e.tar.gz", None)])
def test_volume_suffix(name, expected):
    assert volume_suffix(name) == expected
    assert expected is None or expected in VOLUME_SUFFIXES


# ----------------------------------------------------------------------------------------------------- DICOM


def test_ct_rescale_and_file_window_exact(tmp_path):
    stored, hu = ct_image()
    path = write_dicom(tmp_path / "ct.dcm", stored, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=[40, 300],
                       WindowWidth=[400, 1500])
    out = read_dicom(path, "test")
    assert out.shape == (1, 12, 10) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], dicom_linear(hu, 40, 400), atol=1e-6)  # the first of the two windows
    assert out.min() == 0 and out.max() == 1


def test_window_argument_overrides_file(tmp_path):
    stored, hu = ct_image()
    path = write_dicom(tmp_path / "ct.dcm", stored, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=40,
                       WindowWidth=400)
    out = read_dicom(path, "test", window=(-600, 1600))  # lung window in HU: [-1400, 200]
    np.testing.assert_allclose(out[0], np.clip((hu + 1400) / 1600, 0, 1), atol=1e-6)
    with pytest.raises(DataError, match=r"test: window for .*ct\.dcm must be \(center, width\) with width > 0"):
        read_dicom(path, "test", window=(40, 0))


@pytest.mark.parametrize("function, formula", [
    ("LINEAR_EXACT", lambda x, c, w: np.clip((x - c) / w + 0.5, 0, 1)),
    ("SIGMOID", lambda x, c, w: 1 / (1 + np.exp(-4 * (x - c) / w)))])
def test_voi_lut_function(tmp_path, function, formula):
    stored, hu = ct_image()
    path = write_dicom(tmp_path / "ct.dcm", stored, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=40,
                       WindowWidth=400, VOILUTFunction=function)
    np.testing.assert_allclose(read_dicom(path, "test")[0], formula(hu, 40, 400), atol=1e-6)


def test_voi_lut_table(tmp_path):
    stored = np.arange(20, dtype=np.uint16).reshape(4, 5)
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [10, 5, 16])  # 10 entries, first value mapped 5, 16 bits
    item.add_new("LUTData", "US", [100 * i for i in range(10)])
    path = write_dicom(tmp_path / "lut.dcm", stored, VOILUTSequence=Sequence([item]), WindowCenter=1, WindowWidth=2)
    expected = np.clip(stored.astype(int) - 5, 0, 9) / 9  # the table wins over the window; scaled by its range
    np.testing.assert_allclose(read_dicom(path, "test")[0], expected, atol=1e-6)


def test_no_window_uses_percentiles(tmp_path):
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 4000, (16, 16)).astype(np.uint16)
    path = write_dicom(tmp_path / "mr.dcm", stored, modality="MR")
    np.testing.assert_allclose(read_dicom(path, "test")[0], percentile_unit(stored), atol=1e-6)


def test_constant_image_is_zeros(tmp_path):
    path = write_dicom(tmp_path / "flat.dcm", np.full((4, 4), 7, np.uint16))
    out = read_dicom(path, "test")
    assert out.shape == (1, 4, 4) and not out.any()


def test_monochrome1_inverted_after_window(tmp_path):
    stored, hu = ct_image()
    tags = dict(RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400)
    m2 = read_dicom(write_dicom(tmp_path / "m2.dcm", stored, **tags), "test")
    m1 = read_dicom(write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1", **tags), "test")
    np.testing.assert_allclose(m1[0], 1 - dicom_linear(hu, 40, 400), atol=1e-6)
    np.testing.assert_allclose(m1 + m2, 1, atol=1e-6)


def test_multiframe_is_depth_with_one_window(tmp_path):
    frames = np.stack([np.full((6, 7), 100 * f, np.uint16) + np.arange(7, dtype=np.uint16) for f in range(5)])
    out = read_dicom(write_dicom(tmp_path / "mf.dcm", frames, modality="MR"), "test")
    assert out.shape == (1, 5, 6, 7) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], percentile_unit(frames), atol=1e-6)  # one percentile window over all frames
    assert np.all(np.diff(out[0].mean(axis=(1, 2))) > 0)  # frames kept in file order


def test_enhanced_per_frame_rescale_and_frame_window(tmp_path):
    frames = np.stack([np.arange(30, dtype=np.uint16).reshape(5, 6) for _ in range(3)])
    per_frame = []
    for f in range(3):
        pvt = Dataset()
        pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = 1, -10 * f, "US"
        group = Dataset()
        group.PixelValueTransformationSequence = Sequence([pvt])
        per_frame.append(group)
    voi, measures, shared = Dataset(), Dataset(), Dataset()
    voi.WindowCenter, voi.WindowWidth = 10, 21
    measures.PixelSpacing, measures.SliceThickness = [0.5, 0.25], 3
    shared.FrameVOILUTSequence, shared.PixelMeasuresSequence = Sequence([voi]), Sequence([measures])
    path = write_dicom(tmp_path / "enh.dcm", frames, PerFrameFunctionalGroupsSequence=Sequence(per_frame),
                       SharedFunctionalGroupsSequence=Sequence([shared]))
    out = read_dicom(path, "test")
    values = frames - (10 * np.arange(3))[:, None, None]
    assert out.shape == (1, 3, 5, 6)
    np.testing.assert_allclose(out[0], dicom_linear(values, 10, 21), atol=1e-6)
    info = volume_info(path)
    assert info["value_range"] == (-20.0, 29.0) and info["window"] == (10.0, 21.0)
    assert info["spacing"] == (3.0, 0.5, 0.25) and info["frames"] == 3 and info["read_shape"] == (1, 3, 5, 6)


def test_rgb_single_and_multiframe(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (4, 8, 9, 3), dtype=np.uint8)
    one = read_dicom(write_dicom(tmp_path / "us.dcm", rgb[0], photometric="RGB", modality="US"), "test")
    assert one.shape == (3, 8, 9) and one.dtype == np.float32
    np.testing.assert_allclose(one, rgb[0].transpose(2, 0, 1) / 255, atol=1e-7)
    cine = read_dicom(write_dicom(tmp_path / "cine.dcm", rgb, photometric="RGB", modality="US"), "test")
    np.testing.assert_allclose(cine, rgb[0].transpose(2, 0, 1) / 255, atol=1e-7)  # the first frame


def test_ybr_full_converted_to_rgb(tmp_path):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (8, 9, 3), dtype=np.uint8)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    out = read_dicom(write_dicom(tmp_path / "ybr.dcm", ybr, photometric="YBR_FULL", modality="US"), "test")
    assert out.shape == (3, 8, 9)
    np.testing.assert_allclose(out, rgb.transpose(2, 0, 1) / 255, atol=2.5 / 255)  # round trip rounds


def test_palette_colour(tmp_path):
    index = np.arange(12, dtype=np.uint8).reshape(3, 4)
    lut = {c: (np.arange(256) * k % 65536).astype(np.uint16) for c, k in (("Red", 256), ("Green", 100), ("Blue", 7))}
    tags = {}
    for c, table in lut.items():
        tags[f"{c}PaletteColorLookupTableDescriptor"] = [256, 0, 16]
        tags[f"{c}PaletteColorLookupTableData"] = table.tobytes()
    path = write_dicom(tmp_path / "pal.dcm", index, photometric="MONOCHROME2", **tags)
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.save_as(path, enforce_file_format=True)
    out = read_dicom(path, "test")
    expected = np.stack([lut[c][index] for c in ("Red", "Green", "Blue")]) / 65535
    assert out.shape == (3, 3, 4)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_file_without_preamble(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", np.arange(12, dtype=np.uint16).reshape(3, 4), WindowCenter=6,
                       WindowWidth=11)
    ds = pydicom.dcmread(path)
    del ds.file_meta
    ds.preamble = None
    bare = tmp_path / "bare"
    ds.save_as(bare, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert bare.read_bytes()[128:132] != b"DICM"
    np.testing.assert_allclose(read_dicom(bare, "test")[0], dicom_linear(np.arange(12).reshape(3, 4), 6, 11),
                               atol=1e-6)


def test_no_pixel_data(tmp_path):
    path = tmp_path / "sr.dcm"
    write_dicom(path, np.zeros((2, 2), np.uint16))
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DataError) as err:
        read_dicom(path, "entry 3")
    assert str(err.value) == (f"entry 3: {path} has no pixel data (a DICOM without an image, e.g. a structured "
                              "report); expected an image")
    assert volume_info(path)["note"].startswith("no pixel data") and "no pixel data" in describe(path)


def test_truncated_and_garbage_files(tmp_path):
    good = write_dicom(tmp_path / "good.dcm", ct_image()[0])
    data = good.read_bytes()
    cases = {"head.dcm": data[:100], "half.dcm": data[: len(data) - 100], "text.dcm": b"not a dicom file\n" * 20,
             "empty.dcm": b""}
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(DataError, match="expected a DICOM file") as err:
            read_dicom(path, "where")
        message = str(err.value)
        assert message.startswith(f"where: ") and str(path) in message and "\n" not in message, name
    with pytest.raises(DataError, match=r"where: DICOM file .*missing\.dcm not found"):
        read_dicom(tmp_path / "missing.dcm", "where")


def test_compressed_without_decoder(tmp_path):
    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    from pydicom.encaps import encapsulate

    path = write_dicom(tmp_path / "jls.dcm", np.zeros((4, 4), np.uint16), ts=JPEGLSLossless,
                       PixelData=encapsulate([b"\xff\xd8\xff\xf7" + b"\x00" * 16]))
    with pytest.raises(DataError) as err:
        read_dicom(path, "where")
    message = str(err.value)
    assert "JPEG-LS Lossless" in message and "pyjpegls" in message and str(path) in message
    assert "compressed" in volume_info(path)["note"]


# -------------------------------------------------------------------------------------------- DICOM series


def write_series(folder, n=5, *, normal_sign=1, positions=True, instance=True, shape=(6, 7), seed=0):
    """Slices whose value is 10 * (their rank along the slice normal); files named and numbered out of order."""
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)  # file i holds the slice of rank order[i]
    names = rng.permutation(n)
    iop = [1, 0, 0, 0, normal_sign, 0]  # normal = (0, 0, normal_sign)
    for i, rank in enumerate(order):
        tags = {"PixelSpacing": [0.7, 0.7], "SliceThickness": 2.5}
        if positions:
            tags |= {"ImageOrientationPatient": iop, "ImagePositionPatient": [0, 0, normal_sign * 2.5 * rank]}
        if instance:
            tags["InstanceNumber"] = int(rng.integers(1, 1000)) if positions else int(rank) + 1
        pixels = np.full(shape, 10 * rank, np.uint16) + np.arange(shape[1], dtype=np.uint16)
        name = f"s{names[i]:03d}.dcm" if positions or instance else f"s{rank:03d}.dcm"
        write_dicom(folder / name, pixels, **tags)
    return folder


@pytest.mark.parametrize("normal_sign", [1, -1])
def test_series_ordered_by_position_on_normal(tmp_path, normal_sign):
    folder = write_series(tmp_path / "ser", normal_sign=normal_sign)
    out = read_dicom_series(folder, "test")
    assert out.shape == (1, 5, 6, 7) and out.dtype == np.float32
    expected = np.stack([np.full((6, 7), 10 * r) + np.arange(7) for r in range(5)])
    np.testing.assert_allclose(out[0], percentile_unit(expected), atol=1e-6)  # one window for the whole volume
    info = volume_info(folder)
    assert info["slices"] == 5 and info["order"].startswith("ImagePositionPatient")
    assert info["spacing"] == pytest.approx((2.5, 0.7, 0.7))


def test_series_fallback_instance_number_then_name(tmp_path):
    expected = np.stack([np.full((6, 7), 10 * r) + np.arange(7) for r in range(4)])
    for kind, kwargs in (("instance", dict(positions=False)), ("name", dict(positions=False, instance=False))):
        folder = write_series(tmp_path / kind, n=4, **kwargs)
        np.testing.assert_allclose(read_dicom_series(folder, "test")[0], percentile_unit(expected), atol=1e-6)
        assert volume_info(folder)["order"] == {"instance": "InstanceNumber", "name": "file name"}[kind]


def test_series_window_from_first_slice(tmp_path):
    folder = tmp_path / "ct"
    folder.mkdir()
    for z in range(3):
        write_dicom(folder / f"{z}.dcm", np.full((3, 3), 100 * z, np.int16), RescaleSlope=1, RescaleIntercept=-100,
                    WindowCenter=50 + z, WindowWidth=201, ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
                    ImagePositionPatient=[0, 0, z])
    out = read_dicom_series(folder, "test")
    hu = (100 * np.arange(3) - 100)[:, None, None] * np.ones((3, 3))
    np.testing.assert_allclose(out[0], dicom_linear(hu, 50, 201), atol=1e-6)  # slice 0's window for all


def test_series_errors(tmp_path):
    folder = write_series(tmp_path / "odd")
    write_dicom(folder / "zz_odd.dcm", np.zeros((5, 5), np.uint16), ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
                ImagePositionPatient=[0, 0, 99])
    with pytest.raises(DataError, match=r"test: .*zz_odd\.dcm is 5x5 but the other slices of .* are 6x7"):
        read_dicom_series(folder, "test")
    two = write_series(tmp_path / "two", n=2)
    write_dicom(two / "other.dcm", np.zeros((6, 7), np.uint16), SeriesInstanceUID="9.9")
    with pytest.raises(DataError, match="holds 2 series .*expected the slices of one series"):
        read_dicom_series(two, "test")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="holds no DICOM files"):
        read_dicom_series(empty, "test")
    multi = tmp_path / "multi"
    multi.mkdir()
    write_dicom(multi / "mf.dcm", np.zeros((2, 3, 3), np.uint16))
    with pytest.raises(DataError, match=r"mf\.dcm has 2 frames; a series folder must hold single-frame slices"):
        read_dicom_series(multi, "test")


# ---------------------------------------------------------------------------------------------------- NIfTI


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_axis_order(tmp_path, suffix):
    data = encoded_volume()
    out = read_nifti(write_nifti(tmp_path / f"v{suffix}", data), "test")
    assert out.shape == (1, 6, 5, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], percentile_unit(data.transpose(2, 1, 0)), atol=1e-6)
    inner = out[0, 1:-1, 1:-1, 1:-1]  # away from the clipped extremes: increasing along i (W), j (H) and k (D)
    assert (np.diff(inner, axis=2) > 0).all() and (np.diff(inner, axis=1) > 0).all()
    assert (np.diff(inner, axis=0) > 0).all()
    if suffix == ".nii.gz":
        assert gzip.open(tmp_path / f"v{suffix}").read(4)  # really gzipped


def test_nifti_reoriented_to_ras(tmp_path):
    data = encoded_volume()
    ras = read_nifti(write_nifti(tmp_path / "ras.nii", data), "test")
    las = read_nifti(write_nifti(tmp_path / "las.nii", data, np.diag([-1.0, 1, 1, 1])), "test")
    np.testing.assert_array_equal(las, ras[..., ::-1])  # i flipped back to run toward Right
    swapped = np.array([[0.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])  # voxel i is y, j is x
    out = read_nifti(write_nifti(tmp_path / "swap.nii", data, swapped), "test")
    assert out.shape == (1, 6, 4, 5)
    np.testing.assert_allclose(out[0], percentile_unit(data.transpose(2, 0, 1)), atol=1e-6)
    assert volume_info(tmp_path / "las.nii")["orientation"] == ("L", "A", "S")


def test_nifti_big_endian_and_scaling(tmp_path):
    data = encoded_volume()
    header = nib.Nifti1Header().as_byteswapped(">")
    header.set_data_dtype(">i2")
    big = write_nifti(tmp_path / "big.nii", data, header=header)
    assert nib.load(big).header.endianness == ">" and nib.load(big).get_data_dtype() == np.dtype(">i2")
    little = write_nifti(tmp_path / "little.nii", data)
    np.testing.assert_array_equal(read_nifti(big, "test"), read_nifti(little, "test"))
    info = volume_info(big)
    assert info["endianness"] == "big" and info["dtype"] == ">i2" and info["value_range"] == (0.0, 543.0)
    raw = bytearray(little.read_bytes())
    struct.pack_into("<ff", raw, 112, 2.0, -100.0)  # scl_slope, scl_inter
    little.write_bytes(bytes(raw))
    assert volume_info(little)["value_range"] == (-100.0, 986.0)  # 2 * 543 - 100


def test_nifti_4d_frames(tmp_path):
    data = np.stack([encoded_volume(), 1000 - encoded_volume()], axis=-1)
    path = write_nifti(tmp_path / "func.nii.gz", data)
    np.testing.assert_allclose(read_nifti(path, "t")[0], percentile_unit(data[..., 0].transpose(2, 1, 0)), atol=1e-6)
    np.testing.assert_allclose(read_nifti(path, "t", frame=1)[0], percentile_unit(data[..., 1].transpose(2, 1, 0)),
                               atol=1e-6)
    with pytest.raises(DataError, match=r"t: frame 2 is out of range for .*func\.nii\.gz, which has 2 frames"):
        read_nifti(path, "t", frame=2)
    with pytest.raises(DataError, match="out of range"):
        read_nifti(path, "t", frame=-1)
    three = write_nifti(tmp_path / "3d.nii", encoded_volume())
    with pytest.raises(DataError, match="frame 1 asked of .*3d.nii, which is 3D"):
        read_nifti(three, "t", frame=1)
    info = volume_info(path)
    assert info["frames"] == 2 and info["shape"] == (4, 5, 6, 2) and info["read_shape"] == (1, 6, 5, 4)


def test_nifti_nan_voxels_become_minimum(tmp_path):
    data = encoded_volume().astype(np.float32)
    masked = data.copy()
    masked[0, 0, :] = np.nan
    masked[1, 2, 3] = np.inf
    filled = masked.copy()
    filled[~np.isfinite(filled)] = np.nanmin(masked[np.isfinite(masked)])
    out = read_nifti(write_nifti(tmp_path / "nan.nii", masked), "t")
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0], percentile_unit(filled.transpose(2, 1, 0)), atol=1e-6)
    assert volume_info(tmp_path / "nan.nii")["non_finite"] == 7
    with pytest.raises(DataError, match="no finite voxel"):
        read_nifti(write_nifti(tmp_path / "allnan.nii", np.full((2, 2, 2), np.nan, np.float32)), "t")


def test_nifti_2d_and_constant(tmp_path):
    data = encoded_volume((4, 5, 1))
    out = read_nifti(write_nifti(tmp_path / "slice.nii", data), "t")
    assert out.shape == (1, 5, 4)
    np.testing.assert_allclose(out[0], percentile_unit(data[..., 0].T), atol=1e-6)
    assert volume_info(tmp_path / "slice.nii")["read_shape"] == (1, 5, 4)
    flat = read_nifti(write_nifti(tmp_path / "flat.nii", np.full((3, 3, 3), 5, np.int16)), "t")
    assert flat.shape == (1, 3, 3, 3) and not flat.any()


def test_nifti_bad_files(tmp_path):
    bad = tmp_path / "bad.nii"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(DataError, match=r"w: cannot read .*bad\.nii .*expected a NIfTI file"):
        read_nifti(bad, "w")
    good = write_nifti(tmp_path / "cut.nii", encoded_volume())
    good.write_bytes(good.read_bytes()[:400])
    with pytest.raises(DataError, match=r"w: cannot read the voxels of .*cut\.nii .*expected a complete NIfTI"):
        read_nifti(good, "w")
    with pytest.raises(DataError, match=r"w: NIfTI file .*nope\.nii\.gz not found"):
        read_nifti(tmp_path / "nope.nii.gz", "w")


# ------------------------------------------------------------------------------------------------- describe


def test_describe_dicom_and_series(tmp_path):
    stored, _ = ct_image()
    path = write_dicom(tmp_path / "ct.dcm", stored, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=40,
                       WindowWidth=400, PixelSpacing=[0.5, 0.6], SliceThickness=1.25)
    text = describe(path)
    assert "shape: (12, 10)" in text and "reads as (1, 12, 10)" in text and "modality: CT" in text
    assert "spacing: 0.5 x 0.6 mm; slice thickness 1.25 mm" in text and "center 40, width 400" in text
    assert f"value range: {stored.min() * 2 - 1024:g} .. {stored.max() * 2 - 1024:g} (after rescale)" in text
    folder = write_series(tmp_path / "series")
    text = describe(folder)
    assert "DICOM series folder: 5 slices, stacked shape (1, 5, 6, 7)" in text and "ordered by ImagePosition" in text
    assert "spacing: 2.5 x 0.7 x 0.7 mm" in text


def test_describe_folder_of_volumes(tmp_path):
    write_nifti(tmp_path / "a.nii.gz", encoded_volume())
    write_nifti(tmp_path / "b.nii", encoded_volume((3, 3, 3)))
    write_dicom(tmp_path / "c.dcm", np.zeros((4, 4, 3), np.uint8), photometric="RGB", modality="US")
    (tmp_path / "broken.nii").write_bytes(b"xx")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "sub").mkdir()
    text = describe(tmp_path)
    assert f"{tmp_path} (folder: 5 files, 1 subfolders)" in text
    assert "files by type: .nii: 2, .nii.gz: 1, .dcm: 1, .txt: 1" in text and "subfolders: sub" in text
    assert "a.nii.gz: NIfTI, shape (4, 5, 6) -> (1, 6, 5, 4), spacing 1 x 1 x 1" in text
    assert "c.dcm: DICOM, US, shape (4, 4, 3) -> (3, 4, 4)" in text and "not one DICOM series" in text
    assert "broken.nii: unreadable: " in text and "expected a NIfTI file" in text


def test_describe_nifti(tmp_path):
    header = nib.Nifti1Header().as_byteswapped(">")
    header.set_data_dtype(">i2")
    path = write_nifti(tmp_path / "v.nii", encoded_volume(), np.diag([-1.5, 2, 3, 1]), header=header)
    text = describe(path)
    assert "shape: (4, 5, 6) (raw, dtype >i2); reads as (1, 6, 5, 4)" in text and "big-endian" in text
    assert "spacing (zooms): 1.5 x 2 x 3" in text and "orientation: LAS" in text and "value range: 0 .. 543" in text


def test_describe_csv(tmp_path):
    path = tmp_path / "t.csv"
    rows = ["image,label,site,age,note"] + [f"img{i}.png,{'yes' if i % 3 else 'no'},{'AB'[i % 2]},{20 + i},"
                                             + ("x" if i == 0 else "") for i in range(30)]
    path.write_text("\n".join(rows) + "\n3.png,no\n")
    text = describe(path)
    assert text.splitlines()[0] == f"{path} (CSV table, 31 rows, 5 columns, comma-separated)"
    assert "columns: image, label, site, age, note" in text
    assert "  label: 31 non-empty; 2 distinct: 'yes' (20), 'no' (11)" in text
    assert "  site: 30 non-empty; 2 distinct: 'A' (15), 'B' (15)" in text
    assert "  age: 30 non-empty; numeric 20 .. 49; 30 distinct values" in text
    assert "  note: 1 non-empty; 1 distinct: 'x' (1)" in text
    assert "rows with a different number of fields than the header: 1 (first at line 32)" in text
    semi = tmp_path / "s.csv"
    semi.write_text("a;b\n1;2\n3;4\n")
    assert "(CSV table, 2 rows, 2 columns, semicolon-separated)" in describe(semi)
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty CSV"):
        describe(empty)


def test_describe_unsupported_lists_all(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"")
    with pytest.raises(DataError) as err:
        describe(path)
    for suffix in (".npz", ".jsonl", ".json", ".csv", ".dcm", ".dicom", ".nii", ".nii.gz", "folders"):
        assert suffix in str(err.value)


# ------------------------------------------------------------------------------------------------ real files

REAL = [  # (relative path, shape it reads to, modality, spacing shown by describe)
    ("pydicom/CT_small.dcm", (1, 128, 128), "CT", "spacing: 0.6615 x 0.6615 mm"),
    ("pydicom/MR_small.dcm", (1, 64, 64), "MR", "spacing: 0.3125 x 0.3125 mm"),
    ("pydicom-data/emri_small.dcm", (1, 10, 64, 64), "MR", "slice thickness 1.2 mm"),
    ("pydicom-data/eCT_Supplemental.dcm", (1, 2, 512, 512), "CT", "spacing: 10 x 0.3887 x 0.3887 mm"),
    ("pydicom-data/MR2_UNCR.dcm", (1, 1024, 1024), "MR", "spacing: 0.1953 x 0.1953 mm"),
    ("pydicom-data/US1_UNCR.dcm", (3, 480, 640), "US", "spacing: not given"),
    ("nibabel/anatomical.nii", (1, 25, 41, 33), None, "spacing (zooms): 2 x 2 x 2"),
    ("nibabel/functional.nii", (1, 3, 21, 17), None, "spacing (zooms): 4 x 4 x 8 x 2"),
    ("nibabel/example4d.nii.gz", (1, 24, 96, 128), None, "spacing (zooms): 2 x 2 x 2.2 x 2000"),
    ("nibabel/someones_anatomy.nii.gz", (1, 56, 67, 57), None, "spacing (zooms): 2.75 x 2.75 x 2.75"),
    ("nibabel/someones_epi.nii.gz", (1, 33, 61, 53), None, "spacing (zooms): 3 x 3 x 3"),
]


@pytest.mark.parametrize("name, shape, modality, spacing", REAL, ids=[r[0] for r in REAL])
def test_real_volume(name, shape, modality, spacing):
    path = VOLUMES / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    out = read_dicom(path, "real") if volume_suffix(path) == ".dcm" else read_nifti(path, "real")
    assert out.shape == shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1 and out.std() > 0.01
    assert np.isfinite(out).all()
    text = describe(path)
    raw = volume_info(path)["shape"]
    assert f"shape: {tuple(raw)}" in text and f"reads as {shape}" in text and spacing in text
    assert (f"modality: {modality}," in text) if modality else "modality: not recorded in NIfTI" in text


def test_real_enhanced_ct_functional_groups():
    path = VOLUMES / "pydicom-data/eCT_Supplemental.dcm"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    info = volume_info(path)  # rescale intercept -1024 and the window live in the shared functional groups
    assert info["value_range"] == (-1024.0, 172.0) and info["window"] == (49.0, 102.0)
    assert info["spacing"] == (10.0, 0.388672, 0.388672)


def test_real_big_endian_nifti_and_ct_window():
    anatomical, ct = VOLUMES / "nibabel/anatomical.nii", VOLUMES / "pydicom/CT_small.dcm"
    if not anatomical.is_file() or not ct.is_file():
        pytest.skip("real volumes not present")
    info = volume_info(anatomical)
    assert info["endianness"] == "big" and info["dtype"] == ">i2" and info["orientation"] == ("L", "A", "S")
    hu = pydicom.dcmread(ct).pixel_array * 1.0 - 1024  # CT_small: slope 1, intercept -1024
    np.testing.assert_allclose(read_dicom(ct, "real", window=(40, 400))[0], np.clip((hu + 160) / 400, 0, 1),
                               atol=1e-6)
