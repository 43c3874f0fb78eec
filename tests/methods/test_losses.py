"""Loss functions against direct computations of the papers' formulas."""

import math

import torch

from medrobust.methods.losses import clip_loss, nt_xent


def test_nt_xent_matches_explicit_loop():
    torch.manual_seed(0)
    z1, z2, t = torch.randn(5, 8), torch.randn(5, 8), 0.3
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    n, total = 5, 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        num = math.exp(float(z[i] @ z[pos]) / t)
        den = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(2 * n) if k != i)
        total += -math.log(num / den)
    assert abs(nt_xent(z1, z2, t).item() - total / (2 * n)) < 1e-5


def test_clip_loss_matches_explicit_formula():
    torch.manual_seed(1)
    img, txt, scale = torch.randn(4, 6), torch.randn(4, 6), torch.tensor(math.log(10.0))
    a = torch.nn.functional.normalize(img, dim=1)
    b = torch.nn.functional.normalize(txt, dim=1)
    logits = 10.0 * a @ b.t()
    i2t = -sum(math.log(math.exp(logits[i, i]) / sum(math.exp(logits[i, j]) for j in range(4))) for i in range(4)) / 4
    t2i = -sum(math.log(math.exp(logits[i, i]) / sum(math.exp(logits[j, i]) for j in range(4))) for i in range(4)) / 4
    assert abs(clip_loss(img, txt, scale).item() - 0.5 * (i2t + t2i)) < 1e-5


def test_aligned_pairs_give_lower_contrastive_loss():
    torch.manual_seed(2)
    z = torch.randn(16, 8)
    assert nt_xent(z, z + 0.01 * torch.randn_like(z), 0.2) < nt_xent(z, torch.randn(16, 8), 0.2)
    assert clip_loss(z, z, torch.tensor(2.0)) < clip_loss(z, torch.randn(16, 8), torch.tensor(2.0))
