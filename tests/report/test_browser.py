"""The HTML report in a real browser (headless Chromium, medrobust.report.browser): it renders, fits 1280 px,
loads every figure and shows the answer table above the fold; and negative pages prove each check can fail."""

import struct

import numpy as np
import pytest

from medrobust import cli
from medrobust.report import browser, render
from records import facts, records

needs_chromium = pytest.mark.skipif(browser.find_chromium() is None,
                                    reason="chromium not installed: apt-get install chromium")

EPS = ["0", "1", "2", "4"]


def _study():
    """Two arms (supervised and SimCLR), one label fraction, three seeds: enough for every section and figure."""
    rng = np.random.default_rng(0)
    recs = []
    for m, cp, boost in (("supervised", None, 0.0), ("simclr", "supervised", 0.1)):
        for s in range(3):
            clean = float(0.8 + boost / 2 + 0.01 * rng.standard_normal())
            worst = {e: clean * float(np.exp(-float(e) * (0.4 - 2 * boost))) for e in EPS}
            recs.append({"method": m, "fraction": 0.1, "seed": s, "counterpart": cp, "modalities": ["image"],
                         "finetune_mode": "full",
                         "metrics": {"clean": {"acc": clean, "auc": clean + 0.03},
                                     "attacks": {"pgd": worst, "worst": worst},
                                     "corruptions": {"gaussian-noise": {str(v): clean - 0.05 * v for v in range(1, 4)}},
                                     "holdout": {"acc": clean - 0.1 + boost, "auc": 0.8}},
                         "timing": {"pretrain_s": 3.0 if cp else 0.0, "finetune_s": 2.0, "eval_s": 1.0},
                         "info": {"n_labeled": 180, "n_train": 1800, "n_test": 600, "n_adv": 300}})
    setup = {"study": "browser", "data": "synthetic", "task_kind": "binary", "label_names": ["normal", "abnormal"],
             "train_sites": ["A", "B"], "holdout_sites": ["D"], "methods": ["supervised", "simclr"],
             "fractions": [0.1], "seeds": [0, 1, 2], "epsilons": EPS, "reference_epsilon": "2",
             "attacks": [{"name": "pgd", "params": {"steps": 10}}], "corruptions": ["gaussian-noise"],
             "severities": [1, 2, 3], "config_yaml": "study: browser\n",
             "pretrain": {"steps": 10, "batch_size": 32}, "finetune": {"steps": 10, "batch_size": 32}}
    return records(recs), facts(setup)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """(report.html path, what the browser measured on it at 1280 x 900): one render for the module."""
    out = tmp_path_factory.mktemp("browser-report")
    recs, setup = _study()
    render.write_report(recs, setup, out)
    page = out / "report.html"
    return page, browser.check_page(page)


def page(tmp_path, body: str):
    path = tmp_path / "page.html"
    path.write_text("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>t</title></head>\n"
                    f"<body>{body}</body></html>", encoding="utf-8")
    return path


VERDICT = "<h2>The answer</h2><table id='verdict'><tr><th>arm</th><th>verdict</th></tr><tr><td>a</td><td>b</td></tr></table>"


@needs_chromium
def test_report_renders_fits_1280_and_loads_every_figure(report):
    _, got = report
    assert got["rendered"]
    assert got["viewport_width"] == 1280 and got["device_pixel_ratio"] == 1, got  # the window size is the CSS viewport
    assert not got["overflow"], f"the report scrolls sideways at 1280 px: {got}"
    assert got["images"] >= 1 and got["broken_images"] == [], got


@needs_chromium
def test_report_answer_table_above_fold(report):
    """The answer table (``<table id='verdict'>`` under "The answer") shows without scrolling at 1280 x 900."""
    _, got = report
    assert got["verdict_top"] is not None, "the report has no #verdict table"
    assert got["verdict_visible_above_fold"], (f"#verdict starts at y={got['verdict_top']:.0f}, below the fold "
                                               f"({got['viewport_height']} px)")


@needs_chromium
def test_overflow_is_caught(tmp_path):
    got = browser.check_page(page(tmp_path, "<p>wide</p><div style='width:3000px;height:10px;background:red'></div>"))
    assert got["rendered"] and got["overflow"] and got["scroll_width"] >= 3000, got


@needs_chromium
def test_broken_image_is_caught(tmp_path):
    got = browser.check_page(page(tmp_path, "<p>x</p><img alt='broken.png' src='data:image/png;base64,AAAA'>"))
    assert got["images"] == 1 and got["broken_images"] == ["broken.png"], got


@needs_chromium
@pytest.mark.parametrize("body, top_expected, above", [
    ("<p>no answer table here</p>", False, False),
    ("<div style='height:3000px'>long preamble</div>" + VERDICT, True, False),
    (VERDICT + "<div style='height:3000px'>the rest</div>", True, True),
], ids=["missing", "below-fold", "at-top"])
def test_verdict_above_fold_check(tmp_path, body, top_expected, above):
    got = browser.check_page(page(tmp_path, body))
    assert (got["verdict_top"] is not None) is top_expected and got["verdict_visible_above_fold"] is above, got


@needs_chromium
def test_screenshot_is_a_1280_px_png(report, tmp_path):
    html_path, _ = report
    png = browser.screenshot(html_path, tmp_path / "shot.png")
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    assert struct.unpack(">II", head[16:24]) == (1280, 1600)


def test_snapshot_report_without_chromium_does_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(browser, "find_chromium", lambda: None)
    assert browser.snapshot_report(tmp_path) is None and list(tmp_path.iterdir()) == []


def test_chromium_failure_names_the_command(tmp_path, monkeypatch):
    fake = tmp_path / "fake-chromium"
    fake.write_text("#!/bin/sh\necho 'cannot start: no display' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("MEDROBUST_CHROMIUM", str(fake))
    with pytest.raises(RuntimeError, match=r"fake-chromium.*exit 3.*cannot start: no display"):
        browser.check_page(page(tmp_path, "<p>x</p>"))


def test_open_without_a_browser_says_so(tmp_path, monkeypatch, capsys):
    import webbrowser

    def none():
        raise webbrowser.Error("could not locate runnable browser")

    opened = []
    monkeypatch.setattr(webbrowser, "get", none)
    monkeypatch.setattr(webbrowser, "open", opened.append)
    cli._open_in_browser(tmp_path / "report.html")
    out, err = capsys.readouterr()
    assert out.strip() == str(tmp_path / "report.html") and opened == []
    assert f"no browser found to open {tmp_path / 'report.html'}; open it yourself" in err


def test_open_with_a_browser_opens_the_file_uri(tmp_path, monkeypatch):
    import webbrowser

    opened = []
    monkeypatch.setattr(webbrowser, "get", lambda: object())
    monkeypatch.setattr(webbrowser, "open", opened.append)
    cli._open_in_browser(tmp_path / "report.html")
    assert opened == [(tmp_path / "report.html").as_uri()]
