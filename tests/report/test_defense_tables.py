"""The report's defense table: paired with the undefended arm, costs as ratios, EOT difference visible."""

from medrobust.report import defenses
from records import facts, records


def defense_tables(recs, setup, ref):
    return defenses.defense_tables(records(recs), facts(setup), ref)


def _rec(method, seed, clean, pgd, finetune_s, inference_s, defense=None, undefended=None, no_eot=None,
         passed=True):
    attacks = {"worst": {"2": pgd - 0.05}, "pgd": {"2": pgd}}
    if no_eot is not None:
        attacks["pgd_without_eot"] = {"2": no_eot}
    return {"method": method, "fraction": 0.1, "seed": seed, "defense": defense,
            "undefended": undefended or method, "modalities": ["image"],
            "metrics": {"clean": {"acc": clean}, "holdout": {"acc": clean - 0.1}, "attacks": attacks,
                        "corruptions": {"gaussian-noise": {"3": clean - 0.2}},
                        "checks": [{"name": "large_eps_breaks", "passed": passed}]},
            "timing": {"finetune_s": finetune_s, "defense_s": 0.0, "inference_s": inference_s}}


def test_defended_rows_are_paired_with_their_undefended_arm():
    records = []
    for s in (0, 1, 2):
        records.append(_rec("supervised", s, 0.80, 0.10, 10.0, 1.0))
        records.append(_rec("supervised + pgd-at", s, 0.74 + 0.01 * s, 0.40, 40.0 + 10 * s, 1.0, "pgd-at", "supervised"))
        records.append(_rec("supervised + input-noise", s, 0.78, 0.30, 12.0, 2.0, "input-noise", "supervised",
                            no_eot=0.60, passed=s != 1))
        records.append(_rec("simclr", s, 0.82, 0.12, 10.0, 1.0))  # no defended arm refers to it: not shown
    (table,) = defense_tables(records, {"methods": ["supervised", "supervised + pgd-at", "supervised + input-noise",
                                                    "simclr"]}, "2")
    rows = {r[0]: dict(zip(table.header, r)) for r in table.rows}
    assert list(rows) == ["supervised", "supervised + pgd-at", "supervised + input-noise"]
    at = rows["supervised + pgd-at"]
    assert at["Δ clean vs undefended (pp)"].startswith("-5.0")  # mean of -6, -5, -4 pp
    assert at["training time ×"].startswith("5.00")  # (40, 50, 60) / 10
    assert at["inference time ×"].startswith("1.00")
    noise = rows["supervised + input-noise"]
    assert noise["PGD ε=2/255 without EOT"].startswith("60.0") and noise["PGD ε=2/255 (EOT if randomised)"].startswith("30.0")
    assert noise["self-checks"] == "❌ large_eps_breaks" and at["self-checks"] == "✅ all passed"
    assert rows["supervised"]["Δ clean vs undefended (pp)"] == "—"
    assert defense_tables([r for r in records if not r["defense"]], {}, "2") == []


def test_time_ratio_is_missing_without_an_undefended_pair():
    rec = _rec("supervised + pgd-at", 0, 0.7, 0.4, 40.0, 1.0, "pgd-at", "supervised")
    (table,) = defense_tables([rec], {}, "2")
    row = dict(zip(table.header, table.rows[0]))
    assert "training time ×" not in row  # no pair anywhere: the column is dropped
    assert row["clean"].startswith("70.0")
