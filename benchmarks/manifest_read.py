"""Cost of reading real data through a manifest: decoding, fitting and the on-disk cache.

Measures, in one run on this machine:
1. 2,000 small PNGs (28 × 28 gray) from a JSONL manifest: first read (decode) vs second read (cache), and the
   same without the cache (decode every time).
2. The COVID-19 image data collection's ``metadata.csv`` as published (184 JPEG/PNG files of every size and
   mode, 64 × 64 gray), first read vs cached read, when ``../shared/data/covid-chestxray`` is present.
Prints seconds and the speed-up ratio of the cache. Run: .venv/bin/python benchmarks/manifest_read.py
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from medrobust.data.manifest import ManifestParams, load_manifest

COVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "covid-chestxray" / "metadata.csv"


def timed(params: ManifestParams) -> float:
    t0 = time.perf_counter()
    load_manifest(params)
    return time.perf_counter() - t0


def pngs(folder: Path, n: int = 2000) -> Path:
    rng = np.random.default_rng(0)
    encoded = []
    for img in rng.integers(0, 256, (50, 28, 28), dtype=np.uint8):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        encoded.append(buf.getvalue())
    (folder / "im").mkdir()
    lines = []
    for i in range(n):
        (folder / "im" / f"{i}.png").write_bytes(encoded[i % 50])
        lines.append(json.dumps({"image": f"im/{i}.png", "label": i % 3, "split": "train"}))
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MEDROBUST_CACHE"] = str(Path(tmp) / "cache")
        path = pngs(Path(tmp))
        p = ManifestParams(path=str(path))
        first, second = timed(p), timed(p)
        uncached = timed(ManifestParams(path=str(path), cache=False))
        print(f"2000 PNGs 28x28: first read {first:.2f} s, cached read {second:.3f} s "
              f"(x{first / second:.0f}), without cache {uncached:.2f} s")
        if COVID.is_file():
            covid = ManifestParams(
                path=str(COVID), images_dir="images", where={"modality": "X-ray"}, image_size=64, channels=1,
                columns={"image": "filename", "text": "clinical_notes", "label": "finding", "site": "location",
                         "group": "patientid"}, label_map={"COVID-19": "covid", "COVID-19, ARDS": "covid", "*": "other"})
            first, second = timed(covid), timed(covid)
            print(f"covid-chestxray metadata.csv (189 rows, 184 files, 64x64 gray): first read {first:.2f} s, "
                  f"cached read {second:.3f} s (x{first / second:.0f})")
        else:
            print(f"{COVID} not present: covid benchmark skipped")


if __name__ == "__main__":
    main()
