"""The report's side of the augmentation confound: the un-augmented supervised arm is an ablation of
``supervised`` (not a headline comparison), and corruption columns say whether training augmentations applied
them ("seen") or not ("held out")."""

from medrobust.report import answer, tables
from records import facts, record

SETUP = {"reference_epsilon": "2", "epsilons": ["0", "2"], "corruptions": ["gaussian-noise", "jpeg", "bias-field"],
         "severities": [3]}
FIVE = ["brightness", "contrast", "gamma", "gaussian-blur", "gaussian-noise"]


def rec(arm, seed, worst, corr, method=None, params=None, counterpart=None, augmented=FIVE):
    r = record({"key": f"{arm}-{seed}", "method": arm, "method_name": method or arm, "method_params": params or {},
                "fraction": 0.1, "seed": seed, "counterpart": counterpart,
                "metrics": {"clean": {"acc": 0.9}, "holdout": {"acc": 0.8},
                            "attacks": {"worst": {"0": 0.9, "2": worst}},
                            "corruptions": {c: {"3": corr} for c in SETUP["corruptions"]}}})
    return r.model_copy(update={"augmented": list(augmented)})


def study(with_ablation=True):
    out = []
    for s in (0, 1, 2):
        out.append(rec("supervised", s, 0.40 + 0.01 * s, 0.60))
        out.append(rec("simclr", s, 0.55 + 0.02 * s, 0.62, counterpart="supervised"))
        if with_ablation:  # the baseline without its training views: clearly less robust than supervised
            out.append(rec("supervised(augment=False)", s, 0.30 - 0.01 * s, 0.50, method="supervised",
                           params={"augment": False}, augmented=[]))
    return out


def test_unaugmented_supervised_is_an_ablation_of_supervised_not_a_headline_comparison():
    records = study()
    assert tables.ablation_base(records, "supervised(augment=False)") == "supervised"
    comps = answer.comparisons(records, facts(SETUP))
    abl = [c for c in comps if c["arm"] == "supervised(augment=False)"]
    assert abl and all(c["ablation"] and c["counterpart"] == "supervised" for c in abl)
    worst = next(c for c in abl if c["metric"] == "worst_ref")
    assert worst["verdict"] == "worse" and abs(worst["mean_diff"] - (0.29 - 0.41)) < 1e-9
    text = answer.answer(records, facts(SETUP))
    assert text == answer.answer(records, facts(SETUP))
    headline = text.splitlines()[0]
    without = answer.answer(study(with_ablation=False), facts(SETUP)).splitlines()[0]
    assert headline == without, "the ablation changed the self-supervised-vs-supervised headline"
    assert "supervised(augment=False)" not in "\n".join(x for x in text.splitlines() if x.startswith("- "))
    line = next(x for x in text.splitlines() if x.startswith("**Ablations**"))
    assert "`supervised(augment=False)` vs `supervised` at 10% labels" in line


def test_corruption_columns_are_marked_seen_or_held_out_from_augmentation():
    records = study()
    (table,) = tables.corruption_tables(records, facts(SETUP), "3")
    # gaussian-noise: seen by simclr and supervised, not by the un-augmented arm -> per-cell marks
    assert table.header == ["method", "gaussian-noise", "jpeg (held out)", "bias-field (held out)"]
    rows = {row[0]: row for row in table.rows}
    assert rows["simclr"][1].endswith(tables.SEEN_BY_ARM) and rows["supervised"][1].endswith(tables.SEEN_BY_ARM)
    assert not rows["supervised(augment=False)"][1].endswith(tables.SEEN_BY_ARM)
    assert not any(cell.endswith(tables.SEEN_BY_ARM) for row in table.rows for cell in row[2:])
    assert "held out from augmentation" in table.note and "jpeg, bias-field" in table.note
    # every arm augmented: the column is "seen"; robust-mmr-style bias field seen by one arm only
    only_aug = [r for r in records if r.arm != "supervised(augment=False)"]
    only_aug = [r.model_copy(update={"augmented": r.augmented + ["bias-field"]}) if r.arm == "simclr" else r
                for r in only_aug]
    (table,) = tables.corruption_tables(only_aug, facts(SETUP), "3")
    assert table.header == ["method", "gaussian-noise (seen)", "jpeg (held out)", "bias-field"]
    rows = {row[0]: row for row in table.rows}
    assert rows["simclr"][3].endswith(tables.SEEN_BY_ARM) and not rows["supervised"][3].endswith(tables.SEEN_BY_ARM)
    assert "seen in augmentation" in table.note and "jpeg" in table.note
    md = table.markdown()
    assert "gaussian-noise (seen)" in md and "held out from augmentation" in md


def test_no_held_out_corruption_is_said_plainly():
    setup = dict(SETUP, corruptions=["gaussian-noise"])
    records = [r for r in study(with_ablation=False)]
    records = [r.model_copy(update={"metrics": r.metrics.model_copy(
        update={"corruptions": {"gaussian-noise": {"3": 0.6}}})}) for r in records]
    (table,) = tables.corruption_tables(records, facts(setup), "3")
    assert table.header == ["method", "gaussian-noise (seen)"]
    assert "No corruption evaluated here is held out from augmentation" in table.note
