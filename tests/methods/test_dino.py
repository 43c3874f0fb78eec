"""DINO: centring + sharpening of the teacher, the cross-entropy over view pairs, the center EMA, teacher EMA."""

import math

import torch

from medrobust.data.views import random_view
from medrobust.methods.contract import Encoders
from medrobust.methods.dino import DINO, DINOHead, DINOParams, dino_loss, dino_teacher_probs, updated_center
from medrobust.models.encoders import SmallCNN


def test_teacher_probs_are_centred_and_sharpened_softmax():
    torch.manual_seed(0)
    t, c = torch.randn(5, 7), torch.randn(1, 7)
    probs = dino_teacher_probs(t, c, 0.04)
    for i in range(5):
        e = [math.exp((float(t[i, k]) - float(c[0, k])) / 0.04) for k in range(7)]
        assert all(abs(float(probs[i, k]) - e[k] / sum(e)) < 1e-5 for k in range(7))
    entropy = lambda p: -(p * p.clamp_min(1e-12).log()).sum(dim=-1).mean()
    assert entropy(probs) < entropy(dino_teacher_probs(t, c, 0.1)) < entropy(dino_teacher_probs(t, c, 1.0))
    # centring with the batch mean: the teacher cannot put all images on one prototype through a constant bias
    biased = t + torch.tensor([8.0, 0, 0, 0, 0, 0, 0])
    assert torch.allclose(dino_teacher_probs(biased, biased.mean(0, keepdim=True), 0.04),
                          dino_teacher_probs(t, t.mean(0, keepdim=True), 0.04), atol=1e-5)


def test_dino_loss_matches_explicit_sum_over_view_pairs():
    torch.manual_seed(1)
    v, n, k, ts = 4, 3, 5, 0.1
    student, teacher = torch.randn(v, n, k), torch.softmax(torch.randn(2, n, k), dim=-1)
    total, pairs = 0.0, 0
    for g in range(2):
        for s in range(v):
            if s == g:
                continue
            for i in range(n):
                z = sum(math.exp(float(student[s, i, j]) / ts) for j in range(k))
                total += -sum(float(teacher[g, i, j]) * (float(student[s, i, j]) / ts - math.log(z)) for j in range(k)) / n
            pairs += 1
    assert pairs == 6
    assert abs(dino_loss(student, teacher, ts).item() - total / pairs) < 1e-5


def test_center_update_formula():
    torch.manual_seed(2)
    c, t = torch.randn(1, 6), torch.randn(10, 6)
    assert torch.allclose(updated_center(c, t, 0.9), 0.9 * c + 0.1 * t.mean(dim=0, keepdim=True), atol=1e-6)
    assert torch.allclose(updated_center(c, t.view(2, 5, 6), 0.9), updated_center(c, t, 0.9))


def test_head_outputs_cosines_to_unit_prototypes():
    torch.manual_seed(3)
    head = DINOHead(8, 16, 4, 12)
    out = head(torch.randn(5, 8) * 10)
    assert out.shape == (5, 12) and out.abs().max() <= 1.0 + 1e-5


def test_training_forward_updates_center_from_teacher_and_after_step_is_ema():
    torch.manual_seed(0)
    enc = SmallCNN(1, 2, 28, [0.5], [0.25])
    method = DINO(Encoders(enc), params=DINOParams(local_crops=1), seed=0)
    x = torch.rand(5, 1, 28, 28)
    replay = torch.Generator().set_state(method.generator.get_state())
    globals_ = torch.cat([random_view(x, method.params.views, replay) for _ in range(2)])
    with torch.no_grad():
        teacher = method.teacher_head(method.teacher_encoder.forward_features(globals_))  # [2N, K]
    out = method({"image": x})
    assert torch.isfinite(out["loss"])
    m = method.params.center_momentum
    assert torch.allclose(method.center, (1 - m) * teacher.mean(dim=0, keepdim=True), atol=1e-6)
    out["loss"].backward()
    assert all(p.grad is None for p in method.teacher_encoder.parameters())
    with torch.no_grad():
        for p in method.head.parameters():
            p.add_(0.1)
    old = [p.clone() for p in method.teacher_head.parameters()]
    method.after_step()
    mm = method.params.momentum
    for t, o, s in zip(method.teacher_head.parameters(), old, method.head.parameters()):
        assert torch.allclose(t, mm * o + (1 - mm) * s, atol=1e-6)
    method.eval()
    before = method.center.clone()
    method({"image": x})
    assert torch.equal(method.center, before)  # evaluation does not move the center
