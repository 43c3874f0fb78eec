"""Worst-case (AutoAttack-style) evaluation: resumable state, per-example worst case, and the self-checks
catching a model whose gradients are masked."""

import pytest
import torch

from medrobust.evaluation import adversarial, checks
from medrobust.evaluation.adversarial import AttackTarget, SequenceState, curves, to_pixels, worst_case
from medrobust.schema import Component
from conftest import GradientMasked

EPS = [0.0, 1.0, 2.0, 4.0]
CURVES = [Component(name="fgsm")]
SEQUENCE = [Component(name="pgd", params={"steps": 5}), Component(name="pgd", params={"steps": 10, "restarts": 2})]


@pytest.fixture(scope="module")
def target(trained_classifier):
    model, x, y, task = trained_classifier
    images = (x[:120] * 255).round().to(torch.uint8).numpy()
    return AttackTarget(model, images, y[:120].numpy(), task, batch_size=64)


def test_worst_case_is_per_example_minimum_and_monotone(target):
    per = curves(target, CURVES, EPS, seed=0)
    told = []
    worst, broke = worst_case(target, per, EPS, SEQUENCE, 0, SequenceState(None, "m"), progress=told.append)
    # each step that attacks is announced with its place in the sequence, ε and how many examples it attacks
    assert told[0].startswith("worst-case sequence 1/6: pgd[0] at ε 1/255, ")
    assert all(f"/6: " in t for t in told) and len(told) <= 6
    for eps in EPS:
        assert (worst[eps] <= per["fgsm"][eps]).all()
    means = [float(worst[e].mean()) for e in EPS]
    assert means == sorted(means, reverse=True)
    assert float(worst[0.0].mean()) == float(per["fgsm"][0.0].mean()), "ε=0 must stay clean"
    assert set(broke) == {"pgd[0]", "pgd[1]"}
    assert sum(broke["pgd[0]"].values()) > 0, "the sequence should break examples FGSM left correct"


def test_interrupted_worst_case_resumes_to_the_same_result(target, tmp_path, monkeypatch):
    per = curves(target, CURVES, EPS, seed=0)
    reference, _ = worst_case(target, per, EPS, SEQUENCE, 0, SequenceState(None, "m"))
    path = tmp_path / "state.json"
    calls = {"n": 0}
    real = AttackTarget.accuracy_under

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("killed")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(AttackTarget, "accuracy_under", flaky)
    with pytest.raises(KeyboardInterrupt):
        worst_case(target, per, EPS, SEQUENCE, 0, SequenceState(path, "m"))
    assert path.exists()
    monkeypatch.setattr(AttackTarget, "accuracy_under", real)
    counted = {"n": 0}

    def counting(self, *args, **kwargs):
        counted["n"] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(AttackTarget, "accuracy_under", counting)
    resumed, _ = worst_case(target, per, EPS, SEQUENCE, 0, SequenceState(path, "m"))
    for eps in EPS:
        assert torch.equal(resumed[eps], reference[eps])
    assert counted["n"] < 6, "steps finished before the interruption must not run again"
    # a state saved for other weights is ignored
    assert SequenceState(path, "other-model").get("1|pgd[0]") is None
    assert SequenceState(path, "m").get("1|pgd[0]") is not None


def test_self_checks_flag_masked_gradients(target):
    masked = AttackTarget(GradientMasked(target.model), target.images, target.labels, target.task, batch_size=64)
    pgd = adversarial.build_attack(Component(name="pgd", params={"steps": 10}))
    g = torch.Generator().manual_seed(0)
    big_masked = float(masked.accuracy_under(pgd, to_pixels(128), g).mean())
    big_real = float(target.accuracy_under(pgd, to_pixels(128), g).mean())
    assert checks.large_eps_breaks(big_real, 128)["passed"]
    assert not checks.large_eps_breaks(big_masked, 128)["passed"]
    assert checks.gradients_nonzero(adversarial.gradient_norms(target))["passed"]
    assert not checks.gradients_nonzero(adversarial.gradient_norms(masked))["passed"]
    noise = float(adversarial.random_noise_accuracy(target, to_pixels(4), seed=0).mean())
    attacked = float(target.accuracy_under(pgd, to_pixels(4), g).mean())
    assert checks.noise_weaker_than_attack(noise, attacked, 4, len(target.labels))["passed"]
    assert not checks.noise_weaker_than_attack(attacked, noise, 4, len(target.labels))["passed"] or noise == attacked


def test_eps_is_converted_to_pixels_once_at_the_boundary(target, monkeypatch):
    """Config ε (1/255) -> pixels in curves / worst_case only; accuracy_under and the noise take pixels as given."""
    assert to_pixels(2) == 2 / 255 and to_pixels(0) == 0.0 and to_pixels(255) == 1.0
    seen = []

    def recorder(fn, x, y, *, eps, task, generator):
        seen.append(eps)
        return x

    monkeypatch.setattr(adversarial, "build_attack", lambda spec: recorder)
    per = curves(target, CURVES, [0.0, 2.0], seed=0)
    assert set(per["fgsm"]) == {0.0, 2.0}, "results stay keyed by the config's 1/255 values"
    worst_case(target, per, [0.0, 2.0], SEQUENCE[:1], 0, SequenceState(None, "m"))
    assert seen[:4] == [0.0, 0.0, 2 / 255, 2 / 255], seen  # two batches of 64 per curve point
    assert seen[4:] and set(seen[4:]) == {2 / 255}, seen  # the sequence runs at ε=2 only
    seen.clear()
    target.accuracy_under(recorder, 0.5, torch.Generator(), index=torch.arange(3).numpy())
    assert seen == [0.5]
    shifts = []
    model = target.model

    class Spy(torch.nn.Module):
        def forward(self, x):
            shifts.append(x)
            return model(x)

    spy = AttackTarget(Spy(), target.images[:8], target.labels[:8], target.task)
    adversarial.random_noise_accuracy(spy, to_pixels(4), seed=0)
    clean = torch.as_tensor(target.images[:8]).float() / 255
    d = (shifts[0] - clean).abs()
    inside = (clean > 4 / 255) & (clean < 1 - 4 / 255)
    assert torch.allclose(d[inside], torch.full_like(d[inside], 4 / 255), atol=1e-6)


def test_model_digest_tracks_weights(trained_classifier):
    model = trained_classifier[0]
    d = adversarial.model_digest(model)
    assert d == adversarial.model_digest(model)
    with torch.no_grad():
        model.head.bias.add_(1.0)
    try:
        assert adversarial.model_digest(model) != d
    finally:
        with torch.no_grad():
            model.head.bias.sub_(1.0)


def test_eps0_check_allows_sampling_error_for_randomised_models_only():
    clean = torch.tensor([1.0] * 70 + [0.0] * 30)
    redrawn = clean.roll(3)  # 3 different predictions, same accuracy: new noise at every pass
    assert not checks.eps0_equals_clean(clean, {"pgd": {0.0: redrawn}})["passed"]
    assert checks.eps0_equals_clean(clean, {"pgd": {0.0: redrawn}}, randomized=True)["passed"]
    far = torch.tensor([1.0] * 40 + [0.0] * 60)  # 30 points lower: more than sampling error
    result = checks.eps0_equals_clean(clean, {"pgd": {0.0: far}}, randomized=True)
    assert not result["passed"] and "tolerance" in result["detail"]
