"""Robustness evaluation of a trained classifier: clean, adversarial, corrupted, held-out site, no report.

Every robust number is computed on the same examples for every run of a study (the attacked subset and the
corruption noise are drawn from a fixed evaluation seed), so arms can be compared pairwise. Labels are used
only by the attacks' loss and by the metrics, never as model input (DESIGN principle 7).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medrobust import registry
from medrobust.corruptions.base import apply
from medrobust.data.base import Task, to_unit
from medrobust.data.fractions import label_subset
from medrobust.evaluation import adversarial, checks
from medrobust.evaluation.adversarial import PRESETS, AttackTarget, eps_key, to_pixels
from medrobust.evaluation.metrics import auc, per_example_accuracy, scores
from medrobust.task import balanced_accuracy
from medrobust.evaluation.text_side import ReportAttackSpec, evaluate_report_attacks, monotone_in_budget
from medrobust.models.heads import Classifier
from medrobust.record import (PER_EXAMPLE_ATTACKED, PER_EXAMPLE_CORRUPTIONS, PER_EXAMPLE_HOLDOUT,
                              ClassifierMetrics, worst_key)
from medrobust.schema import Component, as_component

EVAL_SEED = 20240531  # fixed: the same attacked subset and corruption noise for every run


class EvalConfig(BaseModel):
    """What the robustness evaluation measures (the ``evaluation`` section of a study config)."""

    model_config = ConfigDict(extra="forbid")
    epsilons: list[float] = Field([0, 0.5, 1, 2, 4, 8], description="L∞ budgets in units of 1/255")
    reference_epsilon: float = Field(2, description="the ε (×1/255) the report's answer is given at")
    attacks: list[Component] = Field([Component(name="fgsm"), Component(name="pgd", params={"steps": 10})],
                                     description="attacks run on every attacked example at every ε (the curves)")
    worst_case: str | list[Component] = Field("standard", description="AutoAttack-style sequence after the curves: "
                                              "a preset name (standard) or a list of attacks; [] for none")
    worst_case_epsilons: list[float] | None = Field(None, description="ε (×1/255) at which the worst-case "
                                                    "sequence runs; None = every ε. Elsewhere: curves + ε-nesting")
    check_epsilon: float = Field(128, gt=0, description="ε (×1/255) of the 'large ε breaks the model' self-check")
    corruptions: list[str] | Literal["auto"] = Field(
        "auto", description="corruption names, or auto: the data's modality's set (medrobust.corruptions.sets), "
        "resolved when the study prepares its data")
    severities: list[int] = [1, 2, 3, 4, 5]
    report_attacks: list[ReportAttackSpec] = Field(
        [ReportAttackSpec(name="report-word-substitution", budgets=[1, 2, 3]),
         ReportAttackSpec(name="report-embedding-pgd", budgets=[0.1, 0.25, 0.5]),
         ReportAttackSpec(name="joint-image-report", budgets=[[2, 1], [2, 3]])],
        description="image+report models only: attacks on the report, or on image and report together")
    max_adversarial: int = Field(300, ge=1, description="test examples attacked (a fixed stratified subset)")
    evaluate_failed: bool = Field(False, description="attack and corrupt a model that failed `above_chance` too "
                                  "(default: such a run records its clean numbers and the failure, and skips them)")
    batch_size: int = Field(256, ge=1)

    @field_validator("epsilons")
    @classmethod
    def _epsilons(cls, v: list[float]) -> list[float]:
        if not v or any(e < 0 for e in v) or sorted(v) != v or v[0] != 0:
            raise ValueError(f"must be ascending, non-negative and start at 0 (the clean check), got {v}")
        return v

    @field_validator("worst_case", mode="before")
    @classmethod
    def _worst_case(cls, v):
        if isinstance(v, str):
            if v not in PRESETS:
                raise ValueError(f"unknown preset {v!r}; presets: {', '.join(PRESETS)} (or a list of attacks)")
            return v
        return [as_component(a) for a in v] if isinstance(v, list) else v

    def sequence(self) -> list[Component]:
        return list(PRESETS[self.worst_case]) if isinstance(self.worst_case, str) else list(self.worst_case)

    @field_validator("attacks", mode="before")
    @classmethod
    def _attack_names(cls, v):
        return [as_component(a) for a in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _linf_only(self) -> "EvalConfig":
        """The ε grid is an L∞ budget in 1/255: an L2 attack on it would get radii of a few 1/255 (no attack)."""
        named = [(f"attacks[{i}]", a) for i, a in enumerate(self.attacks)]
        if not isinstance(self.worst_case, str):
            named += [(f"worst_case[{i}]", a) for i, a in enumerate(self.worst_case)]
        for where, a in named:
            if str(a.params.get("norm", "linf")).lower() != "linf":
                raise ValueError(f"{where} ({a.name}) has norm {a.params['norm']!r}, but the study's ε grid is L∞ "
                                 "in units of 1/255; L2 attacks (norm: l2) are library functions, not run on this "
                                 "grid — use norm: linf")
        return self


@dataclass
class EvalData:
    """Tensors the evaluation needs. The text is what the classifier sees with the image at decision time (the
    indication, :mod:`medrobust.study.prepare`); ``tokens`` / ``texts`` are None for data without it."""

    task: Task
    test_images: np.ndarray
    test_labels: np.ndarray
    test_tokens: np.ndarray | None = None
    test_texts: list[str] | None = None
    tokenizer: object | None = None
    holdout_images: np.ndarray | None = None
    holdout_labels: np.ndarray | None = None
    holdout_tokens: np.ndarray | None = None
    test_subgroups: dict[str, np.ndarray] | None = None  # name -> bool [N_test], e.g. VQA's CLOSED / OPEN questions
    # name -> test examples of that subgroup that are not scored because no model can get them right (VQA: an
    # answer never seen in training); the subgroup's accuracies count them as wrong
    test_unanswerable: dict[str, int] | None = None
    # (corruption, severity, batch size) -> the corrupted test images: the same for every run of a study (fixed
    # seed), so computed once per process (:func:`_corrupted`)
    corrupted: dict = field(default_factory=dict, repr=False, compare=False)


def adversarial_subset(labels: np.ndarray, size: int) -> np.ndarray:
    """A fixed, label-stratified subset of test indices (sorted), identical for every run."""
    if size >= len(labels):
        return np.arange(len(labels))
    return np.sort(label_subset(labels, size / len(labels), seed=EVAL_SEED))


def _text_features(model: Classifier, tokens: np.ndarray | None, batch_size: int) -> torch.Tensor | None:
    """Report features ``[N, D]`` computed once per evaluation (the reports stay fixed in image evaluations)."""
    if tokens is None or not model.uses_text:
        return None
    with torch.no_grad():
        return torch.cat([model.text_features(torch.as_tensor(tokens[s : s + batch_size]))
                          for s in range(0, len(tokens), batch_size)])


def _predict(model: Classifier, images, text_feats: torch.Tensor | None, batch_size: int,
             transform: Callable | None = None, missing: str | None = None) -> torch.Tensor:
    """Logits ``[N, K]`` for all images (optionally transformed batch by batch), no gradients;
    ``missing="report"``: an image+text model's declared missing-text path (its text left out)."""
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = to_unit(images[start : start + batch_size])
            if transform is not None:
                x = transform(x, start)
            t = None if text_feats is None else text_feats[start : start + batch_size]
            if missing is not None:
                out.append(model(x, missing=missing))
            else:
                out.append(model(x, text_features=t) if model.uses_text else model(x))
    return torch.cat(out)


def _summary(logits: torch.Tensor, labels: np.ndarray, task: Task) -> dict[str, float]:
    y = torch.as_tensor(labels)
    return {"acc": float(per_example_accuracy(logits, y, task).mean()), "auc": auc(scores(logits, task), labels, task)}


def evaluate(model: Classifier, data: EvalData, cfg: EvalConfig, progress: Callable[[str], None] | None = None,
             state_path: str | Path | None = None) -> ClassifierMetrics:
    """All metrics of one trained model (the ``metrics`` of its :class:`medrobust.record.RunRecord`).

    ``state_path``: where the worst-case evaluation saves its progress, so an interrupted evaluation of
    the same weights resumes there.
    """
    model.eval()
    task, bs = data.task, cfg.batch_size
    note = progress or (lambda _msg: None)
    metrics: dict = {}
    per_example: dict[str, list] = {}  # outcome per example, paired across runs (the report's bootstrap)
    test_text = _text_features(model, data.test_tokens, bs)
    clean_logits = _predict(model, data.test_images, test_text, bs)
    metrics["clean"] = _summary(clean_logits, data.test_labels, task)
    if data.holdout_images is not None and len(data.holdout_images):
        holdout_text = _text_features(model, data.holdout_tokens, bs)
        holdout_logits = _predict(model, data.holdout_images, holdout_text, bs)
        metrics["holdout"] = _summary(holdout_logits, data.holdout_labels, task)
        per_example[PER_EXAMPLE_HOLDOUT] = _compact(per_example_accuracy(
            holdout_logits, torch.as_tensor(data.holdout_labels), task))
        metrics["holdout_balanced"] = balanced_accuracy(holdout_logits, torch.as_tensor(data.holdout_labels), task)
    if model.uses_text:  # the text left out through the model's declared missing-modality path
        metrics["without_text"] = _summary(_predict(model, data.test_images, None, bs, missing="report"),
                                           data.test_labels, task)
        with torch.no_grad():  # text only: the image dropped (missing modality)
            report_only = torch.cat([model(None, text_features=test_text[s : s + bs], missing="image")
                                     for s in range(0, len(test_text), bs)])
        metrics["without_image"] = _summary(report_only, data.test_labels, task)

    clean_balanced = balanced_accuracy(clean_logits, torch.as_tensor(data.test_labels), task)
    chance = checks.above_chance(metrics["clean"]["acc"], data.test_labels, task.multilabel, clean_balanced)
    if not chance["passed"] and not cfg.evaluate_failed:  # fail fast: its robustness numbers would mean nothing
        chance["detail"] += "; attacks and corruptions skipped (evaluation.evaluate_failed: true runs them)"
        metrics.update(checks=[chance], per_example=per_example, clean_balanced=clean_balanced)
        return ClassifierMetrics.model_validate(metrics)
    note("attack curves")
    subset = adversarial_subset(data.test_labels, cfg.max_adversarial)
    target = AttackTarget(model, data.test_images[subset], data.test_labels[subset], task,
                          None if test_text is None else test_text[torch.as_tensor(subset)], bs)
    per_attack = adversarial.curves(target, cfg.attacks, cfg.epsilons, EVAL_SEED)  # name -> ε -> [n]
    state = adversarial.SequenceState(state_path, adversarial.model_digest(model))
    worst, broke = adversarial.worst_case(target, per_attack, cfg.epsilons, cfg.sequence(), EVAL_SEED, state,
                                          run_at=cfg.worst_case_epsilons, progress=progress)
    metrics["attacks"] = {name: {eps_key(e): float(acc.mean()) for e, acc in by_eps.items()}
                          for name, by_eps in per_attack.items()}
    metrics["attacks"]["worst"] = {eps_key(e): float(acc.mean()) for e, acc in worst.items()}
    metrics["worst_case_broke"] = broke  # keyed by what ran (apgd-dlr becomes apgd-ce-restarts on 2-class tasks)
    metrics["worst_case_sequence"] = [s.label for s in adversarial.sequence_steps(cfg.sequence(), task)]
    if not task.multilabel:  # mean per-class accuracy of the worst case (imbalanced tasks read this)
        metrics["worst_balanced"] = {eps_key(e): _per_class_mean(acc, data.test_labels[subset])
                                     for e, acc in worst.items()}
        metrics["per_example_labels"] = {PER_EXAMPLE_ATTACKED: data.test_labels[subset].tolist(),
                                         PER_EXAMPLE_CORRUPTIONS: data.test_labels.tolist(),
                                         **({PER_EXAMPLE_HOLDOUT: data.holdout_labels.tolist()}
                                            if "holdout" in metrics else {})}
    for e in {0.0, float(cfg.reference_epsilon)} & set(worst):  # ε=0 too: the gap's per-example clean point
        per_example[worst_key(eps_key(e))] = _compact(worst[e])
    if getattr(model, "randomized", False):  # what an attack that ignores the randomness would report
        blind = AttackTarget(adversarial.WithoutEOT(model), target.images, target.labels, task, target.text_feats, bs)
        pgd = adversarial.build_attack(adversarial.REFERENCE_PGD)
        ref = cfg.reference_epsilon
        metrics["attacks"]["pgd_without_eot"] = {eps_key(ref): float(blind.accuracy_under(
            pgd, to_pixels(ref), torch.Generator().manual_seed(EVAL_SEED)).mean())}
    clean_subset = per_example_accuracy(clean_logits[subset], torch.as_tensor(data.test_labels[subset]), task)
    note("attack self-checks")
    attack_checks = _attack_checks(target, data, model, subset, clean_subset, per_attack, worst, cfg)

    if model.uses_text and cfg.report_attacks and data.test_texts is not None:
        note("report-side attacks")
        texts = [data.test_texts[i] for i in subset]
        metrics["text_attacks"], metrics["text_attack_examples"] = evaluate_report_attacks(
            model, data.test_images[subset], data.test_tokens[subset], texts, data.test_labels[subset], task,
            data.tokenizer, cfg.report_attacks, bs, EVAL_SEED)
        adversarial_text = {name: v for name, v in metrics["text_attacks"].items()  # random edits may help
                            if getattr(registry.get("report-attack", name), "adversarial", True)}
        attack_checks.append(monotone_in_budget(adversarial_text, len(subset)))

    note("corruptions")
    metrics["corruptions"], metrics["corruptions_balanced"], corrupted = _corruptions(model, data, test_text, cfg)
    metrics["clean_balanced"] = clean_balanced
    if corrupted is not None:
        per_example[PER_EXAMPLE_CORRUPTIONS] = _compact(corrupted)
    metrics["checks"] = [chance, *attack_checks]
    metrics["n_adversarial"] = int(len(subset))
    metrics["per_example"] = per_example
    if data.test_subgroups:
        clean_all = per_example_accuracy(clean_logits, torch.as_tensor(data.test_labels), task).numpy()
        ref = float(cfg.reference_epsilon)
        wrong = data.test_unanswerable or {}
        metrics["subgroups"] = {name: _subgroup(mask, clean_all, subset, worst.get(ref), corrupted, wrong.get(name, 0))
                                for name, mask in data.test_subgroups.items()}
    return ClassifierMetrics.model_validate(metrics)


def _subgroup(mask: np.ndarray, clean: np.ndarray, subset: np.ndarray, worst, corrupted, unanswerable: int = 0
              ) -> dict[str, float]:
    """Accuracy of one subgroup of the test examples: clean, worst case at the reference ε (on the attacked
    examples in it), mean over corruptions; ``n`` scored test examples, ``n_adversarial`` attacked ones.

    ``unanswerable`` examples of the subgroup were not scored (no model can get them right, e.g. VQA answers never
    seen in training): every accuracy counts them as wrong, ``acc × n / (n + unanswerable)`` — exact for clean and
    corruptions; for the worst case, the attacked subset's accuracy scaled the same way."""
    mask = np.asarray(mask, dtype=bool)
    n = int(mask.sum())
    scale = n / (n + unanswerable) if n + unanswerable else float("nan")
    out = {"n": float(n + unanswerable), "unanswerable": float(unanswerable),
           "clean": float(clean[mask].mean()) * scale if n else 0.0 if unanswerable else float("nan")}
    in_subset = mask[subset]
    out["n_adversarial"] = float(in_subset.sum())
    if worst is not None and in_subset.any():
        out["worst"] = float(np.asarray(worst)[in_subset].mean()) * scale
    if corrupted is not None and n:
        out["corruptions"] = float(np.asarray(corrupted)[mask].mean()) * scale
    return out


def _attack_checks(target: AttackTarget, data: EvalData, model: Classifier, subset: np.ndarray,
                   clean: torch.Tensor, per_attack: dict, worst: dict, cfg: EvalConfig) -> list[dict]:
    """The self-checks of principle 7 on this model's attacked examples.

    A randomised model's ε=0 check compares with its expected clean accuracy (``target.clean_accuracy()``,
    the decisions every attacked point is scored by), not the one-pass ``clean``.
    """
    n, ref = len(subset), cfg.reference_epsilon
    randomized = getattr(model, "randomized", False)
    out = [checks.eps0_equals_clean(target.clean_accuracy() if randomized else clean, per_attack, randomized,
                                    worst.get(0.0)),
           checks.monotone_in_eps(per_attack, cfg.epsilons)]
    # unbounded ε: for image+text models attack the image pathway alone (text left out, the model's
    # missing-modality path), since a clean text can legitimately keep the decision whatever the image
    large, note = target, ""
    if model.uses_text:
        large = AttackTarget(model, target.images, target.labels, target.task, batch_size=target.batch_size,
                             missing="report")
        note = " (image pathway, text left out)"
    big, free, strong = adversarial.large_eps_accuracies(large, cfg.check_epsilon, EVAL_SEED, model.uses_text)
    out.append(checks.large_eps_breaks(big, cfg.check_epsilon, note, free, strong))
    out.append(checks.gradients_nonzero(adversarial.gradient_norms(target)))
    if ref in worst:
        noise = adversarial.random_noise_accuracy(target, to_pixels(ref), EVAL_SEED)
        out.append(checks.noise_weaker_than_attack(float(noise.mean()), float(worst[ref].mean()), ref, n))
    if "pgd" in per_attack and ref in per_attack["pgd"] and "apgd-ce" in registry.names("attack"):
        spec = next((s for s in cfg.sequence() if s.name == "apgd-ce"), Component(name="apgd-ce"))
        apgd = target.accuracy_under(adversarial.build_attack(spec), to_pixels(ref),
                                     torch.Generator().manual_seed(EVAL_SEED))
        out.append(checks.apgd_not_weaker_than_pgd(float(apgd.mean()), float(per_attack["pgd"][ref].mean()), ref, n))
    strongest = adversarial.strongest_gradient_attack(adversarial.sequence_steps(cfg.sequence(), target.task),
                                                      cfg.attacks)
    if ref in worst and strongest is not None:  # is the budget converged? (cost: adversarial.convergence)
        after = adversarial.convergence(target, worst[ref], strongest, ref, EVAL_SEED)
        out.append(checks.attack_converged(float(worst[ref].mean()), float(after.mean()), ref, n,
                                           adversarial.describe(adversarial.reinforced(strongest))))
    return out


def _per_class_mean(outcomes: torch.Tensor, labels: np.ndarray) -> float:
    """Balanced accuracy from per-example outcomes: the mean over the classes present of their mean outcome."""
    out = outcomes.detach().double().cpu().numpy()
    return float(np.mean([out[labels == c].mean() for c in np.unique(labels)]))


def _compact(outcomes: torch.Tensor) -> list[int | float]:
    """Per-example outcomes for the record: 0/1 ints when they are, else floats rounded to 4 decimals."""
    xs = outcomes.detach().double().flatten().tolist()
    return [int(x) for x in xs] if all(x in (0.0, 1.0) for x in xs) else [round(x, 4) for x in xs]


#: the corrupted test sets of a study are kept in memory (float32) when they fit in this many bytes
CORRUPTION_CACHE_BYTES = 2 * 2**30


def _corrupted(data: EvalData, name: str, severity: int, batch_size: int, cache: bool) -> torch.Tensor:
    """The test images under ``name`` at ``severity``, float in [0, 1], corrupted batch by batch with the
    evaluation's generator (the same numbers for every run); with ``cache``, kept on ``data`` for the next run."""
    key = (name, severity, batch_size)
    if key in data.corrupted:
        return data.corrupted[key]
    generator = torch.Generator().manual_seed(EVAL_SEED + severity)
    images = data.test_images
    x = torch.cat([apply(name, to_unit(images[s : s + batch_size]), severity, generator)
                   for s in range(0, len(images), batch_size)])
    if cache:
        data.corrupted[key] = x
    return x


def _corruptions(model: Classifier, data: EvalData, text_feats: torch.Tensor | None,
                 cfg: EvalConfig) -> tuple[dict, dict, torch.Tensor | None]:
    """Accuracy and balanced accuracy per corruption and severity, and each test example's mean accuracy over all
    of them."""
    out: dict[str, dict[str, float]] = {}
    balanced: dict[str, dict[str, float]] = {}
    total, count = None, 0
    if cfg.corruptions == "auto":
        raise ValueError("evaluation.corruptions is 'auto': resolve it for the data first "
                         "(medrobust.corruptions.sets.corruption_set)")
    labels = torch.as_tensor(data.test_labels)
    cache = len(cfg.corruptions) * len(cfg.severities) * data.test_images.size * 4 <= CORRUPTION_CACHE_BYTES
    for name in cfg.corruptions:
        out[name], balanced[name] = {}, {}
        for severity in cfg.severities:
            logits = _predict(model, _corrupted(data, name, severity, cfg.batch_size, cache), text_feats,
                              cfg.batch_size)
            correct = per_example_accuracy(logits, labels, data.task).double()
            out[name][str(severity)] = float(correct.mean())
            balanced[name][str(severity)] = balanced_accuracy(logits, labels, data.task)
            total, count = (correct if total is None else total + correct), count + 1
    return out, balanced, None if total is None else total / count
