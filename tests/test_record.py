"""The typed run record: JSON round trip (NaN included), the store, records of the previous version, errors."""

import json
import math

import pytest

from medrobust.record import RecordError, RunRecord, StudyFacts
from medrobust.study.store import Store

LEGACY = {  # a record as medrobust wrote it before the typed schema (abridged from a real store)
    "key": "de36cc8b8bd16f28", "method": "clip", "method_name": "clip", "fraction": 0.1, "defense": None,
    "undefended": "clip", "randomized": False, "seed": 0, "kind": "self-supervised",
    "counterpart": "supervised-multimodal", "modalities": ["image", "text"], "finetune_mode": "full",
    "method_params": {},
    "metrics": {"clean": {"acc": 0.9, "auc": 0.95}, "holdout": {"acc": 0.64, "auc": 0.86},
                "noreport": {"acc": 0.63, "auc": 0.76}, "noimage": {"acc": 0.89, "auc": 0.93},
                "attacks": {"pgd": {"0": 0.95, "2": 0.9}, "worst": {"0": 0.95, "2": 0.85}},
                "worst_case": {"sequence": ["apgd-ce", "square"], "broke": {"apgd-ce": {"0": 0, "2": 1}}},
                "report_attacks": {"report-word-substitution": {"1": 0.89, "3": 0.44},
                                   "joint-image-report": {"2/255+3w": 0.43}},
                "report_attack_examples": {"report-word-substitution": ["a nodule → a nodlue"]},
                "corruptions": {"jpeg": {"1": 0.9, "5": 0.7}},
                "checks": [{"name": "eps0_equals_clean", "passed": True, "detail": "ok"}]},
    "multimodal": {
        "retrieval": {c: {"image_to_report": {"R@1": 0.02, "R@5": 0.1, "R@10": 0.2, "mean_rank": 40.0,
                                              "median_rank": 30.0, "tied": 0.0, "n": 200},
                          "report_to_image": {"R@1": 0.03, "R@5": 0.1, "R@10": 0.2, "mean_rank": 42.0,
                                              "median_rank": 31.0, "tied": 0.0, "n": 200}}
                      for c in ("clean", "perturbed report (2 words)", "adversarial image (PGD-10, ε=2/255)")},
        "vqa": {"clean": {"overall": {"accuracy": 0.7, "correct": 420, "n": 600}},
                "corrupted image": {"overall": {"accuracy": 0.56, "correct": 334.25, "n": 600.0}},  # mean of 4
                "question only (image missing)": {"overall": {"accuracy": 0.5, "correct": 300, "n": 600}},
                "n_train_questions": 180}},
    "timing": {"pretrain_s": 8.0, "pretrain_cached": False, "finetune_s": 6.0, "defense_s": 0.0,
               "inference_s": 0.1, "eval_s": 20.0, "tasks_s": 12.0},
    "info": {"n_labeled": 180, "n_train": 1800, "n_test": 600, "n_adv": 100, "n_holdout": 900, "final_loss": 0.3},
}


def test_previous_records_convert_field_by_field():
    r = RunRecord.from_json(json.dumps(LEGACY))
    assert (r.arm, r.method, r.display_name, r.role) == ("clip", "clip", "CLIP", "self-supervised")
    assert r.uses_text and r.metrics.without_text.acc == 0.63 and r.metrics.without_image.acc == 0.89
    assert r.metrics.text_attacks["joint-image-report"]["2/255+3w"] == 0.43
    assert r.metrics.worst_case_broke["apgd-ce"]["2"] == 1 and r.sizes.n_adversarial == 100
    assert set(r.tasks.retrieval) == {"clean", "perturbed_text", "adversarial_image"}  # display labels -> ids
    assert r.tasks.retrieval["clean"].image_to_report.recall_at == {1: 0.02, 5: 0.1, 10: 0.2}
    assert (r.tasks.text_edits, r.tasks.attack_eps) == (2, 2.0)
    assert set(r.tasks.vqa) == {"clean", "corrupted_image", "image_missing"} and r.tasks.vqa_train_questions == 180
    assert r.tasks.vqa["corrupted_image"].overall.correct == 334.25  # averaged over the corruptions
    assert r.timing.total_s == pytest.approx(46.1)


def test_round_trip_keeps_every_value_and_nan(tmp_path):
    r = RunRecord.from_legacy(LEGACY)
    nan_auc = r.model_copy(update={"metrics": r.metrics.model_copy(update={
        "clean": r.metrics.clean.model_copy(update={"auc": float("nan")})})})
    back = RunRecord.from_json(nan_auc.to_json())
    assert math.isnan(back.metrics.clean.auc)
    assert back.model_dump(exclude={"metrics"}) == nan_auc.model_dump(exclude={"metrics"})
    store = Store(tmp_path / "runs.sqlite")
    store.put(r)
    assert store.get(r.key) == r and store.records() == [r] and store.keys() == {r.key}


def test_store_reads_rows_of_the_previous_version(tmp_path):
    store = Store(tmp_path / "runs.sqlite")
    with store._conn:
        store._conn.execute("INSERT INTO runs VALUES (?, ?, 0)", (LEGACY["key"], json.dumps(LEGACY)))
    assert store.get(LEGACY["key"]).display_name == "CLIP"


def test_unreadable_records_say_to_rerun():
    newer = json.loads(RunRecord.from_legacy(LEGACY).to_json()) | {"schema_version": 99}
    with pytest.raises(RecordError, match="schema 99.*re-run the study"):
        RunRecord.from_json(json.dumps(newer))
    broken = {k: v for k, v in LEGACY.items() if k != "metrics"}
    with pytest.raises(RecordError, match="de36cc8b8bd16f28.*re-run the study"):
        RunRecord.from_json(json.dumps(broken))


def test_record_rejects_unknown_fields_and_wrong_types():
    raw = json.loads(RunRecord.from_legacy(LEGACY).to_json())
    with pytest.raises(ValueError, match="surprise"):
        RunRecord.model_validate(raw | {"surprise": 1})
    with pytest.raises(ValueError, match="seed"):
        RunRecord.model_validate(raw | {"seed": "zero"})


def test_study_facts_defaults_allow_a_records_only_report():
    facts = StudyFacts()
    assert facts.arms == [] and facts.reference_epsilon is None
    assert StudyFacts.model_validate_json(StudyFacts(study="x", epsilons=["0", "2"]).model_dump_json()).epsilons == ["0", "2"]


def test_per_example_outcomes_round_trip_and_old_records_have_none():
    r = RunRecord.from_legacy(LEGACY)
    assert r.metrics.per_example == {}  # a store written before: the report falls back to the seeds-only test
    with_rows = r.model_copy(update={"metrics": r.metrics.model_copy(update={
        "per_example": {"worst@2": [1, 0, 1], "corruptions": [0.75, 0.5, 1]}})})
    text = with_rows.to_json()
    assert '"worst@2":[1,0,1]' in text  # 0/1 outcomes stay ints: compact
    back = RunRecord.from_json(text)
    assert back.metrics.per_example == {"worst@2": [1, 0, 1], "corruptions": [0.75, 0.5, 1]}


def test_evaluate_fills_per_example_outcomes_whose_means_are_the_metrics(trained_classifier, synthetic_small):
    from medrobust.evaluation.robustness import EvalConfig, EvalData, evaluate
    from medrobust.record import worst_key

    model, _, _, task = trained_classifier
    ds = synthetic_small
    data = EvalData(task=task, test_images=ds.test.images, test_labels=ds.test.labels,
                    holdout_images=ds.val.images, holdout_labels=ds.val.labels)
    cfg = EvalConfig(epsilons=[0, 2], reference_epsilon=2, attacks=["fgsm"], worst_case=[], corruptions=["contrast"],
                     severities=[1, 3], report_attacks=[], max_adversarial=24)
    m = evaluate(model, data, cfg)
    rows = m.per_example
    assert set(rows) == {worst_key("0"), worst_key("2"), "corruptions", "holdout"}
    assert len(rows["worst@2"]) == m.n_adversarial == 24 and set(rows["worst@2"]) <= {0, 1}
    assert sum(rows["worst@2"]) / 24 == pytest.approx(m.attacks["worst"]["2"])
    assert sum(rows["worst@0"]) / 24 == pytest.approx(m.attacks["worst"]["0"])
    assert len(rows["corruptions"]) == len(ds.test.images)
    mean_corr = sum(v for per in m.corruptions.values() for v in per.values()) / 2
    assert sum(rows["corruptions"]) / len(rows["corruptions"]) == pytest.approx(mean_corr, abs=1e-4)
    assert all(round(x, 4) == x for x in rows["corruptions"])
    assert sum(rows["holdout"]) / len(ds.val.images) == pytest.approx(m.holdout.acc)
