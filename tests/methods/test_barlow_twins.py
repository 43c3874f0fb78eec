"""Barlow Twins: the cross-correlation matrix and the loss against explicit sums (eq. 1-2)."""

import math

import torch

from medrobust.methods.barlow_twins import barlow_twins_loss, cross_correlation


def _explicit_c(a, b):
    n, d = a.shape
    ma = [sum(float(a[k, i]) for k in range(n)) / n for i in range(d)]
    mb = [sum(float(b[k, i]) for k in range(n)) / n for i in range(d)]
    c = [[0.0] * d for _ in range(d)]
    for i in range(d):
        for j in range(d):
            num = sum((float(a[k, i]) - ma[i]) * (float(b[k, j]) - mb[j]) for k in range(n))
            na = math.sqrt(sum((float(a[k, i]) - ma[i]) ** 2 for k in range(n)))
            nb = math.sqrt(sum((float(b[k, j]) - mb[j]) ** 2 for k in range(n)))
            c[i][j] = num / (na * nb)
    return c


def test_cross_correlation_and_loss_match_explicit_sums():
    torch.manual_seed(0)
    a, b, lambd = torch.randn(7, 4), torch.randn(7, 4), 0.3
    c = _explicit_c(a, b)
    assert torch.allclose(cross_correlation(a, b), torch.tensor(c), atol=1e-4)
    explicit = sum((1 - c[i][i]) ** 2 for i in range(4)) + lambd * sum(
        c[i][j] ** 2 for i in range(4) for j in range(4) if i != j)
    assert abs(barlow_twins_loss(a, b, lambd).item() - explicit) < 1e-3


def test_identical_decorrelated_embeddings_give_zero_loss():
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])  # centred, uncorrelated columns
    assert barlow_twins_loss(z, 2 * z + 5, 0.5).item() < 1e-4  # invariant to per-dimension scale and shift
    assert barlow_twins_loss(z, torch.flip(z, dims=[1]), 0.0).item() > 1.9  # swapped dims: C = antidiagonal
