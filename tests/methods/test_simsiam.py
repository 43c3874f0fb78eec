"""SimSiam: D(p, stopgrad(z)) against the explicit formula; the symmetric loss; no gradient through z."""

import torch

from medrobust.methods.contract import Encoders
from medrobust.methods.simsiam import SimSiam, negative_cosine
from medrobust.models.encoders import SmallCNN


def test_negative_cosine_matches_formula_and_stops_gradient():
    torch.manual_seed(0)
    p, z = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True)
    pd, zd = p.detach(), z.detach()
    explicit = -sum(float(pd[i] @ zd[i] / (pd[i].norm() * zd[i].norm())) for i in range(4)) / 4
    loss = negative_cosine(p, z)
    assert abs(loss.item() - explicit) < 1e-5
    loss.backward()
    assert z.grad is None and p.grad.abs().sum() > 0


def test_simsiam_loss_is_the_symmetric_half_sum_in_range():
    torch.manual_seed(0)
    enc = SmallCNN(1, 2, 28, [0.5], [0.25])
    method = SimSiam(Encoders(enc), seed=0)
    assert method.image_encoder is enc
    out = method({"image": torch.rand(8, 1, 28, 28)})
    assert -1.0 <= out["loss"].item() <= 1.0
    out["loss"].backward()
    assert all(p.grad is not None for p in enc.parameters())  # through p (the predictor path)
