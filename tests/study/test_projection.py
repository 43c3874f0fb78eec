"""The projected cost of a run's phases, known before it starts: passes per phase from the config and the data,
times the measured cost of one pass; over the per-run budget, the study names the keys to lower."""

import pytest

from conftest import tiny_overrides
from medrobust.config import load_config
from medrobust.schema import Component
from medrobust.study import projection
from medrobust.study.prepare import prepare
from medrobust.study.runner import resolve_corruptions


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = load_config("configs/quick.yaml", tiny_overrides(tmp_path_factory.mktemp("p")))
    data = prepare(cfg)
    return resolve_corruptions(cfg, data), data


def test_passes_per_attack():
    assert projection.passes(Component(name="pgd", params={"steps": 10})) == (10, 1)
    assert projection.passes(Component(name="fgsm")) == (1, 1)
    assert projection.passes(Component(name="square", params={"n_queries": 100})) == (0, 100)
    assert projection.passes(Component(name="apgd-ce", params={"steps": 10, "restarts": 2})) == (20, 2)


def test_phases_follow_examples_times_epsilons_times_steps(tiny):
    cfg, data = tiny
    phases = {p.name: p for p in projection.project(cfg, data, fb=1.0, f=0.0, corrupt=0.0)}
    n_adv = min(cfg.evaluation.max_adversarial, len(data.test))  # 20
    # curves: fgsm (1) + pgd (3 steps) at ε 2 and 8
    assert phases["attack curves"].seconds == pytest.approx(n_adv * 2 * (1 + 3))
    # worst case at ε 2 only: apgd-ce 10 + apgd-ce-restarts (2 classes: 10 steps × restarts) + square (forward only)
    restarts = sum(projection.passes(s.spec)[0] for s in
                   projection.sequence_steps(cfg.evaluation.sequence(), data.dataset.task))
    assert phases["worst-case sequence"].seconds == pytest.approx(n_adv * 1 * restarts)
    assert phases["worst-case sequence"].upper_bound and not phases["attack curves"].upper_bound
    assert phases["fine-tuning"].seconds == pytest.approx(cfg.finetune.steps * cfg.finetune.batch_size)  # train = fb
    only_f = {p.name: p for p in projection.project(cfg, data, fb=0.0, f=1.0, corrupt=0.0)}
    assert only_f["corruptions"].seconds == pytest.approx(1 * 2 * len(data.test))  # 1 corruption × 2 severities


def test_over_budget_names_the_keys_and_cuts_nothing(tiny):
    cfg, data = tiny
    lines = projection.projection_lines(cfg, data, n_runs=4, n_pretrain=2)
    assert len(lines) == 1 and "projected per run" in lines[0] and "4 runs and 2 pre-trainings" in lines[0]
    tight = cfg.model_copy(update={"run_budget_min": 1e-4})
    lines = projection.projection_lines(tight, data, n_runs=4, n_pretrain=0)
    assert len(lines) == 2 and "over run_budget_min" in lines[1] and "nothing is cut" in lines[1]
    assert "evaluation." in lines[1] or "finetune." in lines[1]
    assert tight.evaluation == cfg.evaluation  # the budget changes no key
