"""The ``volumes`` data source: a folder of NIfTI / DICOM cases (files and series folders) with a label CSV."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SHARED_DATA
from medrobust.data.base import DataError
from medrobust.data.volume_folder import VolumesParams, cases, load_volumes


def nifti(path, array):
    import nibabel as nib

    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))


def dicom_series(folder, volume):
    """One single-frame CT DICOM per slice, written in reverse order (the reader sorts by position)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir()
    series = generate_uid()
    for z in reversed(range(volume.shape[0])):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID, series
        ds.Modality, ds.InstanceNumber = "CT", z + 1
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, float(z)], [1, 0, 0, 0, 1, 0]
        ds.Rows, ds.Columns = volume.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = volume[z].astype(np.int16).tobytes()
        pydicom.dcmwrite(folder / f"slice{z:03d}.dcm", ds, enforce_file_format=True)


def test_folder_of_nifti_files_and_a_dicom_series_with_labels(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cases"
    folder.mkdir()
    for i in range(6):
        nifti(folder / f"case{i}.nii.gz", rng.normal(size=(10, 12, 8)).astype(np.float32) + i)
    ramp = np.arange(8)[:, None, None] * np.ones((1, 6, 6)) * 100  # slice z has value 100 z
    dicom_series(folder / "case6", ramp)
    (folder / "notes.txt").write_text("not a case")
    labels = tmp_path / "labels.csv"
    labels.write_text("case,diagnosis,hospital\n" + "".join(f"case{i},{['benign', 'malignant'][i % 2]},H{i % 2}\n"
                                                        for i in range(7) if i != 3) + "case9,benign,H0\n")
    assert list(cases(folder)) == [f"case{i}" for i in range(7)]
    ds = load_volumes(VolumesParams(path=str(folder), labels=str(labels), split_fractions=(1.0, 0.0, 0.0),
                                    columns={"label": "diagnosis", "site": "hospital"}, image_size=16))
    tr = ds.train
    assert len(tr) == 7 and ds.image_shape == (1, 16, 16, 16) and tr.images.dtype == np.float32
    assert ds.task.label_names == ("benign", "malignant") and ds.site_names == ("H0", "H1", "unknown")
    assert tr.labels.tolist().count(-1) == 1  # case3 has no label row: unlabeled, kept for pre-training
    assert any("1 label row(s) have no volume" in n and "case9" in n for n in ds.notes)
    assert any("1 of 7 cases have no row" in n for n in ds.notes)
    assert 0.0 <= tr.images.min() and tr.images.max() <= 1.0
    series = tr.images[6][0]  # case6 (cases in name order): the DICOM series, sorted by z
    profile = series[:, 8, 8]
    inside = profile[profile > 0]
    assert np.all(np.diff(inside) >= -1e-6)  # intensity rises with z: slices were stacked in position order


def test_bad_folders_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match=r"nothere: not a folder; expected a folder of volumes"):
        load_volumes(VolumesParams(path=str(tmp_path / "nothere")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no volumes found"):
        load_volumes(VolumesParams(path=str(tmp_path / "empty")))
    folder = tmp_path / "c"
    folder.mkdir()
    nifti(folder / "a.nii", np.ones((4, 4, 4), np.float32))
    labels = tmp_path / "l.csv"
    labels.write_text("id,label\na,1\n")
    with pytest.raises(DataError, match=r"l\.csv: data\.case_column\.case names column 'case', which the file lacks; "
                                        r"its columns are: 'id', 'label'"):
        load_volumes(VolumesParams(path=str(folder), labels=str(labels)))


@pytest.mark.skipif(not (SHARED_DATA / "volumes" / "nibabel").is_dir(), reason="../shared/data/volumes absent")
def test_real_nifti_files_read_as_a_volumes_folder(tmp_path):
    folder = tmp_path / "real"
    folder.mkdir()
    for name in ("anatomical.nii", "someones_anatomy.nii.gz", "someones_epi.nii.gz", "example4d.nii.gz"):
        (folder / name).symlink_to(SHARED_DATA / "volumes" / "nibabel" / name)
    ds = load_volumes(VolumesParams(path=str(folder), split_fractions=(1.0, 0.0, 0.0)))
    assert len(ds.train) == 4 and ds.image_shape == (1, 32, 32, 32)  # the 3D default size
    assert all(float(v.max()) > 0.5 for v in ds.train.images)  # each volume normalised, none blank
