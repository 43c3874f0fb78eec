"""Corruption sets per modality (``evaluation.corruptions: auto``) and the check of an explicit list against the data."""

import pytest

from medrobust import registry
from medrobust.config import ConfigError, load_config
from medrobust.corruptions.sets import GENERIC, SETS, check_corruptions, corruption_set
from medrobust.study.prepare import prepare
from medrobust.study.runner import resolve_corruptions
from conftest import tiny_overrides


def test_sets_keep_registered_corruptions_that_fit_the_shape():
    known = set(registry.names("corruption"))
    xray = corruption_set("X-ray", (1, 28, 28))
    assert xray and set(xray) <= known and set(xray) <= set(SETS["x-ray"])
    assert xray == [n for n in SETS["x-ray"] if n in known]  # every 2D gray corruption of the set, in order
    assert corruption_set("something else", (1, 28, 28)) == list(GENERIC) == corruption_set(None, (1, 28, 28))
    ct3d = corruption_set("CT", (1, 16, 16, 16))
    for name in ct3d:
        fn = registry.get("corruption", name)
        assert 3 in fn.dims and (fn.channels is None or 1 in fn.channels)


def test_an_explicit_corruption_that_cannot_take_the_data_names_both():
    only_2d = next((n for n in registry.names("corruption") if registry.get("corruption", n).dims == (2,)), None)
    if only_2d is None:
        pytest.skip("no 2D-only corruption registered")
    with pytest.raises(ValueError, match=rf"corruptions\[1\].*{only_2d} cannot corrupt the vol images.*1×8×8×8.*2D"):
        check_corruptions(["gaussian-noise", only_2d], (1, 8, 8, 8), "the vol images")


def test_auto_is_resolved_into_the_stored_config(tmp_path):
    cfg = load_config(None, [*tiny_overrides(tmp_path), "evaluation.corruptions=auto"])
    data = prepare(cfg)
    resolved = resolve_corruptions(cfg, data)
    assert resolved.evaluation.corruptions == corruption_set("X-ray", (1, 28, 28))  # synthetic chest: X-ray
    assert cfg.evaluation.corruptions == "auto"  # the given config is not changed
    with pytest.raises(ConfigError, match="corruptions"):
        load_config(None, [*tiny_overrides(tmp_path), "evaluation.corruptions=[no-such-corruption]"])


def test_a_study_refuses_a_corruption_its_data_cannot_take(tmp_path):
    only_3d = next((n for n in registry.names("corruption") if registry.get("corruption", n).dims == (3,)), None)
    if only_3d is None:
        pytest.skip("no 3D-only corruption registered")
    cfg = load_config(None, [*tiny_overrides(tmp_path), f"evaluation.corruptions=[{only_3d}]"])
    with pytest.raises(ConfigError, match=rf"{only_3d} cannot corrupt the synthetic images \(X-ray\).*3D"):
        resolve_corruptions(cfg, prepare(cfg))


@pytest.mark.slow
def test_a_3d_medmnist_study_runs_the_ct_set_in_3d(tmp_path):
    """AdrenalMNIST3D (CT): ``auto`` resolves to the CT set for 28³ volumes, and every one of its corruptions is
    evaluated on the volumes (and the MRI k-space artefacts when named)."""
    from conftest import SHARED_DATA
    from medrobust.study.runner import run_study
    from medrobust.study.store import Store

    path = SHARED_DATA / "adrenalmnist3d.npz"
    if not path.exists():
        pytest.skip(f"{path} is not present")
    cfg = load_config("configs/medmnist.yaml", [
        f"data.path={path}", f"output_dir={tmp_path}", "methods=[supervised]", "seeds=[0]", "label_fractions=[1.0]",
        "image_encoder={name: medformer, dim: 32, depth: 1}", "finetune.steps=3", "evaluation.severities=[1]",
        "evaluation.epsilons=[0,2]", "evaluation.attacks=[fgsm]", "evaluation.worst_case=[]",
        "evaluation.max_adversarial=8", "device=cpu", "evaluation.evaluate_failed=true"])  # 3 steps: may not learn
    run_study(cfg, log=lambda s: None)
    record = Store(tmp_path / "runs.sqlite").records()[0]
    expected = corruption_set("CT", (1, 28, 28, 28))
    assert {"ct-low-dose", "ct-window-shift", "anisotropic-resolution"} <= set(expected)
    assert list(record.metrics.corruptions) == expected
    assert all(0 <= v["1"] <= 1 for v in record.metrics.corruptions.values())
    assert set(record.metrics.corruptions_balanced) == set(expected) and record.metrics.clean_balanced is not None
