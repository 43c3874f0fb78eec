"""Shared zoo helpers: EMA update formula, frozen teacher copies, single-process collectives, MLP heads."""

import pytest
import torch
from torch import nn

from medrobust.methods.momentum import all_reduce_mean, ema_update, frozen_copy, gather_no_grad, mlp


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.Linear(7, 3))


def test_ema_update_is_m_old_plus_one_minus_m_student():
    student = _net()
    teacher = frozen_copy(student)
    with torch.no_grad():  # move the student away from the teacher, and give BN statistics to copy
        for p in student.parameters():
            p.add_(torch.randn_like(p))
        student[1].running_mean.fill_(0.3)
    old = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, 0.9)
    for t, o, s in zip(teacher.parameters(), old, student.parameters()):
        assert torch.allclose(t, 0.9 * o + 0.1 * s, atol=1e-6)
    assert torch.equal(teacher[1].running_mean, student[1].running_mean)
    ema_update(teacher, student, 0.0)  # m = 0 copies the student
    assert all(torch.equal(t, s) for t, s in zip(teacher.parameters(), student.parameters()))


def test_frozen_copy_is_independent_and_frozen():
    student = _net()
    teacher = frozen_copy(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    for t, s in zip(teacher.parameters(), student.parameters()):
        assert torch.equal(t, s) and t.data_ptr() != s.data_ptr()


def test_ema_update_rejects_bad_momentum_and_mismatched_modules():
    a = _net()
    with pytest.raises(ValueError, match="momentum must be in"):
        ema_update(frozen_copy(a), a, 1.5)
    with pytest.raises(ValueError, match="teacher has"):
        ema_update(nn.Linear(5, 3), a, 0.5)


def test_single_process_collectives_are_detached_identity():
    x = torch.randn(4, 3, requires_grad=True)
    for out in (gather_no_grad(x), all_reduce_mean(x)):
        assert torch.equal(out, x.detach()) and not out.requires_grad


def test_mlp_layers_and_output_batch_norm():
    torch.manual_seed(1)
    head = mlp(6, 10, 4, layers=3, last_bn=True)
    assert [type(m).__name__ for m in head] == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear", "BatchNorm1d"]
    out = head(torch.randn(32, 6) * 5 + 2)  # train mode: the output BN standardises every dimension
    assert out.shape == (32, 4)
    assert torch.allclose(out.mean(dim=0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(out.var(dim=0, unbiased=False), torch.ones(4), atol=1e-3)
    with pytest.raises(ValueError, match="at least 1 layer"):
        mlp(6, 10, 4, layers=0)
