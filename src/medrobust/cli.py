"""Command line: ``medrobust study | report | data | list``.

A thin layer over the library with ``main(argv)`` callable from tests. Only argparse is imported at start
so ``medrobust --help`` answers at once; each command imports what it needs.
"""

from __future__ import annotations

import argparse
import sys

# registry.FAMILIES, repeated so that `medrobust --help` imports nothing (a test keeps the two equal)
FAMILIES = ("data", "encoder", "method", "attack", "report-attack", "corruption", "defense")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medrobust", description="Does self-supervised pre-training make medical "
                                "image (and image-report) models more robust than supervised training on few "
                                "labels? Run the study, read the answer.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("study", help="run (or resume) a study and write its report",
                       description="Run every pending run of a study config, store each as it finishes, and write "
                       "the report. Re-running the same command resumes: finished runs are skipped.")
    s.add_argument("config", nargs="?", help="study YAML (default: built-in defaults = configs/quick.yaml)")
    s.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. seeds=[0,1] finetune.steps=50")

    r = sub.add_parser("report", help="rebuild the report of a study folder from its results store")
    r.add_argument("study_dir", help="the study folder (holds runs.sqlite, study.yaml, setup.json)")
    r.add_argument("--open", action="store_true", help="then open report.html in the web browser (prints its path)")

    d = sub.add_parser("data", help="write the synthetic data set (or VQA questions about it), or inspect a data file")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    w = dsub.add_parser("synthetic", help="write the embedded synthetic data set as MedMNIST-style .npz and a "
                        "JSONL image-report manifest (PNG images)")
    w.add_argument("out_dir")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--n-per-site", type=int, default=900)
    w.add_argument("--image-size", type=int, default=28)
    w.add_argument("--task", choices=("abnormal", "findings"), default="abnormal")
    w.add_argument("--modality", choices=("chest-xray", "ultrasound", "fundus", "ct"), default="chest-xray",
                   help="which synthetic modality (ct: 3D volumes, written to the manifest as .npy)")
    q = dsub.add_parser("vqa", help="write closed-set VQA questions about the synthetic images as VQA-RAD json, "
                        "or a whole VQA-RAD layout folder",
                        description="--out: generate yes/no and side/zone/size/severity questions from the findings of "
                        "the synthetic data set (the rows the study uses for --split) and write them in the VQA-RAD "
                        "json layout; images are named synthetic_<site>_<row>.png. --folder: write a VQA-RAD layout "
                        "folder (images/<name>.png, trainset.json about the train+val images, testset.json about the "
                        "test images, in the real files' style) that the 'vqa' data source reads with "
                        "data.path=OUT_DIR/trainset.json data.test_path=OUT_DIR/testset.json.")
    where = q.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="the json file to write")
    where.add_argument("--folder", metavar="OUT_DIR", help="the VQA-RAD layout folder to write")
    q.add_argument("--seed", type=int, default=0, help="data seed, also seeds the question draw")
    q.add_argument("--n-per-site", type=int, default=None, help="synthetic images per site (default: 900 with "
                   "--out, 60 with --folder)")
    q.add_argument("--image-size", type=int, default=28)
    q.add_argument("--split", choices=("train", "test", "holdout"), default=None, help="--out only (default: train)")
    q.add_argument("--holdout-sites", nargs="*", default=None, metavar="SITE",
                   help="--out only: sites kept out of train/test, as data.holdout_sites of the study (default: D)")
    q.add_argument("--per-image", type=int, default=None, help="--out only: at most this many questions per image")
    q.add_argument("--no-balance", dest="balance", action="store_false", default=None,
                   help="--out only: ask every presence question (yes/no then follows the ~20%% prevalence)")
    i = dsub.add_parser("inspect", help="describe a data file: MedMNIST .npz, .jsonl / .csv manifest, VQA .json, DICOM .dcm, NIfTI .nii(.gz) or a folder")
    i.add_argument("path")

    ls = sub.add_parser("list", help="every registered component, one per line as '<family> <name>'")
    ls.add_argument("family", nargs="?", choices=FAMILIES)
    return p


def _log(message: str) -> None:
    """Progress lines on stderr with a time stamp (stdout carries only the report path)."""
    import time

    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cmd_study(args) -> int:
    from medrobust.config import load_config
    from medrobust.study.runner import run_study

    cfg = load_config(args.config, args.overrides)
    try:
        path = run_study(cfg, log=_log)
    except KeyboardInterrupt:
        _log(f"interrupted: finished runs are saved in {cfg.study_dir / 'runs.sqlite'}; "
             "run the same command again to resume")
        return 130
    print(path)
    return 0


def cmd_report(args) -> int:
    from medrobust.study.runner import write_study_report

    md = write_study_report(args.study_dir, log=lambda line: print(line, file=sys.stderr))
    print(md)
    if args.open:
        _open_in_browser(md.parent / "report.html")
    return 0


def _open_in_browser(page) -> None:
    """Print ``page`` and open it in the registered web browser; without one, say so on stderr."""
    import webbrowser

    print(page)
    try:
        webbrowser.get()
    except webbrowser.Error:
        print(f"no browser found to open {page}; open it yourself", file=sys.stderr)
        return
    webbrowser.open(page.resolve().as_uri())


def cmd_data(args) -> int:
    if args.data_command == "inspect":
        from medrobust.data.inspect import describe

        print(describe(args.path))
        return 0
    if args.data_command == "vqa":
        return cmd_data_vqa(args)
    from pathlib import Path

    from medrobust.data.synthetic import SyntheticParams, load_synthetic
    from medrobust.data.writers import write_manifest, write_npz

    out = Path(args.out_dir)
    ds = load_synthetic(SyntheticParams(seed=args.seed, n_per_site=args.n_per_site, image_size=args.image_size,
                                        task=args.task, modality=args.modality))
    npz = write_npz(ds, out / "synthetic.npz")
    manifest = write_manifest(ds, out / "manifest", image_format="npy" if ds.spatial_dims == 3 else "png")
    print(f"wrote {npz} (MedMNIST layout, images only)")
    print(f"wrote {manifest} (JSONL image-report manifest with {'.npy volumes' if ds.spatial_dims == 3 else 'PNG images'}, "
          "labels, sites, splits)")
    return 0


def cmd_data_vqa(args) -> int:
    from medrobust.data.base import DataError

    if args.folder is not None:
        return _data_vqa_folder(args)
    from medrobust.data.synthetic import SyntheticParams, load_synthetic
    from medrobust.data.vqa import generate_vqa, image_names_for, study_split, write_vqa_json

    split_name = args.split or "train"
    holdout = ["D"] if args.holdout_sites is None else args.holdout_sites
    try:
        params = SyntheticParams(seed=args.seed, n_per_site=900 if args.n_per_site is None else args.n_per_site,
                                 image_size=args.image_size)
    except ValueError as exc:  # pydantic's ValidationError names the option and the bound
        raise DataError(f"synthetic data: {exc}") from None
    ds = load_synthetic(params)
    split = study_split(ds, split_name, holdout)
    entries = generate_vqa(split, image_names_for(split, ds.site_names), seed=args.seed, per_image=args.per_image,
                           balance=args.balance is not False)
    path = write_vqa_json(args.out, entries)
    closed = [e for e in entries if e["answer_type"] == "CLOSED"]
    yes = sum(e["answer"] == "yes" for e in closed)
    asked = len({e["image_name"] for e in entries})  # balancing can leave an image without questions
    print(f"wrote {path}: {len(entries)} questions on {asked} of the {len(split)} {split_name} images "
          f"({len(closed)} CLOSED, {len(entries) - len(closed)} OPEN; {yes} of {len(closed)} yes/no answers are yes)")
    return 0


def _data_vqa_folder(args) -> int:
    from pathlib import Path

    from medrobust.data.base import DataError

    given = [opt for opt, value in (("--split", args.split), ("--holdout-sites", args.holdout_sites),
                                    ("--per-image", args.per_image), ("--no-balance", args.balance))
             if value is not None]
    if given:
        raise DataError(f"{', '.join(given)} only apply to --out (a question json); --folder writes every question "
                        "of the train+val images to trainset.json and of the test images to testset.json")
    from medrobust.data.vqa import read_vqa_json
    from medrobust.data.vqa_source import write_vqa_folder

    folder = write_vqa_folder(args.folder, n_per_site=60 if args.n_per_site is None else args.n_per_site,
                              seed=args.seed, image_size=args.image_size)
    counts = {name: read_vqa_json(Path(folder) / name) for name in ("trainset.json", "testset.json")}
    n_images = len(list((Path(folder) / "images").glob("*.png")))
    print(f"wrote {folder}: VQA-RAD layout, {n_images} images in images/, trainset.json "
          f"{len(counts['trainset.json'])} questions, testset.json {len(counts['testset.json'])} questions; "
          f"use it with data.source=vqa data.path={Path(folder) / 'trainset.json'} "
          f"data.test_path={Path(folder) / 'testset.json'} data.holdout_sites=[]")
    return 0


def cmd_list(args) -> int:
    from medrobust import registry

    for family, name in registry.entries():
        if args.family in (None, family):
            print(f"{family} {name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for stream in (sys.stdout, sys.stderr):  # real files hold odd bytes (lone surrogates): print them escaped
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    from medrobust.attacks.base import AttackInputError
    from medrobust.config import ConfigError
    from medrobust.data.base import DataError
    from medrobust.engine.checkpoint import CheckpointError
    from medrobust.engine.train import TrainingError
    from medrobust.registry import RegistryError
    from medrobust.study.store import StoreError

    handlers = {"study": cmd_study, "report": cmd_report, "data": cmd_data, "list": cmd_list}
    expected = (ConfigError, DataError, FileNotFoundError, CheckpointError, TrainingError, RegistryError, StoreError,
                AttackInputError)
    try:
        return handlers[args.command](args)
    except expected as exc:
        print(f"medrobust {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
