"""multi: weighted sum of image-only pretext tasks around one shared encoder; validation names the problem."""

import pytest
import torch
from pydantic import ValidationError

from medrobust.config import ConfigError, load_config
from medrobust.methods.contract import Encoders
from medrobust.methods.multi import Multi, MultiParams
from medrobust.models.encoders import SmallCNN


def _encoder():
    torch.manual_seed(0)
    return SmallCNN(1, 2, 28, [0.5], [0.25])


def test_default_tasks_share_the_encoder_and_the_generator():
    enc = _encoder()
    method = Multi(Encoders(enc), seed=0)
    assert list(method.tasks) == ["simclr", "rotation", "restoration"]
    assert all(task.image_encoder is enc for task in method.tasks.values())
    assert all(task.generator is method.generator for task in method.tasks.values())
    shared = {id(p) for p in enc.parameters()}
    assert sum(id(p) in shared for p in method.parameters()) == len(shared)  # listed once for the optimiser


def test_loss_is_the_weighted_sum_of_reported_task_losses():
    params = MultiParams(tasks=[{"name": "rotation", "weight": 0.3}, {"name": "vicreg", "weight": 2.0,
                                                                        "params": {"proj_dim": 16}}])
    method = Multi(Encoders(_encoder()), params=params, seed=1)
    out = method({"image": torch.rand(6, 1, 28, 28)})
    assert torch.allclose(out["loss"], 0.3 * out["rotation"] + 2.0 * out["vicreg"], atol=1e-5)
    assert {"rotation.accuracy", "vicreg.variance", "vicreg.covariance", "vicreg.invariance"} <= set(out)
    assert method.tasks["vicreg"].projector[-1].out_features == 16


def test_after_step_reaches_momentum_tasks():
    enc = _encoder()
    method = Multi(Encoders(enc), params=MultiParams(tasks=[{"name": "byol"}, {"name": "rotation"}]), seed=0)
    byol = method.tasks["byol"]
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(1.0)
    before = [p.clone() for p in byol.target_encoder.parameters()]
    method.after_step()
    m = byol.params.momentum
    for t, o, s in zip(byol.target_encoder.parameters(), before, enc.parameters()):
        assert torch.allclose(t, m * o + (1 - m) * s, atol=1e-6)


@pytest.mark.parametrize("tasks,message", [
    ([{"name": "simclrr"}], "unknown method 'simclrr'"),
    ([{"name": "clip"}], "image-only self-supervised"),
    ([{"name": "supervised"}], "image-only self-supervised"),
    ([{"name": "multi"}], "cannot itself be 'multi'"),
    ([{"name": "mae", "params": {"mask_ratoi": 0.5}}], "mask_ratoi"),
    ([{"name": "mae", "params": {"mask_ratio": 1.5}}], "mask_ratio"),
    ([{"name": "rotation"}, {"name": "rotation"}], "once"),
    ([{"name": "rotation", "weight": 0.0}], "sum to 0"),
    ([], "at least 1"),
])
def test_bad_tasks_are_rejected_naming_the_problem(tasks, message):
    with pytest.raises(ValidationError, match=message):
        MultiParams(tasks=tasks)


def test_study_config_checks_multi_task_params(tmp_path):
    with pytest.raises(ConfigError, match="mask_ratoi"):
        load_config("configs/quick.yaml", [f"output_dir={tmp_path}",
                                           "methods=[{name: multi, tasks: [{name: mae, params: {mask_ratoi: 0.5}}]}]"])
