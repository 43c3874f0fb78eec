"""How far is the CPU worst case (``standard`` preset) from the published AutoAttack budgets (``autoattack``)?

Trains the demo's two image arms as the study does (``configs/quick.yaml``: ``supervised`` and ``simclr``,
one seed, 10% labels, the config's pre-training and fine-tuning budgets, through the study's own
``prepare`` / ``expand`` / ``pretrain`` / ``RunContext``), then on the study's fixed attacked subset
(``adversarial_subset``, the same examples for both presets) measures the worst-case robust accuracy at
ε = 1, 2, 4 /255: the study's curves (FGSM, PGD-10) once, then each preset's sequence (APGD-CE, APGD-CE
restarts in place of APGD-DLR on this two-class task, Square) with ε-nesting, as ``evaluate`` runs it.
Prints the gap (standard − autoattack, in points) and the wall time of each sequence (curves excluded,
shared), single-threaded; and the ``attack_converged`` self-check of the standard preset at 2/255.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/attack_calibration.py [--examples 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from medrobust import registry
from medrobust.config import load_config
from medrobust.data.fractions import label_subset
from medrobust.evaluation import adversarial, checks
from medrobust.evaluation.adversarial import PRESETS, AttackTarget, SequenceState
from medrobust.evaluation.robustness import EVAL_SEED, adversarial_subset
from medrobust.methods.contract import info_of
from medrobust.models.build import classifier_for
from medrobust.study.context import RunContext, pretrain
from medrobust.study.prepare import prepare
from medrobust.study.runner import finetune_budget, model_specs
from medrobust.study.spec import expand

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"
EPSILONS = [1.0, 2.0, 4.0]


def train(run, cfg, data, device, work: Path):
    """The run's fine-tuned classifier, as ``medrobust.study.runner.execute`` trains it (no defense, full)."""
    info = info_of(registry.get("method", run.method.name))
    specs = model_specs(cfg)
    pretrained = pretrain(run, specs, data, cfg.pretrain, device, work / "checkpoints", print) \
        if info.self_supervised else None
    ctx = RunContext(run, data, specs, finetune_budget(cfg), device, pretrained)
    model = classifier_for(*ctx.modules(), data.dataset.task.n_outputs)
    objective_cls = ctx.objective
    objective = objective_cls(model, data.dataset.task, objective_cls.Params.model_validate(
        run.method.params if objective_cls is registry.get("method", run.method.name) else {}))
    labeled = label_subset(data.train.labels, run.fraction, run.seed)
    ctx.fit(objective, data.train_tensors(labeled, labels=True, text=ctx.uses_text), model)
    return model.cpu().eval()


def calibrate(model, data, cfg, n: int) -> dict:
    ev = data.eval_data
    subset = adversarial_subset(ev.test_labels, n)
    target = AttackTarget(model, ev.test_images[subset], ev.test_labels[subset], ev.task, batch_size=256)
    grid = [0.0, *EPSILONS]
    start = time.perf_counter()
    per = adversarial.curves(target, cfg.evaluation.attacks, grid, EVAL_SEED)
    out = {"n": len(subset), "clean": float(target.clean_accuracy().mean()), "curves_s": time.perf_counter() - start}
    for preset in ("standard", "autoattack"):
        start = time.perf_counter()
        worst, broke = adversarial.worst_case(target, per, grid, PRESETS[preset], EVAL_SEED, SequenceState(None, ""),
                                              run_at=EPSILONS)
        out[preset] = {"acc": {e: float(worst[e].mean()) for e in EPSILONS}, "s": time.perf_counter() - start,
                       "broke": broke, "worst": worst}
    steps = adversarial.sequence_steps(PRESETS["standard"], ev.task)
    strongest = adversarial.strongest_gradient_attack(steps, cfg.evaluation.attacks)
    start = time.perf_counter()
    ref = out["standard"]["worst"][2.0]
    after = adversarial.convergence(target, ref, strongest, 2.0, EVAL_SEED)
    out["converged"] = checks.attack_converged(float(ref.mean()), float(after.mean()), 2.0, len(subset),
                                               adversarial.describe(adversarial.reinforced(strongest)))
    out["converged_s"] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100, help="attacked test examples (the study's subset)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(CONFIG, ["methods=[supervised, simclr]", "seeds=[0]", "label_fractions=[0.1]",
                                   "device=cpu", f"output_dir={tmp}", f"evaluation.max_adversarial={args.examples}"])
        data = prepare(cfg)
        runs, _ = expand(cfg, data.has_text)
        results = {}
        for run in runs:
            t_train = time.perf_counter()
            model = train(run, cfg, data, torch.device("cpu"), Path(tmp))
            print(f"{run.label}: trained in {time.perf_counter() - t_train:.1f} s")
            results[run.arm] = calibrate(model, data, cfg, args.examples)
    print(f"\n{data.describe()}\nsequences: standard {[s.label for s in adversarial.sequence_steps(PRESETS['standard'], data.dataset.task)]}"
          f" = {[c.model_dump() for c in PRESETS['standard']]}; autoattack = {[c.model_dump() for c in PRESETS['autoattack']]}\n")
    print("| arm | n | clean | ε (/255) | worst, standard | worst, autoattack | gap (pp) |")
    print("|---|---|---|---|---|---|---|")
    for arm, r in results.items():
        for e in EPSILONS:
            s, a = r["standard"]["acc"][e], r["autoattack"]["acc"][e]
            print(f"| {arm} | {r['n']} | {r['clean']:.3f} | {e:g} | {s:.3f} | {a:.3f} | {100 * (s - a):+.1f} |")
    print("\n| arm | curves (s) | standard sequence (s) | autoattack sequence (s) | time ratio | convergence check (s) |")
    print("|---|---|---|---|---|---|")
    for arm, r in results.items():
        s, a = r["standard"]["s"], r["autoattack"]["s"]
        print(f"| {arm} | {r['curves_s']:.1f} | {s:.1f} | {a:.1f} | {a / s:.1f}× | {r['converged_s']:.1f} |")
    print()
    for arm, r in results.items():
        print(f"{arm}: broke standard {r['standard']['broke']}; autoattack {r['autoattack']['broke']}")
        c = r["converged"]
        print(f"{arm}: attack_converged {'passed' if c['passed'] else 'FAILED'}: {c['detail']}")
    print(f"\ntotal wall time {time.perf_counter() - t0:.0f} s (1 thread)")


if __name__ == "__main__":
    main()
