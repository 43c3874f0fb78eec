"""Jigsaw: maximal-Hamming permutation set (Noroozi & Favaro Alg. 1), tiles, labels, the method on CNN and ViT."""

import itertools
import math

import pytest
import torch

from medrobust.methods.contract import Encoders
from medrobust.methods.jigsaw import (Jigsaw, JigsawParams, crop_batch, cut_tiles, hamming_permutations,
                                     normalize_tiles, shuffle_tiles)
from medrobust.models.encoders import SmallCNN, SmallViT, ViTParams


def _hamming(a, b):
    return sum(int(x != y) for x, y in zip(a, b))


@pytest.mark.parametrize("n_tiles,count", [(4, 24), (4, 10), (8, 12), (9, 12)])
def test_permutation_set_is_distinct_valid_and_deterministic(n_tiles, count):
    perms = hamming_permutations(n_tiles, count)
    assert perms.shape == (count, n_tiles)
    rows = [tuple(p) for p in perms.tolist()]
    assert len(set(rows)) == count and all(sorted(r) == list(range(n_tiles)) for r in rows)
    assert rows[0] == tuple(range(n_tiles))
    hamming_permutations.cache_clear()
    assert torch.equal(hamming_permutations(n_tiles, count), perms)


def test_each_choice_maximises_the_summed_hamming_distance():
    """Algorithm 1 step by step, by brute force over all 5! permutations (ties: lexicographically first)."""
    chosen = [tuple(p) for p in hamming_permutations(5, 20).tolist()]
    everything = list(itertools.permutations(range(5)))
    for step in range(1, 20):
        rest = [p for p in everything if p not in chosen[:step]]
        scores = [sum(_hamming(p, q) for q in chosen[:step]) for p in rest]
        assert chosen[step] == rest[scores.index(max(scores))]
    perms = hamming_permutations(9, 30).tolist()
    pairs = [_hamming(a, b) for a, b in itertools.combinations(perms, 2)]
    assert sum(pairs) / len(pairs) > 8.0  # random pairs of 9-permutations differ in 8 places on average
    assert min(pairs) >= 2


def test_permutation_set_errors_name_the_limits():
    with pytest.raises(ValueError, match=r"1\.\.24"):
        hamming_permutations(4, 25)
    with pytest.raises(ValueError, match="27 tiles"):
        hamming_permutations(27, 10)


def test_tiles_come_from_their_cells_and_inverse_permutation_restores_them():
    cells = torch.arange(4.0).view(1, 1, 2, 2).repeat_interleave(7, 2).repeat_interleave(7, 3)  # value = cell index
    x = cells.repeat(3, 1, 1, 1) + torch.rand(3, 1, 14, 14) * 0.1
    tiles = cut_tiles(x, 2, 0.85, torch.Generator().manual_seed(0))  # [3, 4, 1, 6, 6]
    assert tiles.shape == (3, 4, 1, 6, 6)
    assert torch.equal(tiles.floor().amin(dim=(2, 3, 4)), torch.arange(4.0).expand(3, 4))
    assert torch.equal(tiles.floor().amax(dim=(2, 3, 4)), torch.arange(4.0).expand(3, 4))
    perms = hamming_permutations(4, 24)
    labels = torch.tensor([5, 0, 23])
    shuffled = shuffle_tiles(tiles, perms, labels)
    for i, label in enumerate(labels.tolist()):
        inverse = torch.argsort(perms[label])
        assert torch.equal(shuffled[i][inverse], tiles[i])
        assert shuffled[i, :, 0, 0, 0].floor().tolist() == perms[label].float().tolist()


def test_normalized_tiles_share_the_batch_mean_and_std():
    torch.manual_seed(0)
    brightness = torch.tensor([0.2, 0.4, 0.5, 0.7]).view(1, 4, 1, 1, 1)  # quadrant brightness: a shortcut
    tiles = brightness + 0.05 * torch.randn(3, 4, 1, 6, 6)
    out = normalize_tiles(tiles)
    means, stds = out.mean(dim=(3, 4)), out.std(dim=(3, 4))  # [3, 4, 1]
    assert torch.allclose(means, torch.full_like(means, float(tiles.mean())), atol=1e-4)
    assert torch.allclose(stds, torch.full_like(stds, float(tiles.std(dim=(3, 4)).mean())), rtol=0.05)  # eps 1e-3
    assert out.min() >= 0 and out.max() <= 1


def test_crop_batch_takes_per_image_windows_in_3d():
    x = torch.arange(2 * 5 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5, 5)
    starts = torch.tensor([[0, 1, 2], [2, 0, 1]])
    out = crop_batch(x, starts, (2, 3, 2))
    assert torch.equal(out[0], x[0, :, 0:2, 1:4, 2:4]) and torch.equal(out[1], x[1, :, 2:4, 0:3, 1:3])


@pytest.mark.parametrize("vit", [False, True])
def test_method_classifies_the_permutation_index(vit):
    torch.manual_seed(0)
    enc = (SmallViT(1, 2, 28, [0.5], [0.25], ViTParams(dim=16, depth=1, heads=2)) if vit
           else SmallCNN(1, 2, 28, [0.5], [0.25]))
    method = Jigsaw(Encoders(enc), params=JigsawParams(n_permutations=10), seed=0)
    sizes = []
    (enc.patch if vit else enc.body).register_forward_pre_hook(lambda mod, inp: sizes.append(tuple(inp[0].shape)))
    out = method({"image": torch.rand(3, 1, 28, 28)})
    assert sizes == [(12, 1, 28, 28) if vit else (12, 1, 12, 12)]  # 3 images x 4 tiles; the ViT gets them resized
    head = method.heads["1ch-2d"]  # the one signature of the encoder (no pre-training pool)
    assert list(method.heads) == ["1ch-2d"] and head.permutations.shape == (10, 4)
    assert head.mlp[-1].out_features == 10 and head.mlp[0].in_features == 4 * enc.feature_dim
    assert abs(out["loss"].item() - math.log(10)) < 1.0 and 0 <= out["accuracy"] <= 1
    out["loss"].backward()
    assert all(p.grad is not None for p in enc.parameters() if p.requires_grad)
