"""The fast paths of the views: separable resampling of volumes and the shifted-slice blur match the direct
computations they replace (``grid_sample`` on a 3D grid, a single-channel ``conv1d``)."""

import math

import pytest
import torch
import torch.nn.functional as F

from medrobust.corruptions.blur import blur_axis
from medrobust.data import views
from medrobust.data.views import ViewParams, gaussian_blur


def _thetas(n: int, g: torch.Generator) -> torch.Tensor:
    """Affines of the views' form: in-plane rotation with flip, per-axis scale, shifts up to the border."""
    theta = torch.zeros(n, 3, 4)
    angle = (torch.rand(n, generator=g) * 2 - 1) * math.pi / 6
    scale = torch.rand(n, generator=g) * 1.2 + 0.3  # zoom in and out: out-of-volume samples hit the border
    flip = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle) * scale * flip, -torch.sin(angle) * scale
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle) * scale * flip, torch.cos(angle) * scale
    theta[:, 2, 2] = torch.rand(n, generator=g) * 1.2 + 0.3
    theta[:, :, 3] = (torch.rand(n, 3, generator=g) * 2 - 1) * 0.8
    return theta


@pytest.mark.parametrize("shape", [(8, 1, 9, 14, 11), (5, 2, 16, 8, 8), (3, 1, 1, 6, 6)])
def test_volume_resampling_matches_trilinear_grid_sample(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g)
    theta = _thetas(shape[0], g)
    grid = F.affine_grid(theta, list(shape), align_corners=False)
    expected = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    got = views._resample_volume(x, theta)
    assert got.shape == x.shape
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_identity_affine_leaves_a_volume_unchanged():
    x = torch.rand(2, 1, 7, 9, 5)
    theta = torch.zeros(2, 3, 4)
    theta[:, 0, 0] = theta[:, 1, 1] = theta[:, 2, 2] = 1
    assert torch.allclose(views._resample_volume(x, theta), x, atol=1e-6)


def _conv1d_blur(x: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    r = kernel.numel() // 2
    moved = x.movedim(dim, -1)
    rows = F.pad(moved.reshape(-1, 1, moved.shape[-1]), (r, r), mode="replicate")
    return F.conv1d(rows, kernel.view(1, 1, -1).to(x.dtype)).reshape(moved.shape).movedim(-1, dim)


@pytest.mark.parametrize("shape,dim", [((3, 2, 10, 7), 2), ((3, 2, 10, 7), 3), ((2, 1, 5, 6, 4), 2),
                                       ((2, 1, 5, 6, 4), 4)])
def test_blur_axis_matches_a_replicate_padded_convolution(shape, dim):
    x = torch.rand(shape)
    t = torch.arange(-3, 4, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (t / 0.9) ** 2)
    kernel = kernel / kernel.sum()  # radius 3 > the 4-voxel side: the padding repeats the edge several times
    assert torch.allclose(blur_axis(x, kernel, dim), _conv1d_blur(x, kernel, dim), atol=1e-6)


def test_view_blur_keeps_a_constant_image_and_smooths_an_impulse():
    flat = torch.full((1, 1, 6, 6, 6), 0.4)
    assert torch.allclose(gaussian_blur(flat, 0.8), flat, atol=1e-6)
    impulse = torch.zeros(1, 1, 9, 9, 9)
    impulse[0, 0, 4, 4, 4] = 1.0
    out = gaussian_blur(impulse, 0.8)
    assert math.isclose(out.sum().item(), 1.0, rel_tol=1e-5)  # mass kept away from the edges
    assert out[0, 0, 4, 4, 4] < 0.2 and out[0, 0, 4, 4, 5] > 0.05


def test_volume_views_are_the_grid_sample_views_to_rounding(monkeypatch):
    """The whole view on volumes with the separable path equals the same view through a 3D grid."""
    x = torch.rand(4, 1, 8, 12, 12)
    fast = views.random_view(x, ViewParams(), torch.Generator().manual_seed(3))

    def direct(v, theta):
        grid = F.affine_grid(theta, list(v.shape), align_corners=False)
        return F.grid_sample(v, grid, mode="bilinear", padding_mode="border", align_corners=False)

    monkeypatch.setattr(views, "_resample_volume", direct)
    assert torch.allclose(fast, views.random_view(x, ViewParams(), torch.Generator().manual_seed(3)), atol=1e-5)
