"""VICReg: invariance, variance and covariance terms against explicit loops; the weighted total."""

import math

import torch

from medrobust.methods.contract import Encoders
from medrobust.methods.vicreg import VICReg, covariance_term, variance_term, vicreg_loss
from medrobust.models.encoders import SmallCNN


def test_terms_match_explicit_loops():
    torch.manual_seed(0)
    z, zp = torch.randn(6, 3) * torch.tensor([0.2, 1.0, 3.0]), torch.randn(6, 3)
    n, d = z.shape
    mean = [sum(float(z[b, j]) for b in range(n)) / n for j in range(d)]
    var = [sum((float(z[b, j]) - mean[j]) ** 2 for b in range(n)) / (n - 1) for j in range(d)]
    v = sum(max(0.0, 1.0 - math.sqrt(var[j] + 1e-4)) for j in range(d)) / d
    cov = [[sum((float(z[b, i]) - mean[i]) * (float(z[b, j]) - mean[j]) for b in range(n)) / (n - 1)
            for j in range(d)] for i in range(d)]
    c = sum(cov[i][j] ** 2 for i in range(d) for j in range(d) if i != j) / d
    s = sum((float(z[b, k]) - float(zp[b, k])) ** 2 for b in range(n) for k in range(d)) / (n * d)
    assert abs(variance_term(z).item() - v) < 1e-5
    assert abs(covariance_term(z).item() - c) < 1e-5
    total, parts = vicreg_loss(z, zp, 25.0, 25.0, 1.0)
    assert abs(parts["invariance"].item() - s) < 1e-5
    assert abs(parts["variance"].item() - (v + variance_term(zp).item()) / 2) < 1e-6  # halved, as the official code
    expected = 25 * s + 25 * (v + variance_term(zp).item()) / 2 + (c + covariance_term(zp).item())
    assert abs(total.item() - expected) < 1e-4


def official_vicreg(x: torch.Tensor, y: torch.Tensor, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0):
    """facebookresearch/vicreg main_vicreg.py ``VICReg.forward`` after the projector (one process)."""
    repr_loss = torch.nn.functional.mse_loss(x, y)
    x, y = x - x.mean(dim=0), y - y.mean(dim=0)
    std_x, std_y = torch.sqrt(x.var(dim=0) + 0.0001), torch.sqrt(y.var(dim=0) + 0.0001)
    std_loss = torch.mean(torch.relu(1 - std_x)) / 2 + torch.mean(torch.relu(1 - std_y)) / 2
    n, d = x.shape
    cov_x, cov_y = (x.T @ x) / (n - 1), (y.T @ y) / (n - 1)
    off = lambda m: m.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()  # noqa: E731
    cov_loss = off(cov_x).pow(2).sum() / d + off(cov_y).pow(2).sum() / d
    return sim_coeff * repr_loss + std_coeff * std_loss + cov_coeff * cov_loss, std_loss


def test_loss_matches_the_official_code_whose_variance_term_is_halved():
    torch.manual_seed(1)
    z, zp = torch.randn(32, 8) * 0.3, torch.randn(32, 8) * 0.5 + 0.1  # std < 1: the hinge is active
    total, parts = vicreg_loss(z, zp)
    ref_total, ref_std = official_vicreg(z, zp)
    assert ref_std.item() > 0.1
    assert torch.allclose(parts["variance"], ref_std, atol=1e-6)
    assert torch.allclose(total, ref_total, atol=1e-5)


def test_variance_hinge_is_zero_for_spread_and_gamma_for_constant_embeddings():
    spread = torch.randn(256, 4) * 3
    assert variance_term(spread).item() == 0.0
    assert abs(variance_term(torch.ones(16, 4)).item() - (1 - math.sqrt(1e-4))) < 1e-6


def test_method_reports_the_three_terms():
    torch.manual_seed(0)
    enc = SmallCNN(1, 2, 28, [0.5], [0.25])
    method = VICReg(Encoders(enc), seed=0)
    out = method({"image": torch.rand(8, 1, 28, 28)})
    p = method.params
    weighted = p.sim_coeff * out["invariance"] + p.std_coeff * out["variance"] + p.cov_coeff * out["covariance"]
    assert torch.allclose(out["loss"], weighted, atol=1e-5)
