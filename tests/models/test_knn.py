"""The kNN probe: weighted votes of the k most similar labeled images, equal to a brute-force computation."""

import pytest
import torch
from torch import nn

from medrobust.data.base import Task
from medrobust.models.knn import KNNClassifier


class Flat(nn.Module):
    """An 'encoder' that returns the flattened image: features are known exactly."""

    feature_dim = 4

    def forward_features(self, x):
        return x.flatten(1)


def brute_force(query, bank, labels, n_classes, k, t):
    out = []
    for q in query:
        sims = [(float(nn.functional.cosine_similarity(q, b, dim=0)), int(y)) for b, y in zip(bank, labels)]
        top = sorted(sims, key=lambda s: -s[0])[:k]
        w = torch.softmax(torch.tensor([s for s, _ in top]) / t, dim=0)
        votes = torch.zeros(n_classes)
        for wi, (_, y) in zip(w, top):
            votes[y] += wi
        out.append(torch.log(votes + 1e-6))
    return torch.stack(out)


def test_knn_logits_equal_brute_force_weighted_votes():
    g = torch.Generator().manual_seed(0)
    bank, labels = torch.rand(30, 1, 2, 2, generator=g), torch.randint(0, 3, (30,), generator=g)
    query = torch.rand(7, 1, 2, 2, generator=g)
    task = Task("multiclass", ("a", "b", "c"))
    knn = KNNClassifier(Flat(), bank, labels, task, k=5, temperature=0.1)
    expected = brute_force(query.flatten(1), bank.flatten(1), labels, 3, 5, 0.1)
    assert torch.allclose(knn(query), expected, atol=1e-5)
    # a query equal to a bank image with a tiny temperature takes that image's class
    sharp = KNNClassifier(Flat(), bank, labels, task, k=5, temperature=1e-3)
    assert torch.equal(sharp(bank[:10]).argmax(1), labels[:10])


def test_knn_is_differentiable_in_the_input_and_multilabel_gives_log_odds():
    g = torch.Generator().manual_seed(1)
    bank, labels = torch.rand(20, 1, 2, 2, generator=g), torch.randint(0, 2, (20, 3), generator=g)
    task = Task("multilabel", ("x", "y", "z"))
    knn = KNNClassifier(Flat(), bank, labels, task, k=20, temperature=1e6)  # uniform weights over all 20
    x = torch.rand(2, 1, 2, 2, generator=g, requires_grad=True)
    logits = knn(x)
    p = labels.float().mean(0)
    assert torch.allclose(logits, (torch.log(p + 1e-6) - torch.log(1 - p + 1e-6)).expand(2, 3), atol=1e-3)
    sharp = KNNClassifier(Flat(), bank, labels, task, k=3, temperature=0.05)
    sharp(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="k must be"):
        KNNClassifier(Flat(), bank, labels, task, k=0)
    with pytest.raises(ValueError, match="bank images"):
        KNNClassifier(Flat(), bank, labels[:5], task)
