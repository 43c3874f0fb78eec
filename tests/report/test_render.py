"""Tests for medrobust.report.render (and the tables/plots it draws on): files, content, robustness to gaps."""

import base64
import re
import subprocess
import sys

import numpy as np
import pytest

from medrobust.report import render, stats
from records import facts, records


def write(recs, setup, out):
    return render.write_report(records(recs), facts(setup), out)

EPS = ["0", "0.5", "1", "2", "4", "8"]
CORR = ["gaussian-noise", "gaussian-blur"]
ARMS = [("supervised", None, ["image"], 0.0), ("simclr", "supervised", ["image"], 0.1),
        ("supervised-multimodal", None, ["image", "text"], 0.0), ("clip", "supervised-multimodal", ["image", "text"], 0.02)]
FAIL = ("simclr", 0.1, 0)  # (method, fraction, seed) whose monotonicity check fails


def make(fractions=(0.1, 1.0), seeds=(0, 1, 2), holdout=True, arms=ARMS):
    rng = np.random.default_rng(1)
    recs = []
    for m, cp, mods, boost in arms:
        for f in fractions:
            for s in seeds:
                clean = float(0.75 + 0.1 * f + boost / 2 + 0.01 * rng.standard_normal())
                worst = {e: float(clean * np.exp(-float(e) * (0.4 - 2 * boost))) for e in EPS}
                bad = (m, f, s) == FAIL
                met = {"clean": {"acc": clean, "auc": clean + 0.03},
                       "attacks": {"pgd": {e: v + 0.01 * (e != "0") for e, v in worst.items()}, "worst": worst},
                       "corruptions": {c: {str(v): clean - 0.05 * v + 0.01 * rng.standard_normal() for v in range(1, 6)}
                                       for c in CORR},
                       "checks": [{"name": "eps0_equals_clean", "passed": True, "detail": "ok"},
                                  {"name": "monotone_in_eps", "passed": not bad,
                                   "detail": "pgd accuracy rose from 0.40 at 2/255 to 0.42 at 4/255" if bad else "ok"}]}
                if holdout:
                    met["holdout"] = {"acc": clean - 0.1 + boost, "auc": 0.8}
                if "text" in mods:
                    met["noreport"] = {"acc": clean - 0.2, "auc": 0.7}
                recs.append({"key": f"k{m}{f}{s}", "method": m, "fraction": f, "seed": s,
                             "kind": "self-supervised" if cp else "supervised", "counterpart": cp, "modalities": mods,
                             "finetune_mode": "full", "metrics": met,
                             "timing": {"pretrain_s": 30.0 if cp else 0.0, "pretrain_cached": s > 0,
                                        "finetune_s": 6.0, "eval_s": 5.0},
                             "info": {"n_labeled": int(1800 * f), "n_train": 1800, "n_test": 600, "n_adv": 300}})
    setup = {"study": "test", "data": "synthetic", "task_kind": "binary", "label_names": ["normal", "abnormal"],
             "train_sites": ["A", "B"], "holdout_sites": ["D"] if holdout else [], "methods": [a[0] for a in arms],
             "fractions": list(fractions), "seeds": list(seeds), "epsilons": EPS, "reference_epsilon": "2",
             "attacks": [{"name": "pgd", "params": {"steps": 10}}], "corruptions": CORR, "severities": [1, 2, 3, 4, 5],
             "skipped": [{"arm": "mae", "reason": "not in this study"}], "config_yaml": "study: test\n",
             "pretrain": {"steps": 150, "batch_size": 128}, "finetune": {"steps": 150, "batch_size": 64},
             "has_text": any("text" in a[2] for a in arms)}
    return recs, setup


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    recs, setup = make()
    out = tmp_path_factory.mktemp("report")
    md_path = write(recs, setup, out)
    return recs, setup, out, md_path


PNGS = ["differences.png", "robust_vs_eps.png", "corruption_severity.png", "site_shift.png", "label_fraction.png"]


def test_files_written_and_nothing_else(full):
    _, _, out, md_path = full
    assert md_path == out / "report.md"
    assert sorted(p.name for p in out.iterdir()) == sorted(["report.md", "appendix.md", "report.html"] + PNGS)


def test_pngs_are_valid_images(full):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    for name in PNGS:
        img = mpimg.imread(full[2] / name)
        assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 600
        assert img[..., :3].std() > 0.05  # not a blank canvas


def test_html_is_self_contained(full):
    html = (full[2] / "report.html").read_text(encoding="utf-8")
    assert html.count("src='data:image/png;base64,") == len(PNGS)
    embedded = [base64.b64decode(d) for d in re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)]
    assert embedded == [(full[2] / name).read_bytes() for name in PNGS]  # the very PNGs, in report order
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", html)
    assert "<link" not in html and "<script" not in html and "<table>" in html


def test_md_tables_contain_every_method_and_fraction(full):
    recs, _, out, _ = full
    md = (out / "report.md").read_text(encoding="utf-8")
    table_lines = [line for line in md.splitlines() if line.startswith("|")]
    for m in {r["method"] for r in recs}:
        assert any(line.startswith(f"| {m} |") or line.startswith(f"| {m} ⚠ |") for line in table_lines), m
    for f in ("10% labels", "100% labels"):
        assert f in md
    assert md.index("## The answer") < md.index("## Setup") < md.index("## Results") \
        < md.index("## Paired comparison") < md.index("## Evaluation self-checks") < md.index("## Plots")
    appendix = (out / "appendix.md").read_text(encoding="utf-8")
    assert appendix.index("## The answer in detail") < appendix.index("## Results in detail") \
        < appendix.index("## Every evaluation self-check") < appendix.index("## Runs")
    assert "## Runs" not in md and "(appendix.md)" in md
    assert "`mae` — not in this study" in md  # skipped arm with its reason


def test_failed_check_warned_in_md_and_html(full):
    _, _, out, _ = full
    md = (out / "report.md").read_text(encoding="utf-8")
    html = (out / "report.html").read_text(encoding="utf-8")
    warn_md = md[md.index("**⚠ Warnings**"):md.index("## Setup")]
    assert "monotone_in_eps" in warn_md and "simclr" in warn_md and "seed 0" in warn_md
    warn_html = html[html.index("<div class='warn'>"):]
    warn_html = warn_html[:warn_html.index("</div>")]
    assert "monotone_in_eps" in warn_html and "simclr" in warn_html
    # the number it concerns is marked: the PGD table row of simclr at 10% labels, and only that fraction
    md = (out / "appendix.md").read_text(encoding="utf-8")
    pgd10 = md[md.index("### PGD robust accuracy (%) per ε — 10% labels"):]
    pgd10 = pgd10[:pgd10.index("\n\n", pgd10.index("|"))]
    assert "| simclr ⚠ |" in pgd10 and "| supervised |" in pgd10
    pgd100 = md[md.index("### PGD robust accuracy (%) per ε — 100% labels"):]
    assert "| simclr |" in pgd100[:pgd100.index("\n\n", pgd100.index("|"))]
    assert "❌" in md and "❌" in html


def test_main_report_is_concise(full):
    _, _, out, _ = full
    assert (out / "report.md").stat().st_size < 40_000  # the bound for the demo; this grid is larger
    assert (out / "report.md").stat().st_size < (out / "appendix.md").stat().st_size


def test_answer_numbers_equal_table_numbers(full):
    _, _, out, _ = full
    md = (out / "report.md").read_text(encoding="utf-8")
    appendix = (out / "appendix.md").read_text(encoding="utf-8")
    ans = appendix[appendix.index("## The answer in detail"):appendix.index("## Results in detail")]
    comp = md[md.index("## Paired comparison"):md.index("## Evaluation self-checks")]
    found = re.findall(r"([+-]?\d+\.\d)% (?:to|→) ([+-]?\d+\.\d)% \(([+-]?\d+\.\d) pp, 95% CI ([+-]?\d+\.\d) to "
                       r"([+-]?\d+\.\d), (\d+) seeds[,)]", ans)
    assert len(found) >= 6
    for frm, to, diff, lo, hi, n in found:
        assert f"| {frm} | {to} | {diff} | {lo} to {hi} |" in comp


def test_deterministic(tmp_path):
    recs, setup = make(fractions=(0.1,), seeds=(0, 1))
    a = write(recs, setup, tmp_path / "a")
    b = write(recs, setup, tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a/report.html").read_bytes() == (tmp_path / "b/report.html").read_bytes()


def test_no_holdout_and_no_multimodal_arms(tmp_path):
    recs, setup = make(fractions=(0.01, 0.1, 1.0), seeds=(0, 1), holdout=False, arms=ARMS[:2])
    del setup["holdout_sites"], setup["config_yaml"], setup["skipped"], setup["has_text"]
    md = write(recs, setup, tmp_path).read_text(encoding="utf-8") + (tmp_path / "appendix.md").read_text()
    assert not (tmp_path / "site_shift.png").exists()
    assert "No held-out site" in md and "`site_shift.png` not drawn" in md
    assert "report removed" not in md and "Held-out-site accuracy" not in md
    assert "- **Budgets:** pre-training 150 steps × batch 128" in md
    assert "Image+text downstream" not in md and "indication left out" not in md  # no image+text arm here
    assert "clip" not in md
    assert "1% labels" in md and (tmp_path / "label_fraction.png").exists()


def test_one_seed_and_minimal_setup(tmp_path):
    recs, _ = make(fractions=(0.1,), seeds=(0,), arms=ARMS[:2])
    md = write(recs, {}, tmp_path).read_text(encoding="utf-8")
    results = md.split("## Results")[1].split("## Paired")[0]
    rows = [line for line in results.splitlines() if line.startswith("| simclr")]
    assert rows and all("(n=1)" in row and "±" not in row for row in rows)
    assert "not enough seeds" in md and "n/a" in md
    assert not (tmp_path / "label_fraction.png").exists()  # one fraction: a point per method, no figure
    assert "`label_fraction.png` not drawn" in md


def test_empty_records_rejected(tmp_path):
    with pytest.raises(ValueError):
        render.write_report([], None, tmp_path)


def test_report_package_does_not_import_torch():
    code = ("import sys, medrobust.report.render, medrobust.report.answer, medrobust.report.plots;"
            "assert 'torch' not in sys.modules; assert 'matplotlib' not in sys.modules, 'matplotlib must be lazy'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stats_used_for_table_cells(full):
    recs, _, out, _ = full
    clean = [r["metrics"]["clean"]["acc"] for r in recs if r["method"] == "clip" and r["fraction"] == 1.0]
    cell = stats.fmt_cell(*stats.mean_ci(clean))
    md = (out / "report.md").read_text(encoding="utf-8")
    block = md[md.index("### Clean accuracy (%)"):md.index("### Clean AUC")]
    assert re.search(rf"\| clip \| [^|]+ \| {re.escape(cell)} \|", block)


def test_report_side_attack_tables_rendered(tmp_path):
    recs = []
    for seed in (0, 1):
        for method, acc in (("supervised-multimodal", 0.8), ("clip", 0.6)):
            r = {"key": f"{method}{seed}", "method": method, "fraction": 0.1, "seed": seed,
                 "kind": "supervised" if method.startswith("sup") else "self-supervised",
                 "counterpart": None if method.startswith("sup") else "supervised-multimodal",
                 "modalities": ["image", "text"], "finetune_mode": "full",
                 "metrics": {"clean": {"acc": 0.9, "auc": 0.9},
                             "attacks": {"worst": {"0": 0.9, "2": 0.5}},
                             "report_attacks": {"report-word-substitution": {"1": acc, "3": acc - 0.2}}},
                 "timing": {}, "info": {}}
            recs.append(r)
    write(recs, {"methods": ["supervised-multimodal", "clip"]}, tmp_path)
    md = (tmp_path / "appendix.md").read_text()
    assert "report-word-substitution: robust accuracy (%) per budget — 10% labels" in md
    section = md.split("report-word-substitution: robust accuracy (%) per budget")[1]
    line = next(x for x in section.splitlines() if x.startswith("| clip"))
    assert "60.0" in line and "40.0" in line


def test_run_time_counts_every_timed_stage():
    from medrobust.report import readouts

    total = readouts.metrics("2")["time_total"]
    timing = {"pretrain_s": 1.0, "pretrain_cached": False, "defense_s": 2.0, "finetune_s": 3.0, "inference_s": 0.5,
              "eval_s": 4.0, "tasks_s": 5.0}
    rec = lambda t: records([{"method": "supervised", "fraction": 0.1, "seed": 0, "timing": t}])[0]  # noqa: E731
    assert total.get(rec(timing)) == 15.5
    assert total.get(rec({k: v for k, v in timing.items() if k != "tasks_s"})) == 10.5  # image-only run


def test_setup_says_how_image_report_arms_are_fine_tuned(full):
    md = full[3].read_text(encoding="utf-8")
    setup_part = md.split("## Setup")[1].split("## Results per metric")[0]
    assert "- **Budgets:** pre-training 150 steps × batch 128" in setup_part
    assert "- **Image+text downstream:** reports (written after reading the image) serve pre-training and retrieval " \
        "only; a classifier sees the image, or the image with the indication" in setup_part
    assert "image+indication classifiers: late fusion, the (pre-trained) image and text encoders" in setup_part
