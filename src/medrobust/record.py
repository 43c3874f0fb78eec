"""The typed contract between a study and its report: one :class:`RunRecord` per finished run, one
:class:`StudyFacts` per study.

The study writes these (the store holds ``RunRecord`` JSON, ``setup.json`` holds ``StudyFacts``); the report
reads nothing else. They hold facts only — numbers, names, ids — and no sentences: words live in
``medrobust.report``. Conditions have stable ids (:data:`CONDITIONS`) kept apart from their display labels.
Accuracies are fractions in [0, 1]; ε keys are the config's 1/255 units as strings (``"0.5"``, ``"2"``).

NaN is a legal value (a metric a run could not measure, e.g. the AUC of a one-class split) and survives the
JSON round trip. Records written before this schema (plain dicts) load through :meth:`RunRecord.from_legacy`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NAN = float("nan")
SCHEMA_VERSION = 1

#: stable ids of the conditions a multimodal task is evaluated under (display labels live in the report)
CONDITIONS = ("clean", "corrupted_image", "holdout", "perturbed_text", "image_missing", "adversarial_image",
              "adversarial_text")


#: keys of :attr:`ClassifierMetrics.per_example` besides :func:`worst_key`: the mean accuracy over every
#: corruption and severity of each in-site test example, and the correctness of each held-out-site example
PER_EXAMPLE_CORRUPTIONS = "corruptions"
PER_EXAMPLE_HOLDOUT = "holdout"
PER_EXAMPLE_ATTACKED = "attacked"  # per_example_labels: the labels of the attacked subset (worst@ε rows)


def worst_key(eps: str) -> str:
    """Key of the per-example worst case at ε key ``eps`` (on the attacked subset): ``"2"`` → ``"worst@2"``."""
    return f"worst@{eps}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants", frozen=True)


class Score(_Model):
    """Accuracy and AUC of one evaluation condition."""

    acc: float
    auc: float = NAN


class Check(_Model):
    """One evaluation self-check (DESIGN principle 7) with its outcome and what was measured."""

    name: str
    passed: bool
    detail: str = ""


class ClassifierMetrics(_Model):
    """Everything measured on a run's classifier (see ``medrobust.evaluation.robustness.evaluate``)."""

    clean: Score
    holdout: Score | None = None  # every image of the held-out sites
    without_text: Score | None = None  # image+text models: the text replaced by an empty one
    without_image: Score | None = None  # image+text models: the image missing (text only)
    attacks: dict[str, dict[str, float]] = {}  # attack id (fgsm, pgd, worst, pgd_without_eot) -> ε key -> acc
    worst_case_sequence: list[str] = []
    worst_case_broke: dict[str, dict[str, int]] = {}  # attack -> ε key -> examples it broke
    text_attacks: dict[str, dict[str, float]] = {}  # report-attack name -> budget key -> acc
    text_attack_examples: dict[str, list[str]] = {}  # report-attack name -> "clean → adversarial" samples
    corruptions: dict[str, dict[str, float]] = {}  # corruption -> severity -> acc
    corruptions_balanced: dict[str, dict[str, float]] = {}  # corruption -> severity -> balanced accuracy
    clean_balanced: float | None = None  # balanced accuracy on the clean test images (the corruption error's base)
    worst_balanced: dict[str, float] = {}  # ε key -> balanced accuracy of the worst case (attacked examples)
    holdout_balanced: float | None = None  # balanced accuracy on the held-out sites
    # class of each example of the per_example rows (single-label): attacked subset, test (corruptions), holdout
    per_example_labels: dict[str, list[int]] = {}
    checks: list[Check] = []
    n_adversarial: int = 0  # attacked examples (a fixed subset of the test split)
    # outcome per test example (0/1, or a fraction rounded to 4 decimals), keyed by :func:`worst_key`,
    # PER_EXAMPLE_CORRUPTIONS, PER_EXAMPLE_HOLDOUT; the examples are the same for every run of a study, so the
    # lists pair across arms and seeds (the report's hierarchical bootstrap). Empty in records written before.
    per_example: dict[str, list[int | float]] = {}
    # test subgroups (VQA: CLOSED / OPEN questions) -> clean, worst (reference ε), corruptions, n, n_adversarial
    subgroups: dict[str, dict[str, float]] = {}


class Direction(_Model):
    """Retrieval in one direction: recall at K (K -> fraction), ranks of the true match, ties, gallery size."""

    recall_at: dict[int, float]
    mean_rank: float
    median_rank: float
    tied: float = 0.0
    n: int

    @classmethod
    def from_metrics(cls, m: dict) -> "Direction":
        """From ``medrobust.evaluation.retrieval.retrieval_metrics``' flat dict (``"R@10"``, ``mean_rank``, ...)."""
        rest = {k: v for k, v in m.items() if not k.startswith("R@")}
        return cls(recall_at={int(k[2:]): v for k, v in m.items() if k.startswith("R@")}, **rest)


class RetrievalScores(_Model):
    image_to_report: Direction
    report_to_image: Direction
    degradation: dict[str, dict[str, float]] | None = None  # direction -> clean/perturbed/delta/ratio mean rank

    @classmethod
    def from_metrics(cls, m: dict) -> "RetrievalScores":
        return cls(image_to_report=Direction.from_metrics(m["image_to_report"]),
                   report_to_image=Direction.from_metrics(m["report_to_image"]), degradation=m.get("degradation"))


class Accuracy(_Model):
    """Accuracy over ``n`` questions, ``correct`` of them right; under ``corrupted_image`` both are means over the
    study's corruptions (so ``correct`` need not be a whole number)."""

    accuracy: float
    correct: float | None = None
    n: float


class VQAScores(_Model):
    overall: Accuracy
    answer_type: dict[str, Accuracy] = {}  # CLOSED / OPEN
    question_type: dict[str, Accuracy] = {}


Condition = Literal["clean", "corrupted_image", "holdout", "perturbed_text", "image_missing", "adversarial_image",
                    "adversarial_text"]


class TaskMetrics(_Model):
    """The multimodal downstream tasks of an image+text run, per condition id.

    ``text_edits``: words replaced in ``perturbed_text`` / ``adversarial_text``; ``attack`` and ``attack_eps``
    (×1/255): the image attack of ``adversarial_image``; ``corruption_severity``: of ``corrupted_image``
    (mean over the study's corruptions).
    """

    retrieval: dict[Condition, RetrievalScores] | None = None
    vqa: dict[Condition, VQAScores] | None = None
    vqa_skipped: str | None = None  # why VQA could not run (no findings to ask about)
    vqa_train_questions: int | None = None
    text_edits: int
    attack: str
    attack_eps: float
    corruption_severity: int


class Timing(_Model):
    """Seconds per stage of a run, in the order they run; ``pretrain_cached`` when pre-training was loaded."""

    pretrain_s: float = 0.0
    pretrain_cached: bool = False
    defense_s: float = 0.0
    finetune_s: float = 0.0
    inference_s: float = 0.0
    eval_s: float = 0.0
    tasks_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.pretrain_s + self.defense_s + self.finetune_s + self.inference_s + self.eval_s + self.tasks_s


class Sizes(_Model):
    n_labeled: int
    n_train: int
    n_test: int
    n_adversarial: int
    n_holdout: int
    final_loss: float | None = None


class RunRecord(_Model):
    """One finished run: what it was (arm, method, fraction, seed, ...), what it measured, how long it took.

    ``arm`` is the label the report shows (``simclr``, ``robust-mmr(domain_weight=0)``, ``supervised + pgd-at``,
    ``simclr [linear]``); ``method`` the registered method name and ``display_name`` its human name;
    ``undefended`` the arm this one is compared with when it has a ``defense``; ``augmented`` the corruption
    names that the run's training augmentations also apply (pre-training views and fine-tuning views; e.g.
    ``gaussian-noise``, ``contrast``), so the report tells corruptions seen in augmentation from held-out ones.
    """

    schema_version: int = SCHEMA_VERSION
    key: str
    arm: str
    method: str
    display_name: str
    method_params: dict[str, Any] = {}
    augmented: list[str] = []
    role: Literal["supervised", "self-supervised", "supervised-pretraining"]
    counterpart: str | None = None  # the supervised arm its classifier is compared with (same inputs)
    task_counterpart: str | None = None  # image+text pre-training: the supervised arm of the retrieval / VQA tasks
    pretrained_on: tuple[str, ...] | None = None  # self-supervised: what pre-training saw ("image", "text" = reports)
    pool: str | None = None  # the pre-training pool (None: the target's training images)
    target_only: str | None = None  # a pool arm: the same arm pre-trained on the target only (its diversity pair)
    modalities: tuple[str, ...] = ("image",)  # what the classifier sees at decision time ("text" = the indication)
    finetune_mode: Literal["full", "linear", "knn"] = "full"
    defense: str | None = None
    undefended: str
    randomized: bool = False
    fraction: float
    seed: int
    class_balance: str | None = None  # what fine-tuning's class-balanced sampling did (None: not balanced)
    metrics: ClassifierMetrics
    tasks: TaskMetrics | None = None
    timing: Timing = Timing()
    sizes: Sizes

    @property
    def uses_text(self) -> bool:
        return "text" in self.modalities

    @property
    def self_supervised(self) -> bool:
        return self.role == "self-supervised"

    @property
    def pretrains(self) -> bool:
        """Pre-trained (self-supervised, or supervised on a pool's labels), then fine-tuned on the target."""
        return self.role != "supervised"

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> "RunRecord":
        import json

        raw = json.loads(text)
        if "schema_version" not in raw:
            return cls.from_legacy(raw)
        if raw["schema_version"] != SCHEMA_VERSION:
            raise RecordError(f"run {raw.get('key')!r} was stored with record schema {raw['schema_version']}; this "
                              f"version of medrobust reads schema {SCHEMA_VERSION} — re-run the study into a new "
                              "output_dir")
        return cls.model_validate(raw)

    @classmethod
    def from_legacy(cls, raw: dict) -> "RunRecord":
        """A record stored as a plain dict by medrobust before this schema (field names of that version)."""
        try:
            return cls.model_validate(_from_legacy(raw))
        except Exception as exc:  # noqa: BLE001 — any mismatch means the stored run cannot be read
            raise RecordError(f"run {raw.get('key')!r} was stored by an older medrobust in a form this version "
                              f"cannot read ({type(exc).__name__}: {str(exc)[:200]}); re-run the study into a new "
                              "output_dir") from None


class RecordError(ValueError):
    """A stored run record that this version cannot read; the message says to re-run the study."""


# ---------------------------------------------------------------- the study's facts


class ComponentFacts(_Model):
    name: str
    params: dict[str, Any] = {}


class SkippedArm(_Model):
    arm: str
    reason: str


class StudyFacts(_Model):
    """What a study was set up to do, as facts for the report (``setup.json``). Every field has a default so
    a report can be drawn from records alone (tests, partial studies)."""

    study: str = ""
    data: str = ""  # one-line description of the data source, splits and sizes
    data_notes: list[str] = []  # what reading the data did (rows skipped, images resized, leaks warned)
    pools: list[str] = []  # one line per pre-training pool an arm uses: its sources, shapes, sizes, labels
    corruption_families: dict[str, str] = {}  # corruption -> family (noise, blur, intensity, acquisition, digital)
    task_kind: str = ""
    label_names: list[str] = []
    class_shares: list[float] = []  # share of each class in the test split (single-label tasks)
    train_sites: list[str] = []
    holdout_sites: list[str] = []
    arms: list[str] = []  # report order
    fractions: list[float] = []
    seeds: list[int] = []
    epsilons: list[str] = []  # ε keys (×1/255)
    reference_epsilon: str | None = None
    attacks: list[ComponentFacts] = []  # the curves
    worst_case: list[ComponentFacts] = []  # the AutoAttack-style sequence
    worst_case_epsilons: list[str] | None = None  # None = every ε
    max_adversarial: int | None = None
    corruptions: list[str] = []
    severities: list[int] = []
    image_encoder: ComponentFacts | None = None
    text_encoder: ComponentFacts | None = None  # None for images-only data
    pretrain: dict[str, Any] = {}  # steps, batch_size, lr, ...
    finetune: dict[str, Any] = {}  # steps, batch_size, mode, ...
    fusion: ComponentFacts | None = None  # downstream fusion transformer; None = late fusion
    tasks: list[str] = []
    has_text: bool = False
    has_indications: bool = False
    context_name: str = "indication"  # the report's word for the text a classifier sees ("question" in VQA)
    skipped: list[SkippedArm] = []
    config_yaml: str = ""
    versions: dict[str, str] = {}
    invocation_s: float | None = None  # seconds of the study command that last wrote this (None: nothing ran)
    expected_runs: int | None = None  # runs of the grid (the report says when some are missing)


# ---------------------------------------------------------------- records of the previous (dict) version

_LEGACY_CONDITIONS = {"clean": "clean", "corrupted image": "corrupted_image", "held-out site": "holdout",
                      "perturbed report": "perturbed_text", "question only": "image_missing",
                      "adversarial image": "adversarial_image", "adversarial report": "adversarial_text"}


def _legacy_condition(label: str) -> str:
    for prefix, cid in _LEGACY_CONDITIONS.items():
        if label.startswith(prefix):
            return cid
    raise ValueError(f"unknown condition {label!r}")


def _from_legacy(raw: dict) -> dict:
    m = dict(raw["metrics"])
    info = raw.get("info") or {}
    metrics = {"clean": m["clean"], "holdout": m.get("holdout"), "without_text": m.get("noreport"),
               "without_image": m.get("noimage"), "attacks": m.get("attacks", {}),
               "worst_case_sequence": (m.get("worst_case") or {}).get("sequence", []),
               "worst_case_broke": (m.get("worst_case") or {}).get("broke", {}),
               "text_attacks": m.get("report_attacks", {}), "text_attack_examples": m.get("report_attack_examples", {}),
               "corruptions": m.get("corruptions", {}), "checks": m.get("checks", []),
               "n_adversarial": info.get("n_adv", 0)}
    tasks = None
    mm = raw.get("multimodal")
    if mm:
        tasks = {"text_edits": 2, "attack": "pgd", "attack_eps": 2.0, "corruption_severity": 3}
        for name in ("retrieval", "vqa"):
            conds = mm.get(name)
            if isinstance(conds, dict) and "skipped" in conds:
                tasks["vqa_skipped"] = conds["skipped"]
            elif isinstance(conds, dict):
                if name == "vqa" and "n_train_questions" in conds:
                    tasks["vqa_train_questions"] = conds["n_train_questions"]
                tasks[name] = {_legacy_condition(k): RetrievalScores.from_metrics(v) if name == "retrieval" else v
                               for k, v in conds.items() if isinstance(v, dict)}
                for label in conds:
                    if label.startswith(("perturbed report", "adversarial report")) and "(" in label:
                        tasks["text_edits"] = int(label.split("(")[1].split()[0])
                    if label.startswith("adversarial image") and "ε=" in label:
                        tasks["attack_eps"] = float(label.split("ε=")[1].split("/")[0])
    timing = {k: v for k, v in (raw.get("timing") or {}).items() if v is not None}
    method = raw.get("method_name") or raw["method"]
    return {"key": raw["key"], "arm": raw["method"], "method": method, "display_name": _display_name(method), "method_params": raw.get("method_params") or {},
            "role": raw.get("kind") or "supervised", "counterpart": raw.get("counterpart"),
            "modalities": tuple(raw.get("modalities") or ("image",)), "finetune_mode": raw.get("finetune_mode") or "full",
            "defense": raw.get("defense"), "undefended": raw.get("undefended") or raw["method"],
            "randomized": bool(raw.get("randomized")), "fraction": raw["fraction"], "seed": raw["seed"],
            "metrics": metrics, "tasks": tasks, "timing": timing,
            "sizes": {"n_labeled": info.get("n_labeled", 0), "n_train": info.get("n_train", 0),
                      "n_test": info.get("n_test", 0), "n_adversarial": info.get("n_adv", 0),
                      "n_holdout": info.get("n_holdout", 0), "final_loss": info.get("final_loss")}}


def _display_name(method: str) -> str:
    """The registered method's display name (the previous records did not carry it); the name if unknown."""
    from medrobust import registry
    from medrobust.methods.contract import info_of

    try:
        return info_of(registry.get("method", method)).display_name
    except (registry.RegistryError, TypeError):
        return method
