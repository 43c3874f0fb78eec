"""The report's multimodal section: tables per task x condition, values from the records."""

from medrobust.report import multimodal
from records import facts, records


def multimodal_tables(recs, setup, ref):
    return multimodal.multimodal_tables(records(recs), facts(setup), ref)


def _rec(method, seed, clean, rank, vqa, modalities=("image", "text")):
    return {"method": method, "fraction": 0.1, "seed": seed, "modalities": list(modalities),
            "method_params": {"domain_weight": 0} if "(" in method else {}, "method_name": method.split("(")[0],
            "metrics": {"clean": {"acc": clean}, "noimage": {"acc": clean - 0.3}, "noreport": {"acc": clean - 0.2},
                        "attacks": {"worst": {"2": clean - 0.4}},
                        "report_attacks": {"report-word-substitution": {"1": clean - 0.1, "3": clean - 0.5}}},
            "multimodal": {"retrieval": {c: {"image_to_report": {"R@1": 0.5, "mean_rank": rank + d, "median_rank": 1, "n": 9},
                                             "report_to_image": {"R@1": 0.4, "mean_rank": rank + 2 * d, "median_rank": 1,
                                                                 "n": 10}}
                                         for c, d in (("clean", 0), ("adversarial image", 3))},
                           "vqa": {"clean": {"overall": {"accuracy": vqa, "n": 9},
                                             "answer_type": {"CLOSED": {"accuracy": vqa, "n": 9},
                                                             "OPEN": {"accuracy": vqa - 0.1, "n": 9}}},
                                   "skipped_note": "x"}}}


def test_tables_per_task_and_condition_with_ablation_rows():
    recs = [_rec("robust-mmr", s, 0.9, 3.0 + s, 0.7) for s in (0, 1)] + \
        [_rec("robust-mmr(domain_weight=0)", s, 0.8, 5.0, 0.6) for s in (0, 1)] + \
        [dict(_rec("supervised", s, 0.7, 9.0, 0.5, modalities=("image",)), multimodal=None) for s in (0, 1)]
    setup = {"methods": ["robust-mmr", "robust-mmr(domain_weight=0)", "supervised"]}
    tables = {t.title.split(" — ")[0]: t for t in multimodal_tables(recs, setup, "2")}
    cls = tables["Image+indication classifiers: accuracy (%) per condition"]
    assert [r[0] for r in cls.rows] == ["robust-mmr", "robust-mmr(domain_weight=0)"]  # image-only arms left out
    # columns no run measured (corruptions, held-out site) are dropped
    assert cls.header[1:] == ["clean", "image only (indication left out)", "indication only (image missing)",
                              "adversarial image (worst case, ε=2/255)", "adversarial indication (3 words)"]
    row = dict(zip(cls.header, cls.rows[0]))
    assert row["clean"].startswith("90.0") and row["indication only (image missing)"].startswith("60.0")
    assert row["adversarial indication (3 words)"].startswith("40.0")
    rank = tables["Retrieval image→report: mean rank of the match per condition (lower is better; the rise over "
                  "clean is the degradation)"]
    assert rank.header[1:] == ["clean", "adversarial image (PGD-10, ε=2/255)"]  # the condition id's label
    r0 = dict(zip(rank.header, rank.rows[0]))
    assert r0["clean"].startswith("3.5 ±") and r0["adversarial image (PGD-10, ε=2/255)"].startswith("6.5 ±")
    back = dict(zip(*[tables["Retrieval report→image: R@1 (%) per condition"].header,
                      tables["Retrieval report→image: R@1 (%) per condition"].rows[1]]))
    assert back["clean"].startswith("40.0")
    vqa = tables["VQA accuracy (%) per condition (closed-set answers)"]
    v = dict(zip(vqa.header, vqa.rows[1]))
    assert v["clean"].startswith("60.0") and v["clean OPEN"].startswith("50.0")
    assert "skipped_note" not in vqa.header
    assert multimodal_tables([r for r in recs if r["method"] == "supervised"], setup, "2") == []


def test_retrieval_titles_state_what_random_ranking_scores():
    recs = [_rec("clip", s, 0.9, 40.0, 0.7) for s in (0, 1)]
    for r in recs:
        for c in r["multimodal"]["retrieval"].values():
            for d in c.values():
                d["n"] = 200
    titles = [t.title for t in multimodal_tables(recs, {"methods": ["clip"]}, "2")]
    assert "Retrieval image→report: R@1 (%) per condition (among 200 candidates: chance 0.5%) — 10% labels" in titles
    assert any(t.startswith("Retrieval report→image: mean rank") and "among 200 candidates, chance is 100.5" in t
               for t in titles)
    recs[1]["multimodal"]["retrieval"]["clean"]["image_to_report"]["n"] = 100  # mixed sizes: no single chance
    assert not any("chance" in t.title for t in multimodal_tables(recs, {"methods": ["clip"]}, "2"))
