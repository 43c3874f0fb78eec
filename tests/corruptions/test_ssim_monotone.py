"""Every registered corruption: mean SSIM to the clean image falls strictly from severity 1 to 5 (scikit-image's
structural_similarity as the reference metric), in 2D and in 3D where the corruption is defined."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from medrobust import registry
from medrobust.corruptions import base
from test_corruptions import smooth_images

registry.load_all()
NAMES = registry.names("corruption")


def mean_ssim(clean: torch.Tensor, corrupted: torch.Tensor) -> float:
    """Mean SSIM over images (channels as the channel axis; 3D volumes as 3D images), data range 1."""
    out = []
    for a, b in zip(clean.numpy(), corrupted.numpy()):  # [C, *S]
        kw = {"channel_axis": 0} if a.shape[0] > 1 else {}
        a, b = (a, b) if a.shape[0] > 1 else (a[0], b[0])
        out.append(structural_similarity(a, b, data_range=1.0, win_size=7, **kw))
    return float(np.mean(out))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_ssim_falls_strictly_with_severity(name, dims):
    fn = registry.get("corruption", name)
    if dims not in fn.dims:
        pytest.skip(f"{name} is not defined for {dims}D images")
    channels = 1 if fn.channels is None or 1 in fn.channels else fn.channels[0]
    x = smooth_images(8 if dims == 2 else 2, channels, 32 if dims == 2 else 16, dims, seed=4)
    seeds = range(3) if fn.stochastic else range(1)
    ssim = [np.mean([mean_ssim(x, fn(x, s, generator=torch.Generator().manual_seed(k))) for k in seeds])
            for s in base.SEVERITIES]
    assert ssim[0] < 1.0
    assert all(a > b for a, b in zip(ssim, ssim[1:])), f"{name} ({dims}D): mean SSIM by severity {np.round(ssim, 4)}"


def _modality_cases():
    from medrobust.corruptions.sets import SETS, corruption_set

    data = {"x-ray": ("chest-xray", (1, 28, 28)), "ultrasound": ("ultrasound", (1, 28, 28)),
            "fundus photography": ("fundus", (3, 28, 28)), "ct": ("ct", (1, 28, 28, 28))}
    return [(m, synth, name) for m, (synth, shape) in data.items() for name in corruption_set(m, shape) if m in SETS]


_SAMPLES: dict = {}


def _sample(modality: str) -> torch.Tensor:
    """A fixed sample of the embedded synthetic data of ``modality`` (the data the set is calibrated on)."""
    if modality not in _SAMPLES:
        from medrobust.data.base import to_unit
        from medrobust.data.synthetic import SyntheticParams, load_synthetic

        ds = load_synthetic(SyntheticParams(modality=modality, n_per_site=18))
        _SAMPLES[modality] = to_unit(ds.test.images[: 4 if modality == "ct" else 12])
    return _SAMPLES[modality]


@pytest.mark.parametrize("modality, synthetic, name", _modality_cases())
def test_ssim_falls_with_severity_on_the_data_a_set_is_for(modality, synthetic, name):
    fn = registry.get("corruption", name)
    x = _sample(synthetic)
    seeds = range(2) if fn.stochastic else range(1)
    ssim = [np.mean([mean_ssim(x, fn(x, s, generator=torch.Generator().manual_seed(k))) for k in seeds])
            for s in base.SEVERITIES]
    assert all(a > b for a, b in zip(ssim, ssim[1:])), f"{name} on {modality}: SSIM by severity {np.round(ssim, 4)}"
