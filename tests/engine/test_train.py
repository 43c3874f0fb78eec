"""The generic loop: batching, divergence errors, and 2-process DDP (gloo on CPU) vs one process."""

import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from conftest import free_port
from medrobust.engine.train import FitConfig, TrainingError, batches, fit


class Linear(nn.Module):
    """A tiny method: mean squared error of a linear model (forward(batch) -> {'loss'})."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 1)

    def forward(self, batch):
        return {"loss": ((self.lin(batch["x"]).squeeze(1) - batch["y"]) ** 2).mean()}


def _data(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return {"x": x, "y": x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1}


def test_batches_cover_each_epoch_once():
    data = {"i": torch.arange(20)}
    stream = batches(data, 5, seed=1, device=torch.device("cpu"))
    first_epoch = torch.cat([next(stream)["i"] for _ in range(4)])
    assert sorted(first_epoch.tolist()) == list(range(20))
    second = torch.cat([next(stream)["i"] for _ in range(4)])
    assert not torch.equal(first_epoch, second), "each epoch draws a new permutation"


def test_fit_converges_and_is_deterministic():
    a, b = Linear(), Linear()
    ra = fit(a, _data(), FitConfig(steps=200, batch_size=16, lr=5e-2), seed=3)
    fit(b, _data(), FitConfig(steps=200, batch_size=16, lr=5e-2), seed=3)
    assert ra.losses[-1] < 0.05 * ra.losses[0]
    assert torch.equal(a.lin.weight, b.lin.weight)


def test_nan_loss_is_reported_with_step():
    class Bad(Linear):
        def forward(self, batch):
            return {"loss": super().forward(batch)["loss"] * float("nan")}

    with pytest.raises(TrainingError, match="step 1"):
        fit(Bad(), _data(), FitConfig(steps=3, batch_size=16), seed=0)


def _ddp_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from medrobust.engine import distributed

    distributed.setup(torch.device("cpu"))
    try:
        model = Linear()
        result = fit(model, _data(), FitConfig(steps=30, batch_size=16, lr=5e-2), seed=5)
        if rank == 0:
            torch.save({"state": model.state_dict(), "samples": result.samples}, out)
    finally:
        torch.distributed.destroy_process_group()


def test_two_process_ddp_matches_single_process(tmp_path):
    single = Linear()
    ref = fit(single, _data(), FitConfig(steps=30, batch_size=16, lr=5e-2), seed=5)
    out = tmp_path / "ddp.pt"
    mp.start_processes(_ddp_worker, args=(2, free_port(), str(out)), nprocs=2, join=True, start_method="spawn")
    ddp = torch.load(out)
    assert ddp["samples"] == ref.samples == 30 * 16
    for k, v in single.state_dict().items():
        np.testing.assert_allclose(ddp["state"][k].numpy(), v.numpy(), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(single.lin.weight, Linear().lin.weight), "training must have moved the weights"
