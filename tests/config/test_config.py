"""Typed study config: unknown keys and bad values are rejected with the key named; overrides checked too."""

import pytest

from medrobust.config import ConfigError, load_config, validate


def test_defaults_are_the_quick_study(tmp_path):
    cfg = load_config("configs/quick.yaml")
    assert [m.label for m in cfg.methods] == ["supervised", "simclr", "supervised-multimodal", "clip", "simclr @ diverse"]
    assert [s.describe() for s in cfg.pretrain.pools["diverse"]] == [
        "target", "synthetic(modality=ultrasound)", "synthetic(modality=fundus)"]
    assert len(cfg.seeds) >= 2 and cfg.label_fractions == [0.1]  # the sparse-label setting (CPU budget)
    assert cfg.data.source == "synthetic" and cfg.data.params["image_size"] == 28


@pytest.mark.parametrize("raw, key", [
    ({"finetune": {"stpes": 3}}, "finetune.stpes"),
    ({"evaluation": {"max_adv": 3}}, "evaluation.max_adv"),
    ({"bogus": 1}, "bogus"),
])
def test_unknown_key_is_named_with_allowed_keys(raw, key):
    with pytest.raises(ConfigError, match=f"unknown key '{key}'.*allowed keys"):
        validate(raw)


def test_bad_values_name_the_key():
    with pytest.raises(ConfigError, match="'label_fractions'"):
        validate({"label_fractions": [0.0, 1.5]})
    with pytest.raises(ConfigError, match="'finetune.steps'"):
        validate({"finetune": {"steps": "many"}})
    with pytest.raises(ConfigError, match="'evaluation.epsilons'"):
        validate({"evaluation": {"epsilons": [2, 1]}})


def test_component_parameters_are_checked_against_their_schema():
    with pytest.raises(ConfigError, match=r"unknown key 'methods\[0\].temperatur'"):
        validate({"methods": [{"name": "simclr", "temperatur": 0.1}]})
    with pytest.raises(ConfigError, match="unknown method 'simclrr'.*simclr"):
        validate({"methods": ["simclrr"]})
    with pytest.raises(ConfigError, match="unknown key 'data.n_per_sit'"):
        validate({"data": {"n_per_sit": 10}})
    with pytest.raises(ConfigError, match=r"evaluation.corruptions\[0\].*unknown corruption"):
        validate({"evaluation": {"corruptions": ["fog"]}})


def test_overrides_are_applied_and_checked(tmp_path):
    cfg = load_config("configs/quick.yaml", ["seeds=[4,5]", "finetune.steps=7", "methods=[supervised]"])
    assert cfg.seeds == [4, 5] and cfg.finetune.steps == 7 and [m.name for m in cfg.methods] == ["supervised"]
    with pytest.raises(ConfigError, match="unknown key 'finetune.setps'"):
        load_config("configs/quick.yaml", ["finetune.setps=7"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config("configs/quick.yaml", ["seeds"])


def test_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seeds: [0, 1\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml must hold a mapping"):
        load_config(lst)


def test_run_keys_survive_saving_and_reloading_the_config(tmp_path):
    """The report is rebuilt from the saved study.yaml: every run key must come out the same."""
    from medrobust.config import dump
    from medrobust.study.spec import expand

    cfg = load_config("configs/quick.yaml", ["evaluation.worst_case=[{name: pgd, steps: 5}]", "seeds=[3]"])
    saved = tmp_path / "study.yaml"
    saved.write_text(dump(cfg))
    again = load_config(saved)
    assert [r.key for r in expand(cfg, True)[0]] == [r.key for r in expand(again, True)[0]]
    changed = load_config(saved, ["evaluation.check_epsilon=64"])
    assert [r.key for r in expand(changed, True)[0]] != [r.key for r in expand(cfg, True)[0]]


def test_arms_with_parameters_are_labelled_and_may_narrow_the_fractions():
    from medrobust.study.spec import expand

    cfg = validate({"methods": ["supervised-multimodal", "robust-mmr",
                                {"name": "robust-mmr", "domain_weight": 0, "label_fractions": [0.1]}],
                    "label_fractions": [0.1, 1.0], "seeds": [0], "multimodal": {"fusion": "fusion"}})
    assert [m.label for m in cfg.methods] == ["supervised-multimodal", "robust-mmr", "robust-mmr(domain_weight=0)"]
    assert cfg.methods[2].params == {"domain_weight": 0} and cfg.methods[2].label_fractions == [0.1]
    runs, _ = expand(cfg, has_text=True, has_indications=True)
    per_arm = {}
    for r in runs:
        per_arm.setdefault(r.method.label, []).append(r.fraction)
    assert per_arm == {"supervised-multimodal": [0.1, 1.0], "robust-mmr": [0.1, 1.0],
                       "robust-mmr(domain_weight=0)": [0.1]}
    assert len({r.key for r in runs}) == len(runs)
    assert len({r.pretrain_key for r in runs if r.method.name == "robust-mmr"}) == 2  # the ablation pre-trains anew
    runs, skipped = expand(validate({"methods": ["supervised", {"name": "simclr", "label_fractions": [0.5]}],
                                     "label_fractions": [0.1]}), has_text=False)
    assert {r.method.label for r in runs} == {"supervised"} and skipped[0]["method"] == "simclr"
    assert expand(validate({"methods": [{"name": "simclr", "seeds": [7]}], "seeds": [0, 1]}), False)[0] == []
    one = validate({"methods": ["simclr", {"name": "simclr", "temperature": 0.5, "seeds": [1]}], "seeds": [0, 1]})
    assert sorted((r.method.label, r.seed) for r in expand(one, has_text=False)[0] if r.fraction == 1.0) == [
        ("simclr", 0), ("simclr", 1), ("simclr(temperature=0.5)", 1)]
    with pytest.raises(ConfigError, match="lists an arm twice"):
        validate({"methods": ["simclr", {"name": "simclr"}]})
    with pytest.raises(ConfigError, match="multimodal.tasks"):
        validate({"multimodal": {"tasks": ["segmentation"]}})
    with pytest.raises(ConfigError, match="multimodal.fusion"):
        validate({"multimodal": {"fusion": {"name": "fusion", "depht": 2}}})


def test_fusion_and_tasks_change_only_the_keys_of_image_report_arms():
    from medrobust.study.spec import expand

    base = {"methods": ["supervised", "supervised-multimodal"], "seeds": [0], "label_fractions": [1.0]}
    a, _ = expand(validate(base), has_text=True, has_indications=True)
    b, _ = expand(validate({**base, "multimodal": {"fusion": "fusion", "tasks": ["vqa"]}}), has_text=True,
                  has_indications=True)
    assert a[0].key == b[0].key and a[1].key != b[1].key


def test_finetune_modes_multiply_only_the_self_supervised_arms():
    from medrobust.study.spec import expand

    cfg = validate({"methods": ["supervised", "simclr", "clip"], "seeds": [0, 1], "label_fractions": [0.1],
                    "finetune": {"mode": ["full", "linear", "knn"]}})
    runs, skipped = expand(cfg, has_text=True)
    arms = sorted({r.arm for r in runs})
    assert arms == ["clip", "clip [linear]", "simclr", "simclr [knn]", "simclr [linear]", "supervised"]
    assert len(runs) == 2 * len(arms) and len({r.key for r in runs}) == len(runs)
    assert skipped == [{"method": "clip [knn]", "reason": skipped[0]["reason"]}] and "image-only" in skipped[0]["reason"]
    assert len({r.pretrain_key for r in runs if r.method.name == "simclr" and r.seed == 0}) == 1  # one pre-training
    assert validate({"finetune": {"mode": "linear"}}).finetune.mode == ["linear"]
    with pytest.raises(ConfigError, match="finetune.mode"):
        validate({"finetune": {"mode": ["full", "probe"]}})


@pytest.mark.parametrize("name, has_text, n_runs, arms", [
    ("quick", True, 15, {"supervised", "simclr", "supervised-multimodal", "clip", "simclr @ diverse"}),
    ("full", True, 65, {"supervised", "simclr", "supervised-multimodal", "clip", "convirt", "mmr", "robust-mmr",
                        "clip [image+indication]", "simclr @ diverse", "supervised-multitask @ diverse"}),
    ("multimodal", True, 51, {"supervised", "supervised-multimodal", "clip", "convirt", "mmr", "robust-mmr",
                              "robust-mmr(perturb_eps=0, saliency=0)", "robust-mmr(domain_weight=0, site_weight=0)",
                              "robust-mmr [image+indication]", "robust-mmr(resilience_weight=0) [image+indication]"}),
    ("defenses", True, 60, None),
    ("medmnist", False, None, None),
    ("manifest", True, None, None),
    ("zoo", False, None, None),
    ("diverse", True, 15, {"supervised", "simclr", "simclr @ 2d", "simclr @ mixed", "supervised-multitask @ mixed"}),
    ("breast_pool", False, 12, {"supervised", "simclr", "simclr @ real", "supervised-multitask @ real"}),
])
def test_every_shipped_config_loads_and_expands(name, has_text, n_runs, arms):
    """The configs in configs/ stay valid as the schema changes, and the grids are what their headers say."""
    from medrobust.study.spec import expand

    runs, _ = expand(load_config(f"configs/{name}.yaml"), has_text=has_text, has_indications=has_text)
    assert runs and len({r.key for r in runs}) == len(runs)
    if n_runs is not None:
        assert len(runs) == n_runs
    if arms is not None:
        assert {r.method.label for r in runs} == arms
    if name == "full":  # the study for conclusions: the quick grid with more seeds, images and attack budget
        cfg, quick = load_config("configs/full.yaml"), load_config("configs/quick.yaml")
        assert len(cfg.seeds) >= 5 and cfg.evaluation.max_adversarial == 300
        assert cfg.evaluation.worst_case == "autoattack"
        # the demo's arms and more (ConVIRT, MMR and Robust-MMR are left out of the demo for its CPU budget), and the
        # demo's label fraction and 100%
        assert all(m in cfg.methods for m in quick.methods) and set(quick.label_fractions) < set(cfg.label_fractions)
        assert {r.fraction for r in runs if r.method.name in ("clip", "robust-mmr")} == {0.1}
        assert {r.fraction for r in runs if r.method.name == "simclr"} == {0.1, 1.0}
    if name == "quick":  # the question's sparse-label setting, every arm
        assert {r.fraction for r in runs} == {0.1}


@pytest.mark.parametrize("evaluation, where", [
    ({"attacks": ["fgsm", {"name": "pgd", "norm": "l2"}]}, r"attacks\[1\] \(pgd\) has norm 'l2'"),
    ({"worst_case": [{"name": "apgd-ce"}, {"name": "pgd", "norm": "l2", "steps": 5}]}, r"worst_case\[1\] \(pgd\)"),
])
def test_l2_attacks_are_refused_on_the_linf_grid(evaluation, where):
    """The study's ε grid is L∞ ×1/255: an L2 attack would silently get a radius of a few 1/255."""
    with pytest.raises(ConfigError, match=rf"'evaluation'.*{where}.*L∞ in units of 1/255"):
        validate({"evaluation": evaluation})
    assert validate({"evaluation": {"attacks": [{"name": "pgd", "norm": "linf", "steps": 3}]}}).evaluation.attacks[0] \
        .params == {"norm": "linf", "steps": 3}


def test_what_a_classifier_sees_is_an_arm_choice_checked_against_the_method_and_the_data():
    """Issue 12: the report is never a classifier input; ``inputs`` picks image or image+indication."""
    from medrobust.study.spec import expand

    cfg = validate({"methods": ["supervised", "supervised-multimodal", "clip", {"name": "clip", "inputs":
                                                                                "image+indication"}],
                    "seeds": [0], "label_fractions": [0.1]})
    assert [m.label for m in cfg.methods] == ["supervised", "supervised-multimodal", "clip", "clip [image+indication]"]
    assert [m.decides_with_text for m in cfg.methods] == [False, True, False, True]
    runs, skipped = expand(cfg, has_text=True, has_indications=True)
    assert [r.arm for r in runs] == [m.label for m in cfg.methods] and not skipped
    assert len({r.key for r in runs}) == 4 and runs[2].pretrain_key == runs[3].pretrain_key  # one pre-training
    # reports but no indications (e.g. a manifest without that column): the arms whose classifier reads text skip
    runs, skipped = expand(cfg, has_text=True, has_indications=False)
    assert [r.arm for r in runs] == ["supervised", "clip"]
    assert [s["method"] for s in skipped] == ["supervised-multimodal", "clip [image+indication]"]
    assert "never sees the report" in skipped[0]["reason"] and "'indication' column" in skipped[0]["reason"]
    with pytest.raises(ConfigError, match="simclr.*trains no text encoder"):
        expand(validate({"methods": [{"name": "simclr", "inputs": "image+indication"}]}), True, True)
    with pytest.raises(ConfigError, match="use 'supervised'"):
        expand(validate({"methods": [{"name": "supervised-multimodal", "inputs": "image"}]}), True, True)
    with pytest.raises(ConfigError, match="inputs"):
        validate({"methods": [{"name": "clip", "inputs": "image+report"}]})
