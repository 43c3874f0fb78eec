"""BYOL: the normalised-MSE loss against its formula, stop-gradient into the target, target EMA."""

import torch

from medrobust.methods.byol import BYOL, byol_loss
from medrobust.methods.contract import Encoders
from medrobust.models.encoders import SmallCNN


def test_byol_loss_matches_normalised_mse_formula():
    torch.manual_seed(0)
    p, z = torch.randn(5, 4), torch.randn(5, 4)
    explicit = sum(float(((p[i] / p[i].norm() - z[i] / z[i].norm()) ** 2).sum()) for i in range(5)) / 5
    assert abs(byol_loss(p, z).item() - explicit) < 1e-5
    assert byol_loss(p, 3 * p).item() < 1e-6  # scale-invariant: the same direction costs nothing
    assert abs(byol_loss(p, -p).item() - 4.0) < 1e-5  # opposite directions: the maximum, 4


def test_byol_loss_does_not_backpropagate_into_the_target():
    p, z = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    byol_loss(p, z).backward()
    assert z.grad is None and p.grad is not None and p.grad.abs().sum() > 0


def test_byol_keeps_the_online_encoder_and_updates_the_target_by_ema():
    torch.manual_seed(0)
    enc = SmallCNN(1, 2, 28, [0.5], [0.25])
    method = BYOL(Encoders(enc), seed=0)
    assert method.image_encoder is enc and method.target_encoder is not enc
    out = method({"image": torch.rand(6, 1, 28, 28)})
    assert 0.0 <= out["loss"].item() <= 8.0  # two terms, each in [0, 4]
    out["loss"].backward()
    assert all(p.grad is None for p in method.target_encoder.parameters())
    assert all(p.grad is None for p in method.target_projector.parameters())
    with torch.no_grad():
        for p in enc.parameters():
            p.mul_(1.5)
    old = [p.clone() for p in method.target_encoder.parameters()]
    method.after_step()
    m = method.params.momentum
    for t, o, s in zip(method.target_encoder.parameters(), old, enc.parameters()):
        assert torch.allclose(t, m * o + (1 - m) * s, atol=1e-6)
