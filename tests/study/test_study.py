"""End-to-end study: grid, store, resume after a kill, report, skipped arms, CLI."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medrobust.cli import main
from medrobust.config import ConfigError, load_config
from medrobust.study.runner import run_study
from medrobust.study.store import Store
from conftest import SHARED_DATA, tiny_overrides


def _finished(study_dir: Path) -> dict[str, float]:
    db = study_dir / "runs.sqlite"
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return dict(conn.execute("SELECT key, finished FROM runs"))
    except sqlite3.OperationalError:
        return {}


@pytest.mark.slow
def test_tiny_study_end_to_end_and_rerun_skips(tmp_path, capsys):
    out = tmp_path / "study"
    # one seed, three arms (clip runs in the CSV and VQA study tests): two fractions share one pre-training
    one_seed = [*tiny_overrides(out), "seeds=[0]", "methods=[supervised, supervised-multimodal, simclr]"]
    assert main(["study", "configs/quick.yaml", *one_seed]) == 0
    report = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert report == out / "report" / "report.md" and report.exists()
    assert (out / "report" / "report.html").exists()
    runs = _finished(out)
    assert len(runs) == 3 * 2 * 1  # methods x fractions x seeds
    records = Store(out / "runs.sqlite").records()
    for r in records:
        m = r.metrics
        assert 0 <= m.clean.acc <= 1 and m.holdout is not None
        assert set(m.attacks) == {"fgsm", "pgd", "worst"} and set(m.attacks["pgd"]) == {"0", "2", "8"}
        assert m.attacks["pgd"]["0"] >= m.attacks["pgd"]["8"]
        assert (m.without_text is not None) == r.uses_text
        assert {c.name for c in m.checks} >= {"eps0_equals_clean", "monotone_in_eps"}
        assert next(c for c in m.checks if c.name == "eps0_equals_clean").passed
    pre = [r for r in records if r.self_supervised]
    assert sum(not r.timing.pretrain_cached for r in pre) == 1 * 1, "pre-train once per method and seed"
    assert sum(r.timing.pretrain_cached for r in pre) == 1  # the other fraction reused it
    # a second run finds everything finished and redoes nothing
    assert main(["study", "configs/quick.yaml", *one_seed]) == 0
    assert _finished(out) == runs
    # the report is rebuilt from the store alone
    (out / "report" / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report" / "report.md").exists()


@pytest.mark.slow
def test_study_killed_midway_resumes_without_redoing(tmp_path):
    out = tmp_path / "study"
    # one label fraction and one seed: 4 runs are enough for the kill to land mid-study (it lands as the first
    # run is stored; more runs only made this test longer)
    cmd = [sys.executable, "-m", "medrobust", "study", "configs/quick.yaml", *tiny_overrides(out),
           "label_fractions=[1.0]", "seeds=[0]"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not _finished(out) and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = _finished(out)
    assert 1 <= len(first) < 4, f"the kill should land mid-study, {len(first)} runs were finished"
    # the stopped study's report: what finished, marked partial, with the missing count on stderr
    done = subprocess.run([sys.executable, "-m", "medrobust", "report", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    missing = 4 - len(_finished(out))
    assert f"partial study: {missing} of 4 runs have not finished" in done.stderr
    assert f"Partial report: {missing} of the study's 4 runs have not finished" in (out / "report" / "report.md").read_text()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    after = _finished(out)
    assert len(after) == 4
    for key, finished in first.items():
        assert after[key] == finished, "a run finished before the kill was redone"


@pytest.mark.slow
def test_medmnist_study_skips_image_report_arms(tmp_path, capsys):
    npz = SHARED_DATA / "breastmnist.npz"
    if not npz.exists():
        pytest.skip("../shared/data/breastmnist.npz not available")
    out = tmp_path / "mm"
    overrides = [o for o in tiny_overrides(out) if not o.startswith("data.")] + [f"data.path={npz}", "seeds=[0]"]
    assert main(["study", "configs/medmnist.yaml", *overrides]) == 0
    text = (out / "report" / "report.md").read_text()
    records = Store(out / "runs.sqlite").records()
    assert {r.arm for r in records} == {"supervised", "simclr"}
    assert all(r.metrics.holdout is None for r in records)
    assert "clip" in text and "no report text" in text


def test_holdout_site_must_exist():
    cfg = load_config("configs/medmnist.yaml", [f"data.path={SHARED_DATA / 'breastmnist.npz'}", "data.holdout_sites=[D]"])
    if not (SHARED_DATA / "breastmnist.npz").exists():
        pytest.skip("../shared/data/breastmnist.npz not available")
    with pytest.raises(ConfigError, match="holdout_sites.*'D'"):
        run_study(cfg, log=lambda _m: None)


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["study", "configs/quick.yaml", "finetune.stpes=2"]) == 2
    assert "unknown key 'finetune.stpes'" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "study.yaml is missing" in capsys.readouterr().err


def test_help_is_light():
    code = ("import sys; from medrobust.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'sklearn', 'matplotlib', 'scipy') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out and "study" in out


def test_list_prints_family_and_name(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    pairs = [tuple(line.split(" ")) for line in lines]
    assert all(len(p) == 2 for p in pairs)
    for expected in [("data", "synthetic"), ("data", "medmnist"), ("data", "manifest"), ("encoder", "cnn"),
                     ("encoder", "vit"), ("encoder", "transformer"), ("method", "supervised"),
                     ("method", "supervised-multimodal"), ("method", "simclr"), ("method", "clip"),
                     ("attack", "fgsm"), ("attack", "pgd"), ("corruption", "gaussian-noise")]:
        assert expected in pairs
    assert {p[0] for p in pairs} <= {"data", "encoder", "method", "attack", "report-attack", "corruption", "defense"}


def test_data_command_writes_readable_files_and_inspects_them(tmp_path, capsys):
    from medrobust.data.manifest import load_manifest
    from medrobust.data.medmnist import load_medmnist
    from medrobust.data.synthetic import SyntheticParams, load_synthetic

    assert main(["data", "synthetic", str(tmp_path), "--n-per-site", "18", "--seed", "4"]) == 0
    ref = load_synthetic(SyntheticParams(n_per_site=18, seed=4))
    npz = load_medmnist(tmp_path / "synthetic.npz")
    man = load_manifest(tmp_path / "manifest" / "manifest.jsonl")
    for split in ("train", "val", "test"):
        a, b, c = getattr(ref, split), getattr(npz, split), getattr(man, split)
        assert (a.images == b.images).all() and (a.labels == b.labels).all()
        assert (a.images == c.images).all() and a.texts == c.texts
        assert [ref.site_names[i] for i in a.sites] == [man.site_names[i] for i in c.sites]
    capsys.readouterr()
    assert main(["data", "inspect", str(tmp_path / "manifest" / "manifest.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "72" in out and "A" in out and "D" in out  # 4 sites x 18 entries
    assert main(["data", "inspect", str(tmp_path / "nothing.csv")]) == 2
    ct = tmp_path / "ct"  # a 3D modality: the manifest holds .npy volumes that read back identically
    assert main(["data", "synthetic", str(ct), "--n-per-site", "9", "--modality", "ct"]) == 0
    ref, back = load_synthetic(SyntheticParams(n_per_site=9, modality="ct")), load_manifest(ct / "manifest" / "manifest.jsonl")
    assert ref.train.images.shape[1:] == (1, 28, 28, 28) and (ref.train.images == back.train.images).all()
    assert (ref.test.labels == back.test.labels).all()


def test_linear_probe_mode_keeps_pretrained_encoder_fixed(tmp_path, monkeypatch):
    """finetune.mode=linear: the self-supervised encoder after fine-tuning equals the pre-trained one."""
    import torch

    from medrobust.engine.checkpoint import load_modules
    from medrobust.study.prepare import prepare
    from medrobust.models.build import build_encoders
    from medrobust.study.context import inputs_of
    from medrobust.study.runner import execute, model_specs
    from medrobust.study.spec import expand

    cfg = load_config("configs/quick.yaml", tiny_overrides(tmp_path) + ["methods=[simclr]", "seeds=[0]",
                                                                        "label_fractions=[1.0]", "finetune.mode=linear"])
    data = prepare(cfg)
    (run,), _ = expand(cfg, data.has_text)
    seen = {}
    import medrobust.study.context as context_mod

    real_fit = context_mod.fit

    def spy(method, tensors, fit_cfg, **kw):  # keep the weights each training stage ends with
        result = real_fit(method, tensors, fit_cfg, **kw)
        seen[type(method).__name__] = {k: v.clone() for k, v in method.state_dict().items()}
        return result

    monkeypatch.setattr(context_mod, "fit", spy)
    record = execute(run, cfg, data, torch.device("cpu"), tmp_path, log=lambda _m: None)
    assert record.finetune_mode == "linear"
    image, _, _ = build_encoders(model_specs(cfg), inputs_of(data), 0)
    (ckpt,) = (tmp_path / "checkpoints").glob("simclr-*.pt")
    load_modules(ckpt, {"image": image})
    tuned = seen["Supervised"]
    for k, v in image.state_dict().items():
        assert torch.equal(tuned[f"model.image_encoder.{k}"], v), f"{k} changed during linear probing"
    assert not torch.equal(tuned["model.head.weight"], torch.zeros_like(tuned["model.head.weight"]))


@pytest.mark.slow
def test_study_under_torchrun_two_processes(tmp_path):
    """The same study command trains data-parallel under torchrun (gloo) and stores every run once."""
    out = tmp_path / "ddp"
    overrides = tiny_overrides(out) + ["seeds=[0]", "methods=[supervised,clip]"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "medrobust", "study", "configs/quick.yaml", *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = Store(out / "runs.sqlite").records()
    assert sorted((r.arm, r.fraction) for r in records) == [
        ("clip", 0.5), ("clip", 1.0), ("supervised", 0.5), ("supervised", 1.0)]
    assert (out / "report" / "report.md").exists()


def test_corrupt_store_and_missing_data_file_are_clear_errors(tmp_path, capsys):
    out = tmp_path / "broken"
    out.mkdir()
    (out / "runs.sqlite").write_bytes(b"this is not a database" * 100)
    assert main(["study", "configs/quick.yaml", *tiny_overrides(out), "methods=[supervised]", "seeds=[0]"]) == 2
    err = capsys.readouterr().err
    assert "runs.sqlite" in err and "not a usable SQLite file" in err
    assert main(["study", "configs/medmnist.yaml", f"output_dir={tmp_path / 'x'}", "data.path=/nonexistent/b.npz"]) == 2
    assert "/nonexistent/b.npz" in capsys.readouterr().err


@pytest.mark.slow
def test_multimodal_tasks_defenses_and_probes_in_one_tiny_study(tmp_path, capsys):
    """Fusion arms with retrieval + VQA, a robust-mmr ablation, defended arms and the kNN / linear probes."""
    out = tmp_path / "mm"
    overrides = tiny_overrides(out) + [
        "seeds=[0]", "label_fractions=[0.5]", "multimodal.fusion={name: fusion, dim: 32}",
        "multimodal.tasks=[retrieval, vqa]", "multimodal.retrieval_pairs=20", "multimodal.vqa_questions=30",
        "finetune.mode=[full, knn]", "evaluation.corruptions=[gaussian-noise, jpeg]",  # averaged task conditions
        "methods=[supervised, {name: supervised, defense: input-noise}, simclr, supervised-multimodal, mmr, "
        "{name: robust-mmr, domain_weight: 0}]"]  # a defended image+text arm: tests/defenses (its large-ε check on
    # a model at chance runs a 1000-query Square under EOT: ~30 s of this test, cut for the make-test budget)
    assert main(["study", "configs/quick.yaml", *overrides]) == 0
    records = {r.arm: r for r in Store(out / "runs.sqlite").records()}
    assert set(records) == {"supervised", "supervised + input-noise", "simclr", "simclr [knn]", "supervised-multimodal",
                            "mmr", "robust-mmr(domain_weight=0)"}
    for arm in ("supervised-multimodal", "mmr", "robust-mmr(domain_weight=0)"):
        mm = records[arm].tasks
        assert mm.retrieval is not None and mm.vqa is not None
        clean = mm.retrieval["clean"].image_to_report
        assert 1 <= clean.mean_rank <= 20 and 0 <= clean.recall_at[1] <= 1 and clean.n == 20
        assert mm.retrieval["corrupted_image"].degradation is not None
        assert 0 <= mm.vqa["clean"].overall.accuracy <= 1 and mm.vqa["clean"].overall.n == 30
        # only the image+indication classifier reads text; the pre-trained arms' classifiers see the image only
        assert (records[arm].metrics.without_image is not None) == (arm == "supervised-multimodal")
        assert records[arm].uses_text == (arm == "supervised-multimodal")
        assert records[arm].timing.tasks_s > 0  # counted in the report's run time
    assert records["supervised"].timing.tasks_s == 0
    noisy = records["supervised + input-noise"]
    assert noisy.defense == "input-noise" and noisy.randomized and noisy.undefended == "supervised"
    assert "2" in noisy.metrics.attacks["pgd_without_eot"]
    assert records["simclr [knn]"].finetune_mode == "knn"
    text = (out / "report" / "report.md").read_text() + (out / "report" / "appendix.md").read_text()
    for heading in ("## Defenses", "## Multimodal arms", "### Retrieval image→report: R@1", "### VQA accuracy"):
        assert heading in text
    assert records["mmr"].counterpart == "supervised" and records["mmr"].task_counterpart == "supervised-multimodal"
    assert records["mmr"].pretrained_on == ("image", "text")
    assert 0 <= records["supervised-multimodal"].metrics.without_image.acc <= 1
    assert "image+indication classifiers: the fusion transformer (fusion {'dim': 32})" in text
    assert "- **Budgets:** pre-training 4 steps × batch 32" in text


def test_progress_note_gives_elapsed_time_and_what_is_left():
    from medrobust.study.progress import progress_note

    assert progress_note(1, 4, 30.0) == "elapsed 0:30, about 1:30 left"
    assert progress_note(3, 4, 3725.0) == "elapsed 1:02:05, about 20:42 left"
    assert progress_note(4, 4, 61.0) == "elapsed 1:01, done"
