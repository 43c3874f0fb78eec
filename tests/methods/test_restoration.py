"""Models Genesis transforms (seeded, shape- and range-preserving, each one effective) and the restoration method."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medrobust.methods.contract import Encoders
from medrobust.methods.restoration import (GenesisParams, PixelDecoder, Restoration, in_painting, inpaint_mask,
                                           input_geometry, intensity_curve, local_pixel_shuffle, models_genesis,
                                           nonlinear_intensity, out_painting, outpaint_mask)
from medrobust.models.encoders import SmallCNN

TRANSFORMS = {
    "shuffle": lambda x, g: local_pixel_shuffle(x, g, 3, 0.5),
    "nonlinear": nonlinear_intensity,
    "inpaint": in_painting,
    "outpaint": out_painting,
    "genesis": lambda x, g: models_genesis(x, GenesisParams(), g),
}


def _images(shape):
    g = torch.Generator().manual_seed(11)
    return torch.rand(shape, generator=g) * 0.8 + 0.1


@pytest.mark.parametrize("shape", [(6, 1, 28, 28), (3, 2, 12, 12, 12)])
@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transforms_are_seeded_keep_shape_and_range_and_change_the_image(name, shape):
    x = _images(shape)
    fn = TRANSFORMS[name]
    a, b = fn(x, torch.Generator().manual_seed(0)), fn(x, torch.Generator().manual_seed(0))
    c = fn(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    changed = (a != x).flatten(1).any(dim=1)
    assert changed.float().mean() >= (0.5 if name == "genesis" else 1.0)


def test_intensity_curve_matches_bezier_reference_and_is_monotone():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 9, 9)
    p1, p2 = torch.rand(4, 2), torch.rand(4, 2)
    invert = torch.tensor([False, True, False, True])
    y = intensity_curve(x, p1, p2, invert, samples=4001)
    t = np.linspace(0, 1, 20001)
    for i in range(4):
        pts = [np.zeros(2), p1[i].numpy(), p2[i].numpy(), np.ones(2)]
        weights = [(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3]  # Bernstein basis
        curve = sum(w[:, None] * p[None, :] for w, p in zip(weights, pts))  # [T, 2]
        ys = curve[:, 1][::-1] if invert[i] else curve[:, 1]
        ref = np.interp(x[i].numpy().ravel(), curve[:, 0], ys)
        assert np.abs(y[i].numpy().ravel() - ref).max() < 2e-3
        order = x[i].flatten().argsort()
        diffs = y[i].flatten()[order].diff()
        assert (diffs <= 1e-6).all() if invert[i] else (diffs >= -1e-6).all()
    ends = intensity_curve(torch.tensor([0.0, 1.0]).view(1, 1, 1, 2).repeat(4, 1, 1, 1), p1, p2, invert)
    assert torch.allclose(ends.view(4, 2), torch.tensor([[0.0, 1.0], [1.0, 0.0]] * 2), atol=1e-5)


def test_local_pixel_shuffle_only_moves_pixels_within_tiles():
    x = _images((4, 2, 13, 13))
    y = local_pixel_shuffle(x, torch.Generator().manual_seed(3), block=3, fraction=1.0)
    assert torch.equal(y.flatten(2).sort(dim=2).values, x.flatten(2).sort(dim=2).values)  # same pixel values
    assert torch.equal((y[:, 0] != x[:, 0]), (y[:, 1] != x[:, 1]))  # one permutation for all channels
    moved = (y != x).nonzero()
    # with a grid offset o in {0,1,2} a 13 px side holds 4 tiles: a pixel never leaves a 3-wide window
    assert len(moved) > 0
    for n, c, h, w in moved[:60].tolist():
        (src_h, src_w), = (x[n, c] == y[n, c, h, w]).nonzero().tolist()  # random floats: one source pixel
        assert abs(src_h - h) <= 2 and abs(src_w - w) <= 2
    with pytest.raises(ValueError, match="larger than the image"):
        local_pixel_shuffle(torch.rand(1, 1, 2, 2), torch.Generator(), block=3)


def test_painting_changes_exactly_the_masked_region():
    x = _images((5, 1, 28, 28))
    y = in_painting(x, torch.Generator().manual_seed(4))
    mask = inpaint_mask(x.shape, torch.Generator().manual_seed(4))
    assert torch.equal(y[~mask.expand_as(x)], x[~mask.expand_as(x)])
    assert ((y != x) == mask).float().mean() > 0.999  # noise equal to the old pixel is (almost) impossible
    y = out_painting(x, torch.Generator().manual_seed(5))
    keep = outpaint_mask(x.shape, torch.Generator().manual_seed(5))
    assert keep.flatten(1).any(dim=1).all()  # out-painting always keeps at least one box
    assert torch.equal(y[keep.expand_as(x)], x[keep.expand_as(x)])
    assert ((y != x) == ~keep).float().mean() > 0.999
    sides = keep[0, 0].any(dim=0).sum(), keep[0, 0].any(dim=1).sum()
    assert all(int(28 * 3 / 7) <= int(s) for s in sides)


def test_genesis_with_zero_probabilities_is_identity():
    x = _images((3, 1, 16, 16))
    p = GenesisParams(shuffle_p=0, nonlinear_p=0, paint_p=0)
    assert torch.equal(models_genesis(x, p, torch.Generator().manual_seed(0)), x)


def test_pixel_decoder_shapes_and_range():
    for dims, size in ((2, (28, 28)), (3, (16, 16, 16)), (2, (64, 64))):
        dec = PixelDecoder(12, 3, dims)
        out = dec(torch.randn(2, 12), size)
        assert out.shape == (2, 3) + size and out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError, match="built for 2D"):
        PixelDecoder(12, 1, 2)(torch.randn(1, 12), (8, 8, 8))


def test_input_geometry_reads_first_conv_or_explains():
    assert input_geometry(SmallCNN(3, 3, 16, [0.5] * 3, [0.2] * 3)) == (3, 3)
    with pytest.raises(ValueError, match="no Conv2d/Conv3d"):
        input_geometry(torch.nn.Linear(3, 3))


def test_restoration_loss_is_mse_of_restored_corrupted_input():
    torch.manual_seed(0)
    enc = SmallCNN(1, 2, 28, [0.5], [0.25])
    method = Restoration(Encoders(enc), seed=0)
    x = _images((4, 1, 28, 28))
    replay = torch.Generator().set_state(method.generator.get_state())
    out = method({"image": x})
    corrupted = models_genesis(x, method.params.genesis, replay)
    with torch.no_grad():
        expected = F.mse_loss(method.decoder["1ch-2d"](enc.forward_features(corrupted), (28, 28)), x)
    assert torch.allclose(out["loss"], expected, atol=1e-6)
