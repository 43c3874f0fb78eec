"""The GPU-path knobs of the training loop, checked on the CPU: autocast precision (bf16 / fp16 with a gradient
scaler), channels-last memory formats, SyncBatchNorm conversion under DDP on GPUs, torch.compile."""

import pytest
import torch
from torch import nn

from medrobust.engine import distributed, train
from medrobust.engine.train import FitConfig, fit, memory_format, sync_batchnorm, to_channels_last
from medrobust.methods.momentum import mlp


class ConvNet(nn.Module):
    """Cross-entropy of a small conv net on 2D (4D batch) or 3D (5D batch) images; records the dtype its
    linear layer computed in."""

    def __init__(self, dims: int = 2):
        super().__init__()
        torch.manual_seed(0)
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.net = nn.Sequential(conv(1, 8, 3, padding=1), nn.ReLU(), conv(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1) if dims == 2
                                 else nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.head = nn.Linear(8, 2)
        self.dtypes: list[torch.dtype] = []
        self.formats: list[bool] = []

    def forward(self, batch):
        h = self.net[:3](batch["image"])  # after the 8 -> 8 conv (a 1-channel input is in both formats)
        self.formats.append(h.is_contiguous(memory_format=memory_format(h)) and not h.is_contiguous())
        logits = self.head(self.net[3:](h))
        self.dtypes.append(logits.dtype)
        return {"loss": nn.functional.cross_entropy(logits.float(), batch["label"])}


def _images(n=64, dims=2):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    shape = (n, 1, 8, 8) if dims == 2 else (n, 1, 6, 6, 6)
    x = torch.rand(shape, generator=g) * 0.5 + 0.5 * y.view(-1, *[1] * (len(shape) - 1))
    return {"image": (x * 255).to(torch.uint8), "label": y}


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_low_precision_autocasts_training_only(precision, dtype):
    ref, low = ConvNet(), ConvNet()
    r = fit(ref, _images(), FitConfig(steps=30, batch_size=16, lr=1e-2), seed=0)
    lo = fit(low, _images(), FitConfig(steps=30, batch_size=16, lr=1e-2, precision=precision), seed=0)
    assert set(ref.dtypes) == {torch.float32} and set(low.dtypes) == {dtype}
    assert all(p.dtype == torch.float32 for p in low.parameters()), "parameters stay fp32 (autocast, not .half())"
    assert abs(lo.losses[0] - r.losses[0]) < 0.02, "the same first step up to rounding"
    assert lo.losses[-1] < 0.8 * lo.losses[0], "it still learns"
    low.dtypes.clear()
    low({"image": torch.rand(4, 1, 8, 8), "label": torch.zeros(4, dtype=torch.long)})
    assert low.dtypes == [torch.float32], "after fit the model evaluates (and is attacked) in fp32"


@pytest.mark.parametrize("dims", [2, 3])
def test_channels_last_changes_layout_not_numbers(dims):
    ref, cl = ConvNet(dims), ConvNet(dims)
    r = fit(ref, _images(dims=dims), FitConfig(steps=10, batch_size=16, lr=1e-2), seed=0)
    c = fit(cl, _images(dims=dims), FitConfig(steps=10, batch_size=16, lr=1e-2, channels_last=True), seed=0)
    weight = cl.net[2].weight  # [8, 8, 3, 3(, 3)]: channels-last differs from contiguous
    assert weight.is_contiguous(memory_format=memory_format(weight)) and not weight.is_contiguous()
    assert all(cl.formats) and not any(ref.formats)
    assert c.losses == pytest.approx(r.losses, rel=1e-4, abs=1e-5)


def test_to_channels_last_leaves_other_ranks_alone():
    m = nn.Sequential(nn.Conv3d(2, 3, 3), nn.Linear(3, 3))
    to_channels_last(m)
    assert m[0].weight.is_contiguous(memory_format=torch.channels_last_3d) and not m[0].weight.is_contiguous()
    assert m[1].weight.is_contiguous()


def test_sync_batchnorm_only_under_ddp_on_gpu(monkeypatch):
    head = nn.Sequential(mlp(8, 16, 4, layers=3, last_bn=True))
    state = {k: v.clone() for k, v in head.state_dict().items()}
    assert sync_batchnorm(head, torch.device("cuda")) is head and not _syncs(head), "one process: unchanged"
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    assert not _syncs(sync_batchnorm(head, torch.device("cpu"))), "gloo on CPU: SyncBatchNorm needs a GPU"
    converted = sync_batchnorm(head, torch.device("cuda"))
    assert _syncs(converted) == 3 and not any(type(m) is nn.BatchNorm1d for m in converted.modules())
    assert {k: v for k, v in converted.state_dict().items()}.keys() == state.keys()
    assert all(torch.equal(converted.state_dict()[k], v) for k, v in state.items())
    assert train.sync_batchnorm is sync_batchnorm


def _syncs(module: nn.Module) -> int:
    return sum(isinstance(m, nn.SyncBatchNorm) for m in module.modules())


def test_compiled_training_matches_eager():
    eager, compiled = ConvNet(), ConvNet()
    e = fit(eager, _images(), FitConfig(steps=8, batch_size=16, lr=1e-2), seed=0)
    c = fit(compiled, _images(), FitConfig(steps=8, batch_size=16, lr=1e-2, compile=True), seed=0)
    assert c.losses == pytest.approx(e.losses, rel=1e-3, abs=1e-4)
    assert torch.allclose(compiled.head.weight, eager.head.weight, atol=1e-4)
