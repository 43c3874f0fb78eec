"""The pooled sampler (:class:`Mixture`): one source per step by weight, homogeneous batches, deterministic per seed,
rank-consistent under 2-process DDP (gloo on CPU), and DDP training on it equal to one process."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from conftest import free_port
from medrobust.engine.train import FitConfig, Mixture, fit


def _parts():
    """Three sources of different shapes; ``idx`` identifies each item."""
    a = {"image": torch.rand(40, 1, 8, 8), "idx": torch.arange(40)}
    b = {"image": torch.rand(24, 3, 6, 6), "idx": torch.arange(100, 124)}
    c = {"image": torch.rand(30, 1, 4, 4, 4), "idx": torch.arange(200, 230)}
    return (a, b, c)


def _mixture(weights=(1.0, 1.0, 2.0)):
    return Mixture(_parts(), weights, (0, 2, 5))  # pool indices need not be 0..k-1 (a method uses a subset)


def test_each_batch_is_one_source_with_its_pool_index_and_shape():
    shapes = {0: (1, 8, 8), 2: (3, 6, 6), 5: (1, 4, 4, 4)}
    for batch in _mixture().batches(8, seed=3, device=torch.device("cpu"), steps=60):
        source = batch["source"]
        assert source.dtype == torch.long and len(source) == len(batch["image"]) == 8
        k = int(source[0])
        assert (source == k).all() and tuple(batch["image"].shape[1:]) == shapes[k]
        lo = {0: 0, 2: 100, 5: 200}[k]
        assert ((batch["idx"] >= lo) & (batch["idx"] < lo + 40)).all()


def test_sources_follow_the_weights_and_the_seed():
    m = _mixture((1.0, 1.0, 2.0))
    order = m.order(seed=0, steps=4000)
    freq = {k: order.count(k) / len(order) for k in (0, 2, 5)}
    assert abs(freq[0] - 0.25) < 0.03 and abs(freq[2] - 0.25) < 0.03 and abs(freq[5] - 0.5) < 0.03
    assert m.order(0, 50) == m.order(0, 50) and m.order(0, 50) != m.order(1, 50)
    first = [b["idx"].tolist() for b in m.batches(8, 7, torch.device("cpu"), 20)]
    again = [b["idx"].tolist() for b in m.batches(8, 7, torch.device("cpu"), 20)]
    assert first == again


def test_bad_mixtures_are_refused():
    with pytest.raises(ValueError, match="one weight and one id per part"):
        Mixture(_parts(), (1.0, 1.0), (0, 1, 2))
    with pytest.raises(ValueError, match="positive"):
        Mixture(_parts(), (1.0, 0.0, 1.0), (0, 1, 2))


class Heads(nn.Module):
    """A shared layer and one head per source: each step leaves the other heads unused (needs
    find_unused_parameters under DDP)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.shared = nn.Linear(1, 4)
        self.heads = nn.ModuleDict({str(k): nn.Linear(4, 1) for k in (0, 2, 5)})

    def forward(self, batch):
        x = batch["image"].flatten(1).mean(dim=1, keepdim=True)
        out = self.heads[str(int(batch["source"][0]))](torch.relu(self.shared(x)))
        return {"loss": ((out - 1.0) ** 2).mean()}


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from medrobust.engine import distributed

    distributed.setup(torch.device("cpu"))
    try:
        seen = [(int(b["source"][0]), b["idx"].tolist()) for b in _mixture().batches(8, 4, torch.device("cpu"), 15)]
        model = Heads()
        fit(model, _mixture(), FitConfig(steps=20, batch_size=8, lr=5e-2), seed=4)
        torch.save({"seen": seen, "state": model.state_dict()}, f"{out}.{rank}")
    finally:
        torch.distributed.destroy_process_group()


def test_two_process_ddp_draws_the_same_sources_and_splits_each_batch(tmp_path):
    single = [(int(b["source"][0]), b["idx"].tolist()) for b in _mixture().batches(8, 4, torch.device("cpu"), 15)]
    ref = Heads()
    fit(ref, _mixture(), FitConfig(steps=20, batch_size=8, lr=5e-2), seed=4)
    out = tmp_path / "mix"
    mp.start_processes(_worker, args=(2, free_port(), str(out)), nprocs=2, join=True, start_method="spawn")
    r0, r1 = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    assert [s for s, _ in r0["seen"]] == [s for s, _ in r1["seen"]] == [s for s, _ in single]
    for (_, a), (_, b), (_, whole) in zip(r0["seen"], r1["seen"], single):
        assert sorted(a + b) == sorted(whole) and not set(a) & set(b)  # each rank its share of the global batch
    for k, v in ref.state_dict().items():  # DDP with unused heads follows the one-process trajectory
        np.testing.assert_allclose(r0["state"][k].numpy(), v.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r1["state"][k].numpy(), v.numpy(), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ref.heads["5"].weight, Heads().heads["5"].weight)
