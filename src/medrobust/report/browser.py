"""Check the HTML report in a real browser (headless Chromium): does it render, fit 1280 px, load every
figure, and show the answer table (``#verdict``) above the fold? Also a PNG screenshot of the page.

No Python dependency: the page is copied with a small script that, on ``load``, measures the facts and writes
them as JSON into ``<pre id='medrobust-check'>``; ``chromium --dump-dom`` prints the DOM after the scripts ran.
Headless Chromium at ``--window-size=W,H`` gives a CSS viewport W px wide (device scale factor forced to 1) but
only about H-140 px high for ``--dump-dom`` (it leaves room for window decorations), so the fold is the height
measured by the page itself (``viewport_height``); a ``--screenshot`` is exactly W x H.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

TIMEOUT_S = 60
_CHECK_ID = "medrobust-check"
_SCRIPT = """<script>window.addEventListener('load', function () {
  var d = document.documentElement, b = document.body, v = document.getElementById('verdict'), r = v && v.getBoundingClientRect();
  var broken = Array.prototype.filter.call(document.images, function (i) { return !i.complete || i.naturalWidth === 0; });
  var facts = {rendered: !!b && b.innerText.trim().length > 0, scroll_width: d.scrollWidth, client_width: d.clientWidth,
    viewport_width: window.innerWidth, viewport_height: window.innerHeight, device_pixel_ratio: window.devicePixelRatio,
    images: document.images.length, broken_images: broken.map(function (i) { return i.alt || i.src.slice(0, 40); }),
    verdict_top: r ? r.top + window.scrollY : null,
    verdict_visible_above_fold: !!r && r.width > 0 && r.height > 0 && r.top + window.scrollY < window.innerHeight};
  var pre = document.createElement('pre'); pre.id = '%s'; pre.textContent = JSON.stringify(facts); d.appendChild(pre);
});</script>""" % _CHECK_ID


def find_chromium() -> str | None:
    """The Chromium executable: ``$MEDROBUST_CHROMIUM``, else ``chromium``, ``chromium-browser`` or
    ``google-chrome`` on PATH; ``None`` when there is none."""
    named = os.environ.get("MEDROBUST_CHROMIUM")
    if named:
        return shutil.which(named) or (named if os.access(named, os.X_OK) else None)
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _run(args: list[str], width: int, height: int) -> str:
    """Run headless Chromium on ``args`` (a fresh profile, scale 1); its stdout, or a RuntimeError saying why not."""
    exe = find_chromium()
    if exe is None:
        raise RuntimeError("no Chromium found (set MEDROBUST_CHROMIUM or install chromium)")
    with tempfile.TemporaryDirectory(prefix="medrobust-chromium-") as profile:
        cmd = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
               "--force-device-scale-factor=1", f"--window-size={width},{height}", f"--user-data-dir={profile}", *args]
        try:
            done = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace",
                                  timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            tail = exc.stderr or ""
            tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
            raise RuntimeError(f"{' '.join(cmd)} ran past {TIMEOUT_S} s; stderr ends: {tail[-1500:]}") from None
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {done.returncode}); stderr ends: {done.stderr[-1500:]}")
    return done.stdout


def check_page(html_path: str | Path, width: int = 1280, height: int = 900, screenshot: str | Path | None = None) -> dict:
    """Render ``html_path`` in headless Chromium at ``width`` x ``height`` and return what the browser measured:

    ``rendered`` (the body has text), ``scroll_width``, ``client_width`` (viewport less a vertical scroll bar),
    ``viewport_width``, ``viewport_height``, ``overflow`` (the page scrolls sideways: scroll width > client width),
    ``images`` (count), ``broken_images`` (alt texts of images that did not load), ``verdict_top`` (page y of the
    ``#verdict`` table, ``None`` without one) and ``verdict_visible_above_fold`` (that table has a size and starts
    within the first viewport height; ``False`` without one). ``screenshot``: also write a PNG of the page there.
    The original file is left alone; the measuring script goes into a temporary copy.
    """
    src = Path(html_path).resolve()
    page = src.read_text(encoding="utf-8")
    base = f"<base href='{src.parent.as_uri()}/'>"  # relative links of the copy resolve as from the original
    page = re.sub(r"(<head[^>]*>)", lambda m: m.group(1) + base, page, count=1, flags=re.I)
    end = re.search(r"</body\s*>", page, flags=re.I)
    page = page[:end.start()] + _SCRIPT + page[end.start():] if end else page + _SCRIPT
    with tempfile.TemporaryDirectory(prefix="medrobust-check-") as tmp:
        copy = Path(tmp) / src.name
        copy.write_text(page, encoding="utf-8")
        dom = _run(["--virtual-time-budget=10000", "--dump-dom", copy.as_uri()], width, height)
    found = re.search(rf"<pre id=\"{_CHECK_ID}\">(.*?)</pre>", dom, flags=re.S)
    if found is None:
        raise RuntimeError(f"Chromium rendered {src} but the measuring script left no result (did 'load' fire?)")
    facts = json.loads(html.unescape(found.group(1)))
    facts["overflow"] = facts["scroll_width"] > facts["client_width"]
    if screenshot is not None:
        facts["screenshot"] = str(_shoot(src, screenshot, width, 1600))
    return facts


def screenshot(html_path: str | Path, png_path: str | Path, width: int = 1280, height: int = 1600) -> Path:
    """Write a ``width`` x ``height`` PNG of the top of ``html_path`` (the page as is, no script added)."""
    return _shoot(html_path, png_path, width, height)


def _shoot(html_path, png_path, width: int, height: int) -> Path:
    png = Path(png_path).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)  # so a stale file cannot pass for this run's screenshot
    _run([f"--screenshot={png}", Path(html_path).resolve().as_uri()], width, height)
    if not png.is_file():
        raise RuntimeError(f"Chromium exited cleanly but wrote no screenshot at {png}")
    return png


def snapshot_report(report_dir: str | Path) -> Path | None:
    """Write ``report_dir/report.png`` (the top of ``report.html``) when Chromium is installed; else do nothing
    and return ``None``."""
    if find_chromium() is None:
        return None
    return screenshot(Path(report_dir) / "report.html", Path(report_dir) / "report.png")
