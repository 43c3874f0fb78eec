"""Closed-set medical VQA: questions generated from the synthetic findings, the VQA-RAD / SLAKE json
layouts, the answer vocabulary and accuracy.

File formats (read by :func:`read_vqa_json` / :func:`read_vqa_file`): a JSON list of objects, one per question.

VQA-RAD (Lau et al. 2018, "A dataset of clinically generated visual questions and answers about radiology
images", Sci. Data 5:180251; ``trainset.json`` / ``testset.json`` next to ``images/``)::

    {"qid": 1, "image_name": "synpic54610.jpg", "image_organ": "HEAD", "answer": "Yes", "answer_type": "CLOSED",
     "question_type": "PRES", "question": "Are regions of the brain infarcted?", "phrase_type": "freeform"}

SLAKE (Liu et al. 2021, ISBI; ``train.json`` / ``validate.json`` / ``test.json`` next to
``imgs/<folder>/source.jpg``) differs: the image key is ``img_name`` (a path relative to ``imgs/``) and
``q_lang`` marks the language of the question (``"en"`` English, ``"zh"`` Chinese)::

    {"img_id": 1, "img_name": "xmlab1/source.jpg", "question": "Which part of the body does this image belong to?",
     "answer": "Abdomen", "q_lang": "en", "location": "Abdomen", "modality": "MRI", "answer_type": "OPEN",
     "base_type": "vqa", "content_type": "Position", "triple": ["vhead", "_", "_"], "qid": 0}

Keys:
    image_name / img_name: the image file (a non-empty string); returned entries always carry ``image_name``
        (when only ``img_name`` is given it is copied there; both present must agree).
    question: a non-empty string.
    answer: a non-empty string, or a number or boolean, which becomes a string (real VQA-RAD files hold counting
        answers such as ``4``): an int ``4`` -> ``"4"``, an integral float ``4.0`` -> ``"4"``, ``2.5`` -> ``"2.5"``,
        ``true`` / ``false`` -> ``"yes"`` / ``"no"``; NaN and infinity are errors.
    answer_type: ``"CLOSED"`` (yes/no) or ``"OPEN"`` (anything else, as VQA-RAD marks it), read case-insensitively
        with surrounding whitespace stripped (VQA-RAD writes ``"CLOSED "`` in some entries) and returned upper-case.
        When missing it is inferred: ``CLOSED`` if the normalised answer is ``yes`` or ``no``, else ``OPEN``.
    qid: optional; an integer or a string of digits (returned as an int); unique within a file.
    question_type: optional; any string (VQA-RAD: ``"PRES"``, ``"POS, PRES"``, ...); ``null`` counts as missing.
    q_lang: optional; with ``language`` given, entries of another ``q_lang`` are dropped (and counted).
Other keys are kept as read.

Synthetic image names: ``synthetic_{site}_{index:05d}.png`` where ``index`` is the row of the image in the
split the questions were generated from (all sites together; the site is there for reading). Map names back
to rows with :func:`image_indices`. :func:`study_split` selects the same rows as the study's
``train`` / ``test`` / ``holdout`` sets (see :mod:`medrobust.study.prepare`). :mod:`medrobust.data.vqa_source`
turns a VQA set into a classification data set (one row per question).

Answers are compared after :func:`normalize_answer` (lower case, single spaces, no surrounding space).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medrobust.data.base import DataError, Dataset, Split
from medrobust.fileio import atomic_write_text

ANSWER_TYPES = ("CLOSED", "OPEN")
REQUIRED_KEYS = ("image_name", "question", "answer")  # image_name may be spelled img_name (SLAKE)
IMAGE_KEYS = ("image_name", "img_name")
_QID = re.compile(r"\s*-?\d+\s*")

# (finding column in extras["findings"], presence question); FINDINGS order: nodule, effusion, cardiomegaly,
# consolidation
PRESENCE = ((0, "Is there a nodule?"), (1, "Is there a pleural effusion?"), (2, "Is the heart enlarged?"),
            (3, "Is there consolidation?"))
_SIDE = {1: "right", 2: "left"}
_ZONE = {1: "upper", 2: "lower"}
# (finding column, extras key, question_type, question, code -> answer), asked only when the finding is present;
# codes as in medrobust.data.synthetic.findings (SIDES, ZONES, EFFUSION_SIZES, CARDIOMEGALY_GRADES)
ATTRIBUTES = (
    (0, "nodule_side", "side", "Which side is the nodule on?", _SIDE),
    (0, "nodule_zone", "zone", "In which zone is the nodule?", _ZONE),
    (1, "effusion_side", "side", "Which side is the effusion on?", {1: "right", 2: "left", 3: "both"}),
    (1, "effusion_size", "size", "How large is the effusion?", {1: "small", 2: "moderate", 3: "large"}),
    (2, "cardiomegaly_grade", "severity", "How enlarged is the heart?", {1: "mild", 2: "moderate"}),
    (3, "consolidation_side", "side", "Which lung has consolidation?", _SIDE),
    (3, "consolidation_zone", "zone", "In which zone is the consolidation?", _ZONE),
)
_BALANCE, _PER_IMAGE = 0, 1  # purposes of the seeded random streams


def normalize_answer(answer: str) -> str:
    """``"  Right  Lung"`` -> ``"right lung"``: lower case, inner whitespace collapsed, stripped."""
    return " ".join(str(answer).split()).lower()


def image_names_for(split: Split, site_names: Sequence[str], prefix: str = "synthetic") -> list[str]:
    """``f"{prefix}_{site}_{index:05d}.png"`` for every row ``index`` of ``split`` (module docstring)."""
    return [f"{prefix}_{site_names[int(s)]}_{i:05d}.png" for i, s in enumerate(split.sites)]


def image_indices(entries: Sequence[dict], image_names: Sequence[str], where: str = "vqa") -> np.ndarray:
    """``int64 [len(entries)]``: the position in ``image_names`` of each entry's ``image_name``.

    Raises:
        DataError: naming the first entry whose image is not among ``image_names``.
    """
    lookup = {name: i for i, name in enumerate(image_names)}
    out = np.empty(len(entries), dtype=np.int64)
    for k, e in enumerate(entries):
        if e["image_name"] not in lookup:
            raise DataError(f"{where}: entry {k}: image_name {e['image_name']!r} is not an image of this split "
                            f"({len(lookup)} images, e.g. {next(iter(lookup), '-')!r})")
        out[k] = lookup[e["image_name"]]
    return out


def study_split(dataset: Dataset, split: str, holdout_sites: Sequence[str] = ()) -> Split:
    """The rows the study uses (mirrors :func:`medrobust.study.prepare.prepare`).

    ``train``: the training split on the held-in sites; ``test``: the labeled test split on the held-in sites;
    ``holdout``: every labeled image of the held-out sites (train, val and test concatenated in that order).
    """
    unknown = [s for s in holdout_sites if s not in dataset.site_names]
    if unknown:
        raise DataError(f"{dataset.source or dataset.name}: holdout sites {unknown} are not among the sites "
                        f"{list(dataset.site_names)}")
    held = np.array([dataset.site_names.index(s) for s in holdout_sites], dtype=np.int64)
    if split == "train":
        return dataset.train.subset(~np.isin(dataset.train.sites, held))
    if split == "test":
        test = dataset.test.subset(~np.isin(dataset.test.sites, held))
        return test.subset(test.labeled)
    if split == "holdout":
        if not len(held):
            raise DataError("split 'holdout' needs at least one holdout site; got none")
        parts = [s.subset(np.isin(s.sites, held) & s.labeled) for s in (dataset.train, dataset.val, dataset.test)]
        return Split.concat(parts)
    raise DataError(f"split {split!r}; expected 'train', 'test' or 'holdout'")


def _stream(seed: int, purpose: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed) % (1 << 64), spawn_key=(purpose,))))


def _attribute_codes(split: Split) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``findings [n, 4]`` and the attribute codes ``[n]``, checked against each other."""
    keys = ("findings",) + tuple(a[1] for a in ATTRIBUTES)
    missing = [k for k in keys if k not in split.extras]
    if missing:
        raise DataError(f"generate_vqa: split.extras lacks {missing}; expected the synthetic data's findings and "
                        f"finding attributes ({', '.join(keys)})")
    findings = np.asarray(split.extras["findings"])
    if findings.ndim != 2 or findings.shape[1] != 4:
        raise DataError(f"generate_vqa: extras['findings'] has shape {findings.shape}; expected [n, 4]")
    codes = {k: np.asarray(split.extras[k]) for k in keys[1:]}
    for col, key, _, _, answers in ATTRIBUTES:
        present = findings[:, col] == 1
        bad = np.flatnonzero((present & ~np.isin(codes[key], list(answers))) | (~present & (codes[key] != 0)))
        if len(bad):
            i = int(bad[0])
            raise DataError(f"generate_vqa: image {i}: {key}={int(codes[key][i])} with findings[{i}, {col}]="
                            f"{int(findings[i, col])}; expected one of {sorted(answers)} when present, 0 when absent")
    return findings, codes


def _presence_kept(findings: np.ndarray, balance: bool, seed: int) -> np.ndarray:
    """Bool ``[n, 4]``: which presence questions are asked; balanced keeps as many "no" as "yes" per finding."""
    keep = np.ones(findings.shape, dtype=bool)
    if not balance:
        return keep
    rng = _stream(seed, _BALANCE)
    for col in range(findings.shape[1]):
        no = np.flatnonzero(findings[:, col] == 0)
        n_keep = min(len(no), max(int(findings[:, col].sum()), 1))
        keep[no, col] = False
        keep[rng.choice(no, size=n_keep, replace=False), col] = True
    return keep


def generate_vqa(split: Split, image_names: Sequence[str], seed: int, per_image: int | None = None,
                 balance: bool = True) -> list[dict]:
    """Closed-set questions about the findings of every image of a synthetic split.

    Per image, in this order: a yes/no presence question per finding (:data:`PRESENCE`, ``answer_type``
    CLOSED, ``question_type`` "presence"), then, for each finding present, its attribute questions
    (:data:`ATTRIBUTES`: side, zone, size, severity; OPEN, with 2-3 possible answers each).

    Args:
        split: a split of :func:`medrobust.data.synthetic.load_synthetic` (uses ``extras["findings"]`` and the
            attribute codes).
        image_names: one unique name per row of ``split`` (:func:`image_names_for`).
        seed: seeds the balancing and the per-image draw; same inputs and seed give the same list.
        per_image: at most this many questions per image, drawn uniformly (order kept); ``None`` keeps all.
        balance: per finding, ask "is there ...?" of every image with it and of as many (at least one) randomly
            drawn images without it, so yes/no answers are about 50/50 (prevalences are 11-30%).

    Returns:
        Entries ``{"qid", "image_name", "question", "answer", "answer_type", "question_type"}``, ``qid``
        numbering them from 0.

    Raises:
        DataError: missing or inconsistent finding codes, a name count that differs from the split, repeated
            names, or ``per_image < 1``.
    """
    if len(image_names) != len(split):
        raise DataError(f"generate_vqa: {len(image_names)} image names for {len(split)} images; expected one each")
    dup = [n for n, c in Counter(image_names).items() if c > 1]
    if dup:
        raise DataError(f"generate_vqa: image names repeat ({dup[:3]}); expected unique names")
    if per_image is not None and (isinstance(per_image, bool) or not isinstance(per_image, (int, np.integer))
                                  or per_image < 1):
        raise DataError(f"generate_vqa: per_image={per_image!r}; expected a positive int or None")
    findings, codes = _attribute_codes(split)
    asked = _presence_kept(findings, balance, seed)
    rng = _stream(seed, _PER_IMAGE)
    entries: list[dict] = []
    for i, name in enumerate(image_names):
        qs = [(q, "yes" if findings[i, col] else "no", "CLOSED", "presence")
              for col, q in PRESENCE if asked[i, col]]
        qs += [(q, answers[int(codes[key][i])], "OPEN", qtype)
               for col, key, qtype, q, answers in ATTRIBUTES if findings[i, col]]
        if per_image is not None and len(qs) > per_image:
            qs = [qs[j] for j in np.sort(rng.choice(len(qs), size=per_image, replace=False))]
        entries += [{"qid": len(entries) + k, "image_name": name, "question": q, "answer": a, "answer_type": t,
                     "question_type": qt} for k, (q, a, t, qt) in enumerate(qs)]
    return entries


def write_vqa_json(path: str | Path, entries: Sequence[dict]) -> Path:
    """Write ``entries`` as a VQA-RAD style json list (UTF-8, ``indent=1``), atomically; returns the path."""
    text = json.dumps(list(entries), indent=1, ensure_ascii=False) + "\n"
    return atomic_write_text(path, text)


def answer_text(value: Any, where: str = "answer") -> str:
    """A json answer as a string (module docstring): strings as they are; ``True`` -> ``"yes"``,
    ``False`` -> ``"no"``; ``4`` and ``4.0`` -> ``"4"``; ``2.5`` -> ``"2.5"``.

    Raises:
        DataError: naming ``where`` for NaN / infinity or a value that is neither a string, a number nor a bool.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DataError(f"{where}: answer is {value!r}; expected a string or a finite number")
        return str(int(value)) if value.is_integer() else repr(value)
    raise DataError(f"{where}: answer is {type(value).__name__} {value!r}; expected a string (or a number)")


def _nonempty_string(entry: dict, key: str, where: str) -> str:
    value = entry[key]
    if not isinstance(value, str):
        raise DataError(f"{where}: {key} is {type(value).__name__} {value!r}; expected a string")
    if not value.strip():
        raise DataError(f"{where}: {key} is empty; expected a non-empty string")
    return value


def _check_entry(entry: Any, where: str) -> dict:
    if not isinstance(entry, dict):
        raise DataError(f"{where}: got {type(entry).__name__} {str(entry)[:60]!r}; expected a JSON object")
    present = [k for k in IMAGE_KEYS if k in entry]
    if not present:
        raise DataError(f"{where}: missing key 'image_name' (or SLAKE's 'img_name'); expected the image file "
                        f"and keys {', '.join(REQUIRED_KEYS)}")
    for key in REQUIRED_KEYS[1:]:
        if key not in entry:
            raise DataError(f"{where}: missing key {key!r}; expected keys {', '.join(REQUIRED_KEYS)}")
    names = [_nonempty_string(entry, k, where) for k in present]
    if len(set(names)) > 1:
        raise DataError(f"{where}: image_name {names[0]!r} and img_name {names[1]!r} differ; expected one image")
    _nonempty_string(entry, "question", where)
    answer = answer_text(entry["answer"], where)
    if not answer.strip():
        raise DataError(f"{where}: answer is empty; expected a non-empty string")
    out = {**entry, "image_name": names[0], "answer": answer}
    if "answer_type" in entry:
        raw = entry["answer_type"]
        answer_type = raw.strip().upper() if isinstance(raw, str) else None
        if answer_type not in ANSWER_TYPES:
            raise DataError(f"{where}: answer_type {raw!r}; expected 'CLOSED' or 'OPEN'")
    else:
        answer_type = "CLOSED" if normalize_answer(answer) in ("yes", "no") else "OPEN"
    out["answer_type"] = answer_type
    if out.get("question_type") is None:
        out.pop("question_type", None)
    elif not isinstance(out["question_type"], str):
        value = out["question_type"]
        raise DataError(f"{where}: question_type is {type(value).__name__} {value!r}; expected a string")
    if "qid" in entry:
        qid = entry["qid"]
        if isinstance(qid, str) and _QID.fullmatch(qid):
            out["qid"] = int(qid)
        elif isinstance(qid, bool) or not isinstance(qid, int):
            raise DataError(f"{where}: qid is {type(qid).__name__} {qid!r}; expected an integer (or a string "
                            "of digits)")
    return out


@dataclass(frozen=True)
class VQAFile:
    """What :func:`read_vqa_file` read from one file.

    Attributes:
        path: the file.
        entries: the checked entries kept (module docstring), in file order.
        indices: the 0-based position in the file of each kept entry (for messages: ``entry i``).
        n_read: entries in the file (kept and dropped).
        dropped_language: entries dropped because their ``q_lang`` is not ``language``.
        languages: entries per ``q_lang`` value in the file (``"-"`` for entries without one).
    """

    path: Path
    entries: list[dict]
    indices: list[int]
    n_read: int
    dropped_language: int
    languages: dict[str, int]


def read_vqa_file(path: str | Path, language: str | None = None) -> VQAFile:
    """Read and check a VQA-RAD or SLAKE json file (module docstring); with ``language`` (e.g. ``"en"``),
    entries whose ``q_lang`` differs are dropped and counted (entries without ``q_lang`` are kept).

    Raises:
        DataError: naming the file, and the entry index for a bad entry: file missing, invalid JSON, not a list,
            empty, an entry that is not an object, a missing required key, a wrong type, an empty string, an
            unknown ``answer_type``, a repeated ``qid``, or no entry left in ``language``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: VQA file not found; expected a JSON list of question objects")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: bad JSON ({err.msg} at line {err.lineno} column {err.colno}); expected a JSON "
                        "list of question objects") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason}); expected a UTF-8 JSON file") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to read; expected a JSON list of question objects") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: top level is a JSON {type(data).__name__}; expected a list of question objects")
    if not data:
        raise DataError(f"{path}: the list is empty; expected at least one question")
    entries = [_check_entry(e, f"{path}: entry {i}") for i, e in enumerate(data)]
    seen: dict[int, int] = {}
    for i, e in enumerate(entries):
        if "qid" in e:
            if e["qid"] in seen:
                raise DataError(f"{path}: entry {i}: qid {e['qid']} repeats entry {seen[e['qid']]}; expected unique qids")
            seen[e["qid"]] = i
    languages = Counter(str(e.get("q_lang", "-")) for e in entries)
    keep = [i for i, e in enumerate(entries) if language is None or "q_lang" not in e or e["q_lang"] == language]
    if not keep:
        raise DataError(f"{path}: no question in language {language!r} (q_lang: "
                        + ", ".join(f"{k}: {v}" for k, v in sorted(languages.items()))
                        + "); expected language to be one of these, or None to keep all")
    return VQAFile(path=path, entries=[entries[i] for i in keep], indices=keep, n_read=len(entries),
                   dropped_language=len(entries) - len(keep), languages=dict(sorted(languages.items())))


def read_vqa_json(path: str | Path, language: str | None = None) -> list[dict]:
    """The checked entries of a VQA-RAD or SLAKE json file (:func:`read_vqa_file`; ``language`` drops the
    questions of another ``q_lang`` — use :func:`read_vqa_file` to learn how many).

    Raises:
        DataError: as :func:`read_vqa_file`.
    """
    return read_vqa_file(path, language).entries


@dataclass(frozen=True)
class AnswerVocab:
    """The answers seen in training (normalised, sorted) and which of them each question type allows.

    ``candidates(question_type)`` is a bool mask over :attr:`answers`, so a model's answer logits can be
    restricted to the closed answer set of the question (``logits.masked_fill(~mask, -inf)``).
    """

    answers: tuple[str, ...]
    by_type: dict[str, tuple[str, ...]]

    @classmethod
    def from_entries(cls, entries: Sequence[dict]) -> AnswerVocab:
        """Built from (training) entries; an entry without ``question_type`` counts under its ``answer_type``."""
        if not entries:
            raise DataError("AnswerVocab: no entries; expected at least one question")
        seen: dict[str, set[str]] = {}
        for e in entries:
            seen.setdefault(_type_of(e), set()).add(normalize_answer(e["answer"]))
        answers = tuple(sorted(set().union(*seen.values())))
        return cls(answers=answers, by_type={t: tuple(sorted(a)) for t, a in sorted(seen.items())})

    def __len__(self) -> int:
        return len(self.answers)

    def index(self, answer: str) -> int:
        """Position of ``answer`` (normalised) in :attr:`answers`."""
        a = normalize_answer(answer)
        try:
            return self.answers.index(a)
        except ValueError:
            raise DataError(f"AnswerVocab: answer {a!r} was not seen in training; known answers: "
                            f"{', '.join(self.answers)}") from None

    def candidates(self, question_type: str) -> np.ndarray:
        """``bool [len(self)]``: the answers seen for ``question_type``."""
        if question_type not in self.by_type:
            raise DataError(f"AnswerVocab: unknown question_type {question_type!r}; known: {', '.join(self.by_type)}")
        allowed = set(self.by_type[question_type])
        return np.array([a in allowed for a in self.answers], dtype=bool)

    def encode(self, entries: Sequence[dict], allow_unknown: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``int64 [n]`` answer indices and ``bool [n, len(self)]`` candidate masks of ``entries``.

        With ``allow_unknown`` (test questions of an open-set file), an answer never seen in training gets
        index ``-1`` (no prediction can match it) and an unseen question type allows every answer; otherwise
        both raise :class:`DataError`.
        """
        known = {a: i for i, a in enumerate(self.answers)}
        idx = np.empty(len(entries), dtype=np.int64)
        mask = np.zeros((len(entries), len(self)), dtype=bool)  # [n, n_answers]
        masks: dict[str, np.ndarray] = {}
        for i, e in enumerate(entries):
            a, t = normalize_answer(e["answer"]), _type_of(e)
            idx[i] = known[a] if a in known else (-1 if allow_unknown else self.index(a))
            if t not in masks:
                masks[t] = (np.ones(len(self), dtype=bool) if allow_unknown and t not in self.by_type
                            else self.candidates(t))
            mask[i] = masks[t]
        return idx, mask


def _type_of(entry: dict) -> str:
    return entry.get("question_type") or entry["answer_type"]


def _acc(correct: list[bool]) -> dict[str, float]:
    return {"accuracy": float(np.mean(correct)), "correct": int(sum(correct)), "n": len(correct)}


def vqa_accuracy(predicted: Sequence[str], entries: Sequence[dict]) -> dict:
    """Exact-match accuracy (after :func:`normalize_answer`), overall, per answer_type and per question_type.

    Returns:
        ``{"overall": {"accuracy", "correct", "n"}, "answer_type": {"CLOSED": {...}, "OPEN": {...}},
        "question_type": {qtype: {...}}}``; a type with no entries is left out.

    Raises:
        DataError: when the lengths differ or a prediction is not a string (its index named).
    """
    if len(predicted) != len(entries):
        raise DataError(f"vqa_accuracy: {len(predicted)} predictions for {len(entries)} questions; expected one each")
    if not entries:
        raise DataError("vqa_accuracy: no questions; expected at least one")
    for i, p in enumerate(predicted):
        if not isinstance(p, str):
            raise DataError(f"vqa_accuracy: prediction {i} is {type(p).__name__} {p!r}; expected a string")
    correct = [normalize_answer(p) == normalize_answer(e["answer"]) for p, e in zip(predicted, entries)]
    groups: dict[str, dict[str, list[bool]]] = {"answer_type": {}, "question_type": {}}
    for ok, e in zip(correct, entries):
        groups["answer_type"].setdefault(e["answer_type"].upper(), []).append(ok)
        if e.get("question_type"):
            groups["question_type"].setdefault(e["question_type"], []).append(ok)
    return {"overall": _acc(correct),
            **{g: {k: _acc(v) for k, v in sorted(by.items())} for g, by in groups.items()}}
