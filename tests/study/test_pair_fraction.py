"""The sparse-pairs setting: ``pretrain.pair_fraction`` of the training images have a report, and image+text
methods pre-train on those pairs only (spied on the tensors ``fit`` gets); image-only methods use every image."""

import pytest
import torch

from medrobust.config import ConfigError, load_config
from medrobust.record import StudyFacts
from medrobust.study.context import pair_subset, pretrain
from medrobust.study.runner import model_specs
from medrobust.study.spec import expand
from test_confound import spy_on_fit, tiny  # the same tiny grid and fit() spy


@pytest.mark.parametrize("method, image_text", [("clip", True), ("simclr", False)])
def test_pair_fraction_subsets_the_pairs_of_image_text_pretraining_only(tmp_path, monkeypatch, method, image_text):
    cfg, data = tiny(tmp_path, f"methods=[{method}]", "pretrain.pair_fraction=0.25")
    calls = spy_on_fit(monkeypatch)
    (run,), _ = expand(cfg, data.has_text)
    pretrain(run, model_specs(cfg), data, cfg.pretrain, torch.device("cpu"), tmp_path / "ckpt", lambda _m: None)
    (call,) = calls
    n = len(data.train)
    want = pair_subset(n, 0.25, run.seed) if image_text else torch.arange(n).numpy()
    assert abs(len(call["tensors"]["image"]) - (0.25 * n if image_text else n)) <= 0.5  # a quarter of the pairs
    assert torch.equal(call["tensors"]["image"], torch.as_tensor(data.train.images[want]))
    if image_text:
        assert torch.equal(call["tensors"]["tokens"], torch.as_tensor(data.reports.train[want]))  # the reports


def test_pair_subset_is_seeded_nested_and_checked():
    a, b = pair_subset(200, 0.1, 0), pair_subset(200, 0.5, 0)
    assert len(a) == 20 and len(b) == 100 and set(a) <= set(b)
    assert (a == pair_subset(200, 0.1, 0)).all() and not (a == pair_subset(200, 0.1, 1)).all()
    assert len(pair_subset(200, 1.0, 3)) == 200 and len(pair_subset(5, 0.01, 0)) == 1


def test_pair_fraction_is_a_checked_pretrain_key(tmp_path):
    assert load_config("configs/multimodal.yaml").pretrain.pair_fraction == 0.1
    keys = {f: {r.method.name: r.pretrain_key for r in expand(load_config(
        None, ["methods=[simclr, clip]", "seeds=[0]", "label_fractions=[0.1]", f"pretrain.pair_fraction={f}"]),
        True)[0]} for f in (1.0, 0.5)}
    assert keys[1.0]["clip"] != keys[0.5]["clip"]  # the pairs it pre-trains on changed
    assert keys[1.0]["simclr"] == keys[0.5]["simclr"]  # an image-only method's cached pre-training is still valid
    assert load_config(None).pretrain.pair_fraction == 1.0
    for bad in ("0", "1.5"):
        with pytest.raises(ConfigError, match="pretrain.pair_fraction"):
            load_config(None, [f"pretrain.pair_fraction={bad}"])


def test_setup_says_when_image_report_pretraining_had_sparse_pairs():
    from medrobust.report.render import _budget_line

    sparse = StudyFacts(pretrain={"steps": 150, "batch_size": 256, "pair_fraction": 0.1}, finetune={"steps": 150},
                        has_text=True)
    assert "image+report arms on the 10.0% of training images that have a report" in _budget_line(sparse)
    assert "have a report" not in _budget_line(StudyFacts(pretrain={"steps": 150, "pair_fraction": 1.0}, has_text=True))
