"""The ``volumes`` data source: a folder of cases (CT / MRI / ultrasound), labels from a CSV.

A case is a file in ``path`` with an image suffix (``.dcm``, ``.nii``, ``.nii.gz``, ``.npy``, PNG/JPEG...) — its id is
the file name without the suffix — or a sub-folder holding one DICOM series (one slice per file) — its id is the
folder name. ``labels`` (optional) is a CSV / JSONL table with one row per case: ``case_column`` (default ``case``)
holds the id and the other roles (label, site, group, split, context) are read as in a manifest
(:mod:`medrobust.data.manifest`, ``data.columns``). Cases without a row are unlabeled (kept for self-supervised
pre-training); rows without a case are counted in the notes. Volumes are read and normalised by
:mod:`medrobust.data.volumes` and fitted to ``data.image_size`` (default 32³) by
:func:`medrobust.data.images.fit_image`.
"""

from __future__ import annotations

from pathlib import Path

from medrobust.data.base import Dataset, DataError
from medrobust.data.images import IMAGE_SUFFIXES, is_dicom, suffix_of
from medrobust.data.manifest import ReadParams, build_dataset
from medrobust.data.table import check_columns, read_rows
from medrobust.registry import register


class VolumesParams(ReadParams):
    """``path``: the folder of cases; ``labels``: the per-case table; ``case_column``: its id column."""

    path: str
    labels: str | None = None
    case_column: str = "case"


def cases(folder: Path) -> dict[str, str]:
    """Case id -> path relative to ``folder`` (files with an image suffix and series sub-folders), sorted."""
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder; expected a folder of volumes (one file or DICOM series folder "
                        "per case)")
    out: dict[str, str] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            case = p.name
        elif suffix_of(p) in IMAGE_SUFFIXES:
            case = p.name[: -len(suffix_of(p))]
        elif is_dicom(p):  # an extension-less DICOM file
            case = p.name
        else:
            continue
        if case in out:
            raise DataError(f"{folder}: case {case!r} appears twice ({out[case]} and {p.name}); expected one file or "
                            "series folder per case")
        out[case] = p.name
    if not out:
        raise DataError(f"{folder}: no volumes found; expected files ending in {', '.join(IMAGE_SUFFIXES)} or DICOM "
                        "series sub-folders")
    return out


@register("data", "volumes")
def load_volumes(params: VolumesParams) -> Dataset:
    """A folder of volumes with an optional label table -> :class:`Dataset` (module docstring)."""
    folder = Path(params.path)
    found = cases(folder)
    notes: list[str] = []
    by_case: dict[str, dict] = {}
    row_of: dict[str, str] = {}  # case -> its row in the label table, for messages
    columns = ["image", params.case_column]
    source = folder
    if params.labels:
        table = Path(params.labels)
        rows, label_columns = read_rows(table)
        check_columns(table, label_columns, {"case": params.case_column}, key="data.case_column")
        for where, fields in rows:
            case = str(fields.get(params.case_column) or "").strip()
            case = case[: -len(suffix_of(case))] if suffix_of(case) in IMAGE_SUFFIXES else case
            if case in by_case:
                raise DataError(f"{where}: case {case!r} repeats an earlier row; expected one row per case")
            by_case[case], row_of[case] = fields, where
        columns += [c for c in label_columns if c not in columns]
        missing = [c for c in by_case if c not in found]
        if missing:
            notes.append(f"{len(missing)} label row(s) have no volume in {folder} (e.g. {', '.join(missing[:3])})")
        source = table
    rows = []
    for i, (case, rel) in enumerate(found.items()):
        fields = {c: None for c in columns} | by_case.get(case, {}) | {"image": rel, params.case_column: case}
        label_row = f"; labels: {row_of[case]}" if case in row_of else ""
        rows.append((f"{folder} case {i} ({case}{label_row})", fields))
    if params.labels:
        unlabeled = sum(c not in by_case for c in found)
        if unlabeled:
            notes.append(f"{unlabeled} of {len(found)} cases have no row in {params.labels} (unlabeled)")
    sized = params if params.image_size is not None else params.model_copy(update={"image_size": 32})
    ds = build_dataset(rows, columns, sized, source, folder.name, folder)
    return ds.replace(notes=tuple(notes) + ds.notes)


load_volumes.Params = VolumesParams  # type: ignore[attr-defined]
