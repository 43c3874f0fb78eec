"""MedMNIST v2 / MedMNIST+ ``.npz`` files read from local disk.

The official files (Yang et al., "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical
image classification", Scientific Data 10, 41, 2023) hold six uint8 arrays: ``train_images``,
``train_labels``, ``val_images``, ``val_labels``, ``test_images``, ``test_labels``. Image layouts:
2D gray ``[N, H, W]``, 2D RGB ``[N, H, W, 3]``, 3D ``[N, D, H, W]``; they become ``[N, 1, H, W]``,
``[N, 3, H, W]`` and ``[N, 1, D, H, W]``. Labels ``[N, 1]`` (single-label) become int64 ``[N]``; ``[N, L]``
(multi-label, ChestMNIST has 14) become int64 ``[N, L]``. Integer label files written by
:func:`medrobust.data.writers.write_npz` may also hold ``-1`` (unlabeled).

The official MD5 of every file, per release (v2, v3) and size (28, 64, 128, 224 px), is in
:data:`OFFICIAL_MD5`; :func:`identify` names the file an MD5 belongs to and :func:`check_md5` writes the
one-line verdict for ``medrobust data inspect``.

Written by hand: the ``medmnist`` package needs torchvision, which cannot be installed here.
"""

from __future__ import annotations

import hashlib
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
MAX_INFERRED_CLASSES = 10_000  # class names made up from the largest label: more is a corrupt label, not a task


@dataclass(frozen=True)
class SubsetInfo:
    """One MedMNIST subset as described by the official ``INFO`` table (medmnist/info.py).

    Attributes:
        task: task kind in this project's words.
        label_names: class names (single-label) or finding names (multilabel).
        channels: 1 (gray) or 3 (RGB).
        spatial_dims: 2 or 3.
        name: the official name (``python_class`` in ``INFO``), e.g. ``"BreastMNIST"``.
    """

    task: TaskKind
    label_names: tuple[str, ...]
    channels: int
    spatial_dims: int
    name: str

    @property
    def md5(self) -> str | None:
        """MD5 of the official 28-px file (``<subset>.npz``) of the newest release (v3); see :data:`OFFICIAL_MD5`
        for every release and size."""
        key = self.name.lower()
        return _MD5_V3[key][0] if key in _MD5_V3 else None


_ORGANS = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left",
           "lung-right", "pancreas", "spleen")

# Copied from the official MedMNIST INFO table (medmnist 2.1.0 / 3.0.2); the MD5s are in OFFICIAL_MD5 below.
#: the imaging modality of each subset (MedMNIST v2 paper, Table 1), which picks its corruption set
SUBSET_MODALITY = {
    "pathmnist": "histology", "chestmnist": "X-ray", "dermamnist": "dermatology", "octmnist": "OCT",
    "pneumoniamnist": "X-ray", "retinamnist": "fundus photography", "breastmnist": "ultrasound",
    "bloodmnist": "microscopy", "tissuemnist": "microscopy", "organamnist": "CT", "organcmnist": "CT",
    "organsmnist": "CT", "organmnist3d": "CT", "nodulemnist3d": "CT", "adrenalmnist3d": "CT",
    "fracturemnist3d": "CT", "vesselmnist3d": "MRI", "synapsemnist3d": "electron microscopy",
}

KNOWN_SUBSETS: dict[str, SubsetInfo] = {
    "pathmnist": SubsetInfo("multiclass", (
        "adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa",
        "cancer-associated stroma", "colorectal adenocarcinoma epithelium"), 3, 2, "PathMNIST"),
    "chestmnist": SubsetInfo("multilabel", (
        "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia", "pneumothorax",
        "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"), 1, 2, "ChestMNIST"),
    "dermamnist": SubsetInfo("multiclass", (
        "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma", "benign keratosis-like lesions",
        "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions"), 3, 2, "DermaMNIST"),
    "octmnist": SubsetInfo("multiclass", (
        "choroidal neovascularization", "diabetic macular edema", "drusen", "normal"), 1, 2, "OCTMNIST"),
    "pneumoniamnist": SubsetInfo("binary", ("normal", "pneumonia"), 1, 2, "PneumoniaMNIST"),
    "retinamnist": SubsetInfo("ordinal", ("0", "1", "2", "3", "4"), 3, 2, "RetinaMNIST"),
    "breastmnist": SubsetInfo("binary", ("malignant", "normal, benign"), 1, 2, "BreastMNIST"),
    "bloodmnist": SubsetInfo("multiclass", (
        "basophil", "eosinophil", "erythroblast",
        "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte", "monocyte",
        "neutrophil", "platelet"), 3, 2, "BloodMNIST"),
    "tissuemnist": SubsetInfo("multiclass", (
        "Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule", "Glomerular endothelial cells",
        "Interstitial endothelial cells", "Leukocytes", "Podocytes", "Proximal Tubule Segments",
        "Thick Ascending Limb"), 1, 2, "TissueMNIST"),
    "organamnist": SubsetInfo("multiclass", _ORGANS, 1, 2, "OrganAMNIST"),
    "organcmnist": SubsetInfo("multiclass", _ORGANS, 1, 2, "OrganCMNIST"),
    "organsmnist": SubsetInfo("multiclass", _ORGANS, 1, 2, "OrganSMNIST"),
    "organmnist3d": SubsetInfo("multiclass", (
        "liver", "kidney-right", "kidney-left", "femur-right", "femur-left", "bladder", "heart", "lung-right",
        "lung-left", "spleen", "pancreas"), 1, 3, "OrganMNIST3D"),
    "nodulemnist3d": SubsetInfo("binary", ("benign", "malignant"), 1, 3, "NoduleMNIST3D"),
    "adrenalmnist3d": SubsetInfo("binary", ("normal", "hyperplasia"), 1, 3, "AdrenalMNIST3D"),
    "fracturemnist3d": SubsetInfo("multiclass", (
        "buckle rib fracture", "nondisplaced rib fracture", "displaced rib fracture"), 1, 3, "FractureMNIST3D"),
    "vesselmnist3d": SubsetInfo("binary", ("vessel", "aneurysm"), 1, 3, "VesselMNIST3D"),
    "synapsemnist3d": SubsetInfo("binary", ("inhibitory synapse", "excitatory synapse"), 1, 3,
                                 "SynapseMNIST3D"),
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


# ---------------------------------------------------------------- official MD5s, per release and size
# Copied from the ``INFO`` table of the official package (github.com/MedMNIST/MedMNIST, medmnist/info.py).
RELEASES: dict[str, str] = {
    "v2.0": "MedMNIST v2 first upload (medmnist 2.0.x, Zenodo record 5208230)",
    "v2": "MedMNIST v2 (medmnist 2.1.0 to 2.2.x, Zenodo record 6496656)",
    "v3": "MedMNIST v3 / MedMNIST+ (medmnist 3.0.x, Zenodo record 10519652; 64/128/224 px added)",
}
"""Release label -> what it is; the labels used in :data:`OFFICIAL_MD5`, oldest first."""

# ``MD5`` of medmnist 2.1.0 (info.py at commit 075a8ad694733171aee4adb9f3bfe136d8facbb7): 28 px only.
_MD5_V2: dict[str, str] = {
    "pathmnist": "a8b06965200029087d5bd730944a56c1",
    "chestmnist": "02c8a6516a18b556561a56cbdd36c4a8",
    "dermamnist": "0744692d530f8e62ec473284d019b0c7",
    "octmnist": "c68d92d5b585d8d81f7112f81e2d0842",
    "pneumoniamnist": "28209eda62fecd6e6a2d98b1501bb15f",
    "retinamnist": "bd4c0672f1bba3e3a89f0e4e876791e4",
    "breastmnist": "750601b1f35ba3300ea97c75c52ff8f6",
    "bloodmnist": "7053d0359d879ad8a5505303e11de1dc",
    "tissuemnist": "ebe78ee8b05294063de985d821c1c34b",
    "organamnist": "866b832ed4eeba67bfb9edee1d5544e6",
    "organcmnist": "0afa5834fb105f7705a7d93372119a21",
    "organsmnist": "e5c39f1af030238290b9557d9503af9d",
    "organmnist3d": "21f0a239e7f502e6eca33c3fc453c0b6",
    "nodulemnist3d": "8755a7e9e05a4d9ce80a24c3e7a256f3",
    "adrenalmnist3d": "bbd3c5a5576322bc4cdfea780653b1ce",
    "fracturemnist3d": "6aa7b0143a6b42da40027a9dda61302f",
    "vesselmnist3d": "2ba5b80617d705141f3f85627108fce8",
    "synapsemnist3d": "1235b78a3cd6280881dd7850a78eadb6",
}

# ``MD5`` of medmnist 2.0.x where it differs from 2.1.0: the first v2 NoduleMNIST3D (test split of 526, later
# 310). The other 17 files of Zenodo 5208230 have the 2.1.0 MD5s. Source: copies of the 2.0.x info.py (one
# marked __version__ "2.0.2"); the official repository's 2.0.x commit was not available to check against.
_MD5_V2_0: dict[str, str] = {
    "nodulemnist3d": "902d495e3d91ad1a7bcac1a6b58a8fa2",
}

# ``MD5``, ``MD5_64``, ``MD5_128``, ``MD5_224`` of medmnist 3.0.2 (info.py at commit
# 3bb56be69bca38e5f105b21e4d6482b91354d3a4); the 3D subsets have 28 and 64 px only.
_V3_SIZES_2D = (28, 64, 128, 224)
_V3_SIZES_3D = (28, 64)
_MD5_V3: dict[str, tuple[str, ...]] = {
    "pathmnist": ("a8b06965200029087d5bd730944a56c1", "55aa9c1e0525abe5a6b9d8343a507616",
                  "ac42d08fb904d92c244187169d1fd1d9", "2c51a510bcdc9cf8ddb2af93af1eadec"),
    "chestmnist": ("02c8a6516a18b556561a56cbdd36c4a8", "9de6cd0b934ebb5b7426cfba5efbae16",
                   "db107e5590b27930b62dbaf558aebee3", "45bd33e6f06c3e8cdb481c74a89152aa"),
    "dermamnist": ("0744692d530f8e62ec473284d019b0c7", "b70a2f5635c6199aeaa28c31d7202e1f",
                   "2defd784463fa5243564e855ed717de1", "8974907d8e169bef5f5b96bc506ae45d"),
    "octmnist": ("c68d92d5b585d8d81f7112f81e2d0842", "e229e9440236b774d9f0dfef9d07bdaf",
                 "0a97e76651ace45c5d943ee3f65b63ae", "abc493b6d529d5de7569faaef2773ba3"),
    "pneumoniamnist": ("28209eda62fecd6e6a2d98b1501bb15f", "8f4eceb4ccffa70c672198ea285246c6",
                       "05b46931834c231683c68f40c47b2971", "d6a3c71de1b945ea11211b03746c1fe1"),
    "retinamnist": ("bd4c0672f1bba3e3a89f0e4e876791e4", "afda852cc34dcda56f86ad2b2457dbcc",
                    "e48e916a24454daf90583d4e6efb1a18", "eae7e3b6f3fcbda4ae613ebdcbe35348"),
    "breastmnist": ("750601b1f35ba3300ea97c75c52ff8f6", "742edef2a1fd1524b2efff4bd7ba9364",
                    "363e4b3f8d712e9b5de15470a2aaadf1", "b56378a6eefa9fed602bb16d192d4c8b"),
    "bloodmnist": ("7053d0359d879ad8a5505303e11de1dc", "2b94928a2ae4916078ca51e05b6b800b",
                   "adace1e0ed228fccda1f39692059dd4c", "b718ff6835fcbdb22ba9eacccd7b2601"),
    "tissuemnist": ("ebe78ee8b05294063de985d821c1c34b", "123ece2eba09d0aa5d698fda57103344",
                    "61b955355d7425a89687b06cca3ce0c2", "b077128c4a949f0a4eb01517f9037b9c"),
    "organamnist": ("68e3f8846a6bd62f0c9bf841c0d9eacc", "2dcccc29b88e6da5a01161ef20cda288",
                    "eeae80d0a227a8d099027e1b3cfd3b60", "50747347e05c87dd3aaf92c49f9f3170"),
    "organcmnist": ("b9ceb9546e10131b32923c5bbeaea2b1", "3ce34a8724ea6f548e6db4744d03b6a9",
                    "773c1f009daa3fe5d9a2a201b2a7ed94", "050f5e875dc056f6768abf94ec9995d1"),
    "organsmnist": ("9ab87b696fb54e2a387ebe992d6ed5f1", "53a6d115339d874c25e309a994ff46d3",
                    "ded0c5fa01a95dc4978b956f613e9b8e", "b354719e553fbbb2513d5533f52a4cb1"),
    "organmnist3d": ("a0c5a1ff56af4f155c46d46fbb45a2fe", "58a2205adf14a9d0a189cb06dc78bf10"),
    "nodulemnist3d": ("8755a7e9e05a4d9ce80a24c3e7a256f3", "c47c5b7d457bf6332200d2ea6d64ecd8"),
    "adrenalmnist3d": ("bbd3c5a5576322bc4cdfea780653b1ce", "17721accfe9fb005146a47d33bc54b2f"),
    "fracturemnist3d": ("6aa7b0143a6b42da40027a9dda61302f", "f01d7e6316aedf4210da0da5b7437b42"),
    "vesselmnist3d": ("b41fd4f7e7e2feedddb201585ecafa1b", "6bb274a8846e1097066dcd64e2c4520f"),
    "synapsemnist3d": ("1235b78a3cd6280881dd7850a78eadb6", "43bd14ebf3af9d3dd072446fedc14d5e"),
}


def _build_official() -> dict[tuple[str, int], dict[str, str]]:
    table: dict[tuple[str, int], dict[str, str]] = {}
    for subset, md5 in _MD5_V2_0.items():
        table.setdefault((subset, 28), {})["v2.0"] = md5
    for subset, md5 in _MD5_V2.items():
        table.setdefault((subset, 28), {})["v2"] = md5
    for subset, md5s in _MD5_V3.items():
        sizes = _V3_SIZES_3D if KNOWN_SUBSETS[subset].spatial_dims == 3 else _V3_SIZES_2D
        if len(md5s) != len(sizes):
            raise AssertionError(f"{subset}: {len(md5s)} v3 MD5s for sizes {sizes}")
        for size, md5 in zip(sizes, md5s):
            table.setdefault((subset, size), {})["v3"] = md5
    return {key: dict(sorted(by_release.items(), key=lambda kv: list(RELEASES).index(kv[0])))
            for key, by_release in table.items()}


OFFICIAL_MD5: dict[tuple[str, int], dict[str, str]] = _build_official()
"""``(subset, size) -> {release: md5}`` for every official file (``<subset>.npz`` is 28 px, ``<subset>_<size>.npz``
the others). A file unchanged between releases is listed once per release; ``v2.0`` appears only where it
differs from ``v2``."""

_BY_MD5: dict[str, tuple[str, int, tuple[str, ...]]] = {}
for (_subset, _size), _by_release in OFFICIAL_MD5.items():
    for _release, _md5 in _by_release.items():
        _s, _z, _r = _BY_MD5.get(_md5, (_subset, _size, ()))
        if (_s, _z) != (_subset, _size):
            raise AssertionError(f"MD5 {_md5} listed for both {_s} {_z} px and {_subset} {_size} px")
        _BY_MD5[_md5] = (_subset, _size, (*_r, _release))
del _subset, _size, _by_release, _release, _md5, _s, _z, _r


def identify(md5: str) -> tuple[str, int, tuple[str, ...]] | None:
    """The official file with this MD5: ``(subset, size, releases)``, e.g.
    ``("breastmnist", 64, ("v3",))``; ``None`` when no official file has it."""
    return _BY_MD5.get(md5.strip().lower())


def expected_md5s(subset: str, size: int = 28) -> dict[str, str]:
    """``{release: md5}`` of the official ``subset`` file at ``size`` px; empty when there is none (an unknown
    subset, 128 px for a 3D subset, 32 px, ...)."""
    return dict(OFFICIAL_MD5.get((subset.lower(), size), {}))


def file_md5(path: str | Path) -> str:
    """The MD5 of a file, read in 1 MiB blocks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _releases(releases: tuple[str, ...] | list[str]) -> str:
    return releases[0] if len(releases) == 1 else ", ".join(releases[:-1]) + " and " + releases[-1]


def _by_md5(by_release: dict[str, str]) -> dict[str, list[str]]:
    """``{release: md5}`` -> ``{md5: [releases]}``, in release order."""
    grouped: dict[str, list[str]] = {}
    for release, md5 in by_release.items():
        grouped.setdefault(md5, []).append(release)
    return grouped


def _official(subset: str, size: int) -> str:
    return f"{KNOWN_SUBSETS[subset].name} {size} px file"


def check_md5(path: str | Path, md5: str | None = None) -> str:
    """One line for ``data inspect``: does the file's MD5 match an official MedMNIST file, and which one?

    The file name (``breastmnist_64.npz``) says which file is expected (no size suffix: 28 px). A mismatch is
    reported as a warning in the line (the file may still load), never raised.

    Args:
        path: the ``.npz`` file.
        md5: its MD5 when already computed (the file is then not read).

    Returns:
        e.g. ``"md5 bbd3... matches the official AdrenalMNIST3D 28 px file (MedMNIST v2 and v3)"``, or
        ``"md5 ... differs from every official breastmnist 64 px file (expected v3: 742e...); the file may be
        modified or truncated"``.

    Raises:
        DataError: the file does not exist (only when ``md5`` is not given).
    """
    path = Path(path)
    if md5 is None:
        if not path.is_file():
            raise DataError(f"{path}: file not found; cannot compute its md5")
        md5 = file_md5(path)
    md5 = md5.strip().lower()
    subset, size = recognise(path)
    size = size or 28
    found = identify(md5)
    if found is not None:
        f_subset, f_size, releases = found
        others = _by_md5({r: m for r, m in OFFICIAL_MD5[(f_subset, f_size)].items() if m != md5})
        line = f"md5 {md5} matches the official {_official(f_subset, f_size)}"
        if others:
            order = list(RELEASES)
            newest = max(order.index(r) for r in releases)

            def verb(rs: list[str]) -> str:  # newer releases "have" another file, older ones "had"
                return ("have" if len(rs) > 1 else "has") if order.index(rs[0]) > newest else "had"

            line += f" of MedMNIST {_releases(releases)} (" + ", ".join(
                f"{_releases(rs)} {verb(rs)} {m}" for m, rs in others.items()) + ")"
        else:
            line += f" (MedMNIST {_releases(releases)})"
        if subset is not None and (subset, size) != (f_subset, f_size):
            line += f", although the file name suggests {subset} {size} px"
        return line
    if subset is None:
        return f"md5 {md5} matches no official MedMNIST file (the file name names no known subset)"
    expected = expected_md5s(subset, size)
    if not expected:
        return f"md5 {md5} matches no official MedMNIST file; MedMNIST publishes no {subset} {size} px file"
    listed = "; ".join(f"{_releases(rs)}: {m}" for m, rs in _by_md5(expected).items())
    return (f"md5 {md5} differs from every official {subset} {size} px file (expected {listed}); "
            "the file may be modified or truncated")


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
    except Exception as err:  # also numpy's header parser (SyntaxError, ...), zipfile (NotImplementedError for an
        # unknown compression method, RuntimeError for an encrypted member) and MemoryError for a header that
        # claims a huge array
        detail = (str(err).strip().splitlines() or ["no details"])[0]
        raise DataError(f"{path}: not a valid .npz archive (corrupt or truncated?): {type(err).__name__}: "
                        f"{detail}") from err


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
        elif kind != "binary" and top >= MAX_INFERRED_CLASSES:
            raise DataError(f"{where}: the largest label is {top}, which would make {top + 1} classes; expected "
                            f"class indices below {MAX_INFERRED_CLASSES} (or give label_names)")
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
    return Dataset(name=path.stem, task=task, site_names=("all",), source=str(path),
                   modality=SUBSET_MODALITY.get(subset) if subset else None, **splits)


load_medmnist.Params = MedMNISTParams  # type: ignore[attr-defined]
