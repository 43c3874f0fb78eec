"""The GPU path end to end (pre-training, fine-tuning, attacks, defenses, evaluation) on ``device: cuda``, in fp32
and bf16 with channels-last; SyncBatchNorm under 2-GPU DDP. Skipped where there is no CUDA device; run them on a
GPU machine with ``pytest tests/gpu``."""

import os

import pytest
import torch
import torch.multiprocessing as mp

from conftest import free_port, tiny_overrides
from medrobust.config import load_config
from medrobust.study.runner import run_study
from medrobust.study.store import Store

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device here: the GPU path is tested on a GPU machine (pytest tests/gpu)")

ARMS = ["methods=[supervised, {name: simclr}, {name: supervised, defense: pgd-at}]", "label_fractions=[1.0]",
        "seeds=[0]", "device=cuda", "data.n_per_site=120", "pretrain.steps=30", "finetune.steps=40"]


def _study(out, *extra):
    cfg = load_config("configs/quick.yaml", [*tiny_overrides(out), *ARMS, *extra])
    run_study(cfg, log=lambda _line: None)
    return {r.arm: r for r in Store(cfg.study_dir / "runs.sqlite").records()}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_study_runs_on_cuda(tmp_path, precision):
    runs = _study(tmp_path / precision, *(f"{s}.{k}={v}" for s in ("pretrain", "finetune")
                                          for k, v in (("precision", precision), ("channels_last", "true"))))
    assert set(runs) == {"supervised", "simclr", "supervised + pgd-at"}
    for arm, r in runs.items():
        m = r.metrics
        assert 0.0 <= m.clean.acc <= 1.0 and 0.0 <= m.clean.auc <= 1.0, arm
        curve = [m.attacks["pgd"][k] for k in sorted(m.attacks["pgd"], key=float)]
        assert all(b <= a + 1e-6 for a, b in zip(curve, curve[1:])), f"{arm}: robust accuracy falls with ε"
        assert curve[-1] < curve[0] or curve[0] < 0.6, f"{arm}: PGD (fp32 gradients) must bite at ε 8/255"
        assert all(c.passed for c in m.checks if c.name.startswith("gradient")), f"{arm}: no masked gradients"


def test_cuda_matches_cpu_in_fp32(tmp_path):
    gpu, cpu = _study(tmp_path / "gpu"), _study(tmp_path / "cpu", "device=cpu")
    for arm in gpu:  # different kernels: not bitwise, but the same model within a few points
        assert abs(gpu[arm].metrics.clean.acc - cpu[arm].metrics.clean.acc) < 0.08, arm


def _sync_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    from medrobust.engine import distributed
    from medrobust.engine.train import FitConfig, fit
    from medrobust.methods.momentum import mlp

    torch.cuda.set_device(rank)
    distributed.setup(torch.device("cuda", rank))

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = mlp(4, 8, 2, layers=2)

        def forward(self, batch):
            return {"loss": self.net(batch["x"]).pow(2).mean()}

    g = torch.Generator().manual_seed(0)
    head = Head()
    fit(head, {"x": torch.randn(64, 4, generator=g) * (1 + torch.arange(64).view(-1, 1) / 8)},
        FitConfig(steps=5, batch_size=32), seed=0, device=torch.device("cuda", rank))
    out[rank] = (any(isinstance(m, torch.nn.SyncBatchNorm) for m in head.modules()),
                 head.net[0].weight.detach().cpu().clone())
    torch.distributed.destroy_process_group()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="SyncBatchNorm under DDP needs 2 GPUs")
def test_syncbatchnorm_under_ddp_on_gpus():
    out = mp.Manager().dict()
    mp.spawn(_sync_worker, args=(2, free_port(), out), nprocs=2)
    assert out[0][0] and out[1][0]
    assert torch.equal(out[0][1], out[1][1]), "the ranks stay identical"
