"""The ``vqa`` data source: a medical VQA set (VQA-RAD, SLAKE, or a synthetic one) as a classification data set.

Protocol (answer classification, as the medical VQA literature scores VQA-RAD and SLAKE): **one row per
question**.

    images: the question's image, read once per distinct file (:func:`medrobust.data.images.read_image`) and
        fitted to ``image_size`` / ``channels`` / ``resize`` (:func:`medrobust.data.images.fit_image`);
        ``channels`` None: 1 when every image is gray (:func:`~medrobust.data.images.is_gray`), else 3. uint8
        unless some image is float (then all float32 in [0, 1]).
    indications and texts: the question (the text the downstream image+text classifier sees with the image, and
        the text of image-text pre-training).
    labels: the index of the question's normalised answer (:func:`medrobust.data.vqa.normalize_answer`) in
        ``task.label_names``: the distinct answers of the **training** questions, sorted. A val / test question
        whose answer is not among them gets ``-1`` and ``extras["unseen_answer"] = True``: no class can match it,
        so it is not scored, and the study counts it as wrong in its accuracies over all / CLOSED / OPEN
        questions (:func:`medrobust.evaluation.robustness._subgroup`; a model can never be "right" on it).
    task: ``Task("multiclass", label_names)``.
    extras["answer_type"]: int64, 0 = CLOSED, 1 = OPEN.
    groups: one id per distinct image file (the same id in every split); the questions about one image stay
        together when this source splits, and when the study splits off label fractions.
    sites: files have no hospital: ``site_names == ("all",)``. The synthetic set keeps its sites ``A``-``D``, so
        ``data.holdout_sites`` works.

Splits of files: ``path`` is the training json; ``test_path`` (default: a seeded split of the training images,
``split_fractions[1]`` of them with all their questions) and ``val_path`` (default: ``val_fraction`` of the
remaining training images, seeded) are files of their own otherwise. Image names are relative to ``images_dir``
(default: ``images/`` beside ``path`` (VQA-RAD), else ``imgs/`` (SLAKE), else the json's folder; a relative
``images_dir`` is relative to the training json's folder, as a manifest's is to the manifest's).

A question whose image file is missing is skipped and counted (the first 3 files named in the notes);
``strict: true`` makes it a :class:`~medrobust.data.base.DataError` naming the file and the entry index.

``path: null`` (the default) builds a synthetic VQA set in memory (:func:`medrobust.data.vqa.generate_vqa` on
every split of :func:`medrobust.data.synthetic.load_synthetic`), so a config runs with no download; its images
keep the synthetic size (``synthetic.image_size``). :func:`write_vqa_folder` writes such a set in VQA-RAD's
file layout to try the file path.

``Dataset.notes`` say: how many questions (rows) each split has and on how many images; where val and test came
from; how many questions were dropped by ``language`` and skipped for a missing image; how many val / test
questions have an answer unseen in training (and that they count as wrong); how many test images also have
training questions (VQA-RAD's own test set asks about training images).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medrobust.data.base import UNLABELED, DataError, Dataset, Split, Task
from medrobust.data.vqa import ANSWER_TYPES, VQAFile, generate_vqa, image_indices, image_names_for, normalize_answer
from medrobust.data.vqa import read_vqa_file, write_vqa_json
from medrobust.registry import register

SPLITS = ("train", "val", "test")
_TEST_STREAM, _VAL_STREAM = 0, 1  # purposes of the seeded split streams


class SyntheticVQAParams(BaseModel):
    """The synthetic data the VQA questions are generated from (``path: null``)."""

    model_config = ConfigDict(extra="forbid")
    n_per_site: int = Field(300, ge=9, description="images per site (train/val/test = 2/3, 1/9, 2/9)")
    image_size: int = Field(28, ge=28, description="side of the square synthetic images")
    seed: int = Field(0, description="data seed; also seeds the question draw")


class VQAParams(BaseModel):
    """Parameters of the ``vqa`` data source (module docstring).

    Attributes:
        path: the training json (VQA-RAD ``trainset.json``, SLAKE ``train.json``); None: synthetic questions.
        test_path: the test json; None: ``split_fractions[1]`` of the training images (seeded, by image).
        val_path: the validation json; None: ``val_fraction`` of the (remaining) training images (seeded, by image).
        images_dir: the folder image names are relative to (default: module docstring).
        language: keep the questions whose ``q_lang`` is this (entries without ``q_lang`` are kept); None keeps all.
        image_size: side of the square images the files are fitted to.
        channels: 1 or 3; None: 1 when every image is gray, else 3.
        resize: ``pad`` (whole image, black borders) or ``crop`` (centre crop), as :func:`fit_image`.
        strict: a missing image file is an error instead of a skipped, counted question.
        split_fractions: (train, test) fractions of the training images when ``test_path`` is None.
        val_fraction: fraction of the training images held out for validation when ``val_path`` is None.
        split_seed: seed of those splits.
        modality: e.g. ``"X-ray"``, ``"CT"``, ``"MRI"``: stored as ``Dataset.modality`` (picks corruptions).
        synthetic: the synthetic set built when ``path`` is None.
    """

    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    test_path: str | None = None
    val_path: str | None = None
    images_dir: str | None = None
    language: str | None = "en"
    image_size: int = Field(64, ge=1)
    channels: Literal[1, 3] | None = None
    resize: Literal["pad", "crop"] = "pad"
    strict: bool = False
    split_fractions: tuple[float, float] = (0.8, 0.2)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    split_seed: int = 0
    modality: str | None = None
    synthetic: SyntheticVQAParams = SyntheticVQAParams()

    @field_validator("split_fractions")
    @classmethod
    def _fractions(cls, v: tuple[float, float]) -> tuple[float, float]:
        if min(v) < 0 or v[0] <= 0 or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"split_fractions {v} must be (train, test) fractions, train > 0, summing to 1")
        return v

    @model_validator(mode="after")
    def _files_need_path(self) -> "VQAParams":
        given = [k for k in ("test_path", "val_path", "images_dir") if getattr(self, k) is not None]
        if self.path is None and given:
            raise ValueError(f"{', '.join(given)} given without path; set path to the training json (or drop "
                             f"{', '.join(given)} for the synthetic set)")
        return self


# ---------------------------------------------------------------- splitting and rows


def _share(n: int, fraction: float) -> int:
    """``round(fraction * n)`` (halves up), kept in ``[1, n - 1]`` when ``fraction > 0`` and ``n >= 2``."""
    if fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, math.floor(fraction * n + 0.5)))


def split_off(images: list[str], fraction: float, seed: int, stream: int) -> set[str]:
    """The seeded ``fraction`` (:func:`_share`) of the distinct ``images`` split off, as a set of names."""
    distinct = sorted(set(images))
    rng = np.random.default_rng([int(seed) % 2**64, stream])
    order = rng.permutation(len(distinct))
    return {distinct[i] for i in order[: _share(len(distinct), fraction)]}


class _Part:
    """The questions of one split: entries, their entry positions, and which json they came from."""

    def __init__(self, entries: list[dict], indices: list[int], files: list[Path]):
        self.entries, self.indices, self.files = entries, indices, files

    @classmethod
    def of(cls, f: VQAFile) -> "_Part":
        return cls(list(f.entries), list(f.indices), [f.path] * len(f.entries))

    def where(self, k: int) -> str:
        return f"{self.files[k]}: entry {self.indices[k]}"

    def select(self, keep: list[bool]) -> "_Part":
        pick = [k for k, ok in enumerate(keep) if ok]
        return _Part([self.entries[k] for k in pick], [self.indices[k] for k in pick], [self.files[k] for k in pick])

    def __len__(self) -> int:
        return len(self.entries)


def _labels(parts: dict[str, list[dict]], source: str = "vqa") -> tuple[Task, dict[str, np.ndarray], dict[str, int]]:
    """Task, int64 labels per split and the count of unseen answers per split (module docstring)."""
    answers = sorted({normalize_answer(e["answer"]) for e in parts["train"]})
    index = {a: i for i, a in enumerate(answers)}
    unseen = {s: sum(normalize_answer(e["answer"]) not in index for e in parts[s]) for s in SPLITS}
    names = tuple(answers)
    labels = {s: np.array([index.get(normalize_answer(e["answer"]), UNLABELED) for e in parts[s]],
                          dtype=np.int64) for s in SPLITS}
    try:
        task = Task("multiclass", names)
    except DataError as err:
        raise DataError(f"{source}: the training questions have {len(answers)} distinct answer(s) {answers[:5]}; "
                        f"expected at least 2 classes ({err})") from None
    return task, labels, unseen


def _answer_types(entries: list[dict]) -> np.ndarray:
    return np.array([ANSWER_TYPES.index(e["answer_type"]) for e in entries], dtype=np.int64)


def _unseen_notes(unseen: dict[str, int], sizes: dict[str, int]) -> list[str]:
    notes = []
    for s in ("val", "test"):
        if sizes[s]:
            u = unseen[s]
            notes.append(f"{u} of {sizes[s]} {s} questions ({100.0 * u / sizes[s]:.1f}%) have an answer not seen in "
                         f"training" + (": no answer class can match them, so they are not scored and count as "
                                        "wrong in the accuracy over all questions" if u else ""))
    return notes


# ---------------------------------------------------------------- images


def default_images_dir(path: Path) -> Path:
    """``images/`` beside the json (VQA-RAD) when it exists, else ``imgs/`` (SLAKE), else the json's folder."""
    for name in ("images", "imgs"):
        if (path.parent / name).is_dir():
            return path.parent / name
    return path.parent


def _read_images(parts: dict[str, _Part], images_dir: Path, params: VQAParams
                 ) -> tuple[dict[Path, np.ndarray], dict[Path, int]]:
    """Every distinct image file, read once and fitted; and its group id (order of first use)."""
    from medrobust.data.images import fit_image, is_gray, read_image, target_shape

    table: dict[Path, np.ndarray] = {}
    first: tuple[str, Path, int] | None = None  # where, file, spatial dims of the first image
    gray = True
    for part in parts.values():
        for k, e in enumerate(part.entries):
            file = images_dir / e["image_name"]
            if file in table:
                continue
            where = part.where(k)
            img = read_image(file, where, draft=params.image_size)
            if first is None:
                first = (where, file, img.ndim - 1)
            elif img.ndim - 1 != first[2]:
                raise DataError(f"{where}: image {file} is {img.ndim - 1}D but {first[1]} ({first[0]}) is "
                                f"{first[2]}D; expected one kind of image")
            gray = gray and is_gray(img)
            table[file] = fit_image(img, target_shape(params.image_size, img.ndim - 1), None, params.resize)
    channels = params.channels or (1 if gray else 3)
    any_float = any(a.dtype == np.float32 for a in table.values())
    for file, img in table.items():
        img = fit_image(img, None, channels)
        table[file] = img.astype(np.float32) / 255.0 if any_float and img.dtype == np.uint8 else img
    return table, {file: g for g, file in enumerate(table)}


def _missing(part: _Part, images_dir: Path, strict: bool) -> tuple[_Part, list[tuple[str, Path]]]:
    """``part`` without the questions whose image file does not exist, and those ``(where, file)``."""
    from medrobust.data.images import short_path, unusable_path

    keep, missing = [], []
    for k, e in enumerate(part.entries):
        file = images_dir / e["image_name"]
        reason = unusable_path(file)  # a NUL byte or a name too long: no such file can exist
        ok = reason is None and file.exists()
        if not ok:
            if strict:
                what = f"{file} not found" if reason is None else f"{short_path(file)} cannot name a file ({reason})"
                raise DataError(f"{part.where(k)}: image file {what} (image_name {short_path(e['image_name'])} "
                                f"under images_dir {images_dir}); expected the file, or strict: false to skip "
                                "such questions")
            missing.append((part.where(k), file))
        keep.append(ok)
    return part.select(keep), missing


# ---------------------------------------------------------------- the source


@register("data", "vqa")
def load_vqa(params: VQAParams | str | Path | None = None) -> Dataset:
    """A VQA set as a one-row-per-question classification data set (module docstring).

    Args:
        params: :class:`VQAParams`, the path of the training json, or None (the synthetic set).

    Raises:
        DataError: a bad json (naming the file and entry), a missing image with ``strict``, an unreadable image,
            no training question left, or fewer than 2 training answers.
    """
    if params is None or isinstance(params, (str, Path)):
        params = VQAParams(path=None if params is None else str(params))
    if params.path is None:
        return _synthetic(params)
    return _files(params)


def _files(params: VQAParams) -> Dataset:
    path = Path(params.path)
    images_dir = path.parent / params.images_dir if params.images_dir is not None else default_images_dir(path)
    files = {"train": read_vqa_file(path, params.language)}
    for s, p in (("val", params.val_path), ("test", params.test_path)):
        if p is not None:
            files[s] = read_vqa_file(p, params.language)
    parts: dict[str, _Part] = {}
    missing: list[tuple[str, Path]] = []
    for s, f in files.items():
        parts[s], lost = _missing(_Part.of(f), images_dir, params.strict)
        missing += lost
    notes = []
    train = parts["train"]
    if not len(train):
        raise DataError(f"{path}: no training question has an image file under {images_dir} (e.g. "
                        f"{missing[0][1] if missing else '-'}); expected images_dir to hold the images")
    for s, p, fraction, stream, what in (("test", params.test_path, params.split_fractions[1], _TEST_STREAM,
                                          f"split_fractions[1]={params.split_fractions[1]:g}"),
                                         ("val", params.val_path, params.val_fraction, _VAL_STREAM,
                                          f"val_fraction={params.val_fraction:g}")):
        if p is None:
            names = [e["image_name"] for e in train.entries]
            off = split_off(names, fraction, params.split_seed, stream)
            parts[s] = train.select([n in off for n in names])
            train = train.select([n not in off for n in names])
            notes.append(f"{s}: {len(off)} of the {len(set(names))} images of {path.name} ({what}, seeded by "
                         f"split_seed={params.split_seed}; an image's questions stay together)")
        else:
            notes.append(f"{s}: {Path(p).name}")
    parts["train"] = train
    table, group_of = _read_images(parts, images_dir, params)
    rows = {}
    for s in SPLITS:
        part = parts[s]
        keys = [images_dir / e["image_name"] for e in part.entries]
        rows[s] = ([table[f] for f in keys], np.zeros(len(part), dtype=np.int64),
                   np.array([group_of[f] for f in keys], dtype=np.int64))
    dropped = {f.path.name: f.dropped_language for f in files.values() if f.dropped_language}
    if dropped:
        notes.append(f"language {params.language!r}: dropped {sum(dropped.values())} of "
                     f"{sum(f.n_read for f in files.values())} questions whose q_lang differs ("
                     + ", ".join(f"{k}: {v}" for k, v in dropped.items()) + ")")
    if missing:
        shown = ", ".join(str(f.relative_to(images_dir)) if f.is_relative_to(images_dir) else str(f)
                          for f in list(dict.fromkeys(f for _, f in missing))[:3])
        n_files = len({f for _, f in missing})
        notes.append(f"skipped {len(missing)} questions whose image file is missing: {n_files} files not found "
                     f"under {images_dir} (first: {shown}); strict: true makes this an error")
    train_groups = set(rows["train"][2].tolist())
    shared = {int(g) for g in rows["test"][2]} & train_groups
    if shared:
        notes.append(f"{len(shared)} of the {len(set(rows['test'][2].tolist()))} test images also have training "
                     "questions (the files' own split)")
    name = path.parent.name or path.stem
    source = f"vqa({path}" + "".join(f", {k}={v}" for k, v in (("val", params.val_path), ("test", params.test_path))
                                      if v is not None) + ")"
    return _dataset(name, source, {s: parts[s].entries for s in SPLITS}, rows, ("all",), notes, params.modality)


def _synthetic(params: VQAParams) -> Dataset:
    from medrobust.data.synthetic import SyntheticParams, load_synthetic

    sp = params.synthetic
    ds = load_synthetic(SyntheticParams(n_per_site=sp.n_per_site, image_size=sp.image_size, seed=sp.seed))
    entries, rows, offset = {}, {}, 0
    for s in SPLITS:
        split = getattr(ds, s)
        names = image_names_for(split, ds.site_names)
        entries[s] = generate_vqa(split, names, seed=sp.seed)
        idx = image_indices(entries[s], names, where=f"synthetic vqa {s}")
        rows[s] = (split.images[idx], split.sites[idx], offset + idx)
        offset += len(split)
    notes = [f"synthetic questions about the findings (generate_vqa) of {ds.source}; val and test are its "
             "val and test images"]
    source = f"synthetic-vqa(seed={sp.seed}, n_per_site={sp.n_per_site}, image_size={sp.image_size})"
    return _dataset("synthetic-vqa", source, entries, rows, ds.site_names, notes, params.modality)


def _dataset(name: str, source: str, entries: dict[str, list[dict]], rows: dict[str, tuple],
             site_names: tuple[str, ...], notes: list[str], modality: str | None) -> Dataset:
    """Labels, task and splits from the questions and their image rows ``(images, sites, groups)``."""
    task, labels, unseen = _labels(entries, source)
    sizes = {s: len(entries[s]) for s in SPLITS}
    ref = rows["train"][0][0]  # training always has a question
    splits = {}
    for s in SPLITS:
        images, sites, groups = rows[s]
        if isinstance(images, list):
            x = np.stack(images) if images else np.empty((0, *ref.shape), dtype=ref.dtype)
        else:
            x = np.asarray(images)
        questions = [e["question"] for e in entries[s]]
        splits[s] = Split(images=x, labels=labels[s], sites=np.asarray(sites, dtype=np.int64), texts=questions,
                          indications=list(questions),
                          extras={"answer_type": _answer_types(entries[s]), "unseen_answer": labels[s] == UNLABELED},
                          groups=np.asarray(groups, dtype=np.int64))
    n_img = {s: len(set(np.asarray(rows[s][2]).tolist())) for s in SPLITS}
    head = (f"questions per split (one row each): train {sizes['train']}, val {sizes['val']}, test {sizes['test']}; "
            f"on {n_img['train']}, {n_img['val']}, {n_img['test']} images")
    answers = (f"answers: {task.n_outputs} distinct training answers "
               f"(labels); {int((splits['train'].extras['answer_type'] == 0).sum())} CLOSED and "
               f"{int((splits['train'].extras['answer_type'] == 1).sum())} OPEN training questions")
    return Dataset(name=name, task=task, site_names=tuple(site_names), source=source, modality=modality,
                   context_name="question", group_name="images",
                   notes=tuple([head, answers] + notes + _unseen_notes(unseen, sizes)), **splits)


load_vqa.Params = VQAParams  # type: ignore[attr-defined]


# ---------------------------------------------------------------- a VQA-RAD layout folder from the synthetic data

#: synthetic question_type -> VQA-RAD's question_type codes
_QTYPE = {"presence": "PRES", "side": "POS", "zone": "POS", "size": "SIZE", "severity": "SIZE"}
COUNT_QUESTION = "How many abnormal findings are there?"


def _vqarad_entries(split: Split, names: list[str], seed: int, first_qid: int) -> list[dict]:
    """VQA-RAD style entries: the generated questions of every image, then a counting question (int answer)."""
    generated = generate_vqa(split, names, seed=seed)
    by_image: dict[str, list[dict]] = {n: [] for n in names}
    for e in generated:
        by_image[e["image_name"]].append(e)
    findings = np.asarray(split.extras["findings"])
    out: list[dict] = []
    for i, n in enumerate(names):
        qs = [(e["answer"], e["answer_type"], _QTYPE[e["question_type"]], e["question"]) for e in by_image[n]]
        qs.append((int(findings[i].sum()), "OPEN", "COUNT", COUNT_QUESTION))
        for answer, answer_type, qtype, question in qs:
            qid = first_qid + len(out)
            if answer_type == "CLOSED":
                answer = answer.capitalize()  # "Yes" / "No", as VQA-RAD writes them
            out.append({"qid": qid, "image_name": n, "image_organ": "CHEST", "answer": answer,
                        "answer_type": "CLOSED " if answer_type == "CLOSED" and qid % 5 == 2 else answer_type,
                        "question_type": qtype, "question": question, "phrase_type": "freeform"})
    return out


def write_vqa_folder(out_dir: str | Path, n_per_site: int = 60, seed: int = 0, image_size: int = 28) -> Path:
    """Write synthetic VQA questions in VQA-RAD's layout: ``images/<name>.png``, ``trainset.json`` (about the
    synthetic train and val images) and ``testset.json`` (the test images; no image in both).

    Entries follow the real files: keys in VQA-RAD's order (``qid``, ``image_name``, ``image_organ: "CHEST"``,
    ``answer``, ``answer_type``, ``question_type`` (``PRES``, ``POS``, ``SIZE``, ``COUNT``), ``question``,
    ``phrase_type: "freeform"``), integer qids from 1 (unique over both files), yes/no answers capitalised
    (``"Yes"``), every qid ``= 2 mod 5`` CLOSED answer_type written ``"CLOSED "`` (VQA-RAD's typo), and one
    counting question per image whose answer is a JSON integer. Image names: ``synthetic_{train|test}_{site}_
    {row:05d}.png``. Read it with ``load_vqa(VQAParams(path=<dir>/trainset.json, test_path=<dir>/testset.json))``.

    Returns:
        ``out_dir``.

    Raises:
        DataError: bad synthetic parameters, or ``out_dir`` is a file.
    """
    from medrobust.data.synthetic import SyntheticParams, load_synthetic
    from PIL import Image

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"write_vqa_folder: {out} is a file; expected a folder (new or existing)")
    try:
        sp = SyntheticParams(n_per_site=n_per_site, seed=seed, image_size=image_size)
    except ValueError as exc:  # pydantic's ValidationError names the field and the bound
        raise DataError(f"synthetic data: {exc}") from None
    ds = load_synthetic(sp)
    qid = 1
    for split, prefix, file in ((Split.concat([ds.train, ds.val]), "synthetic_train", "trainset.json"),
                                (ds.test, "synthetic_test", "testset.json")):
        names = image_names_for(split, ds.site_names, prefix=prefix)
        (out / "images").mkdir(parents=True, exist_ok=True)
        for img, n in zip(split.images, names):  # [1, S, S] uint8 -> 8-bit gray PNG
            Image.fromarray(np.ascontiguousarray(img[0])).save(out / "images" / n, format="PNG")
        entries = _vqarad_entries(split, names, seed, qid)
        qid += len(entries)
        write_vqa_json(out / file, entries)
    return out
