"""The contract of every registered attack, whatever its name (DESIGN principle 6).

Image attacks (family ``attack``): ``attack(model, x, y, *, eps, task, generator) -> x_adv`` — same shape,
in [0, 1], within the L∞ ε-ball around the *clean* input, ε=0 is the identity, eval mode during the attack
and the caller's mode after, parameters' ``.grad`` untouched, seeded determinism, loud errors outside [0, 1].
Report-side and joint attacks (family ``report-attack``) return an ``AdversarialPair`` with the same
hygiene. Also: the two families are kept apart in configs and in ``medrobust list``.
"""

import pytest
import torch
from torch import nn

from medrobust import registry
from medrobust.attacks.base import AttackInputError
from medrobust.attacks.text import AdversarialPair

EPS = 8 / 255
TASKS = {"binary": ("binary", ("normal", "abnormal")), "multiclass": ("multiclass", ("a", "b", "c", "d"))}
# keep every attack cheap on CPU: fewer steps / queries where the attack has such a parameter
FAST = {"steps": 3, "n_queries": 20, "restarts": 1}


def build(family: str, name: str):
    cls = registry.get(family, name)
    return cls(cls.Params(**{k: v for k, v in FAST.items() if k in cls.Params.model_fields}))


class ModeRecorder(nn.Module):
    """``model`` that records whether it was in training mode at each forward pass."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.modes = model, []

    def forward(self, *args, **kwargs):
        self.modes.append(self.training)
        return self.model(*args, **kwargs)


# ----------------------------------------------------------------------------------------- image attacks


@pytest.fixture(scope="module", params=sorted(TASKS))
def image_case(request):
    """A tiny conv net (dropout included, so its mode matters) on random [0, 1] images; labels from the model."""
    from medrobust.task import Task

    task = Task(*TASKS[request.param])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.1), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, task.n_outputs))
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    y[:3] = (y[:3] + 1) % task.n_outputs  # a few examples start wrong
    return model, x, y, task


@pytest.mark.parametrize("name", registry.names("attack"))
def test_image_attack_contract(image_case, name):
    model, x, y, task = image_case
    attack, recorder = build("attack", name), ModeRecorder(model)
    x_before = x.clone()
    recorder.zero_grad(set_to_none=True)
    recorder.train()
    try:
        x_adv = attack(recorder, x, y, eps=EPS, task=task, generator=torch.Generator().manual_seed(0))
        assert recorder.modes and not any(recorder.modes), f"{name}: the model must be in eval mode during the attack"
        assert recorder.training and model.training, f"{name}: the caller's train mode must be restored"
        assert all(p.grad is None for p in model.parameters()), f"{name}: parameters' .grad must stay untouched"
    finally:
        recorder.eval()
    assert torch.equal(x, x_before), f"{name}: the clean input must not be modified in place"
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    assert (x_adv - x).abs().max().item() <= EPS + 1e-6, f"{name}: outside the ε-ball around the clean input"
    assert (x_adv != x).any(), f"{name}: a non-zero budget must change the input"
    again = attack(recorder, x, y, eps=EPS, task=task, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, x_adv), f"{name}: the same generator seed must give the same x_adv"
    assert not recorder.training, f"{name}: the caller's eval mode must be kept"
    zero = attack(recorder, x, y, eps=0.0, task=task, generator=torch.Generator().manual_seed(0))
    assert torch.equal(zero, x), f"{name}: ε=0 must return the clean input"


@pytest.mark.parametrize("name", registry.names("attack"))
def test_image_attack_rejects_bad_inputs(image_case, name):
    model, x, y, task = image_case
    attack = build("attack", name)
    with pytest.raises(AttackInputError, match=r"\[0, 1\]"):
        attack(model, x * 255, y, eps=EPS, task=task)
    with pytest.raises(AttackInputError, match=r"\[0, 1\]"):
        attack(model, x - 0.5, y, eps=EPS, task=task)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(AttackInputError, match="NaN"):
        attack(model, bad, y, eps=EPS, task=task)
    with pytest.raises(AttackInputError, match="eps"):
        attack(model, x, y, eps=-1.0, task=task)


# ---------------------------------------------------------------------------------- report-side attacks

REPORTS = ["Small right pleural effusion. No nodule.", "Cardiomegaly. Possible consolidation at the left base.",
           "No effusion, no consolidation.", "Bilateral nodules; moderate cardiomegaly.",
           "Left effusion and possible opacity.", "Normal study without cardiomegaly.",
           "Right nodule, small opacity.", "Moderate bilateral effusions."]
# the budget each report attack is checked at: (budget, image ε in pixels, word edits allowed or None)
BUDGETS = {"report-embedding-pgd": (0.25, 0.0, None), "report-word-substitution": (2, 0.0, 2),
           "joint-image-report": ((EPS, 2), EPS, 2), "report-random-edits": (2, 0.0, 2)}


@pytest.fixture(scope="module")
def report_case():
    """A tiny untrained image+report classifier (SmallCNN + TextTransformer, as in test_report_attacks)."""
    from medrobust.data.tokenizer import ReportTokenizer
    from medrobust.models.encoders import CNNParams, SmallCNN
    from medrobust.models.heads import Classifier
    from medrobust.models.text import TextParams, TextTransformer
    from medrobust.task import Task

    tok = ReportTokenizer.train(REPORTS, vocab_size=200, max_len=24)
    torch.manual_seed(0)
    model = Classifier(SmallCNN(1, 2, 28, [0.5], [0.25], CNNParams(width=4, depth=2)), 2,
                       TextTransformer(tok.vocab_size, TextParams(max_len=24, dim=16, heads=2))).eval()
    x = torch.rand(len(REPORTS), 1, 28, 28, generator=torch.Generator().manual_seed(1))
    tokens = torch.as_tensor(tok.encode(REPORTS))
    with torch.no_grad():
        y = model(x, tokens).argmax(1)  # every example starts correct, so the attacks have work to do
    return model, x, tokens, list(REPORTS), y, Task("binary", ("normal", "abnormal")), tok


@pytest.mark.parametrize("name", registry.names("report-attack"))
def test_report_attack_contract(report_case, name):
    model, x, tokens, texts, y, task, tok = report_case
    if name not in BUDGETS:
        pytest.fail(f"{name}: add the budget its contract is checked at to BUDGETS")
    budget, eps, max_edits = BUDGETS[name]
    attack = build("report-attack", name)
    assert getattr(attack, "target", None) in ("report", "joint")

    def run():
        return attack(model, x, tokens, y, budget=budget, task=task, texts=texts, tokenizer=tok,
                      generator=torch.Generator().manual_seed(0))

    model.zero_grad(set_to_none=True)
    model.train()
    try:
        pair = run()
        assert model.training, f"{name}: the caller's train mode must be restored"
        assert all(p.grad is None for p in model.parameters()), f"{name}: parameters' .grad must stay untouched"
    finally:
        model.eval()
    assert isinstance(pair, AdversarialPair)
    assert pair.image.shape == x.shape and pair.image.min() >= 0 and pair.image.max() <= 1
    assert (pair.image - x).abs().max().item() <= eps + 1e-6, f"{name}: image outside its budget"
    assert pair.text_features.shape[0] == len(x)
    with torch.no_grad():
        clean = model.text_features(tokens)
    assert not torch.equal(pair.text_features, clean), f"{name}: a non-zero budget must change the report"
    if max_edits is not None:
        assert pair.edits is not None and int(pair.edits.max()) <= max_edits
        assert torch.equal(pair.tokens, torch.as_tensor(tok.encode(pair.texts)))
    again = run()
    assert not model.training, f"{name}: the caller's eval mode must be kept"
    assert torch.equal(again.image, pair.image) and torch.equal(again.text_features, pair.text_features)
    assert again.texts == pair.texts and (pair.edits is None or torch.equal(again.edits, pair.edits))


def test_families_are_disjoint_and_every_report_side_attack_is_in_its_own():
    image, report = set(registry.names("attack")), set(registry.names("report-attack"))
    assert {"fgsm", "pgd", "apgd-ce", "apgd-dlr", "square"} <= image
    assert {"report-embedding-pgd", "report-word-substitution", "joint-image-report"} <= report
    assert not image & report
    assert not any(getattr(registry.get("attack", n), "target", "image") in ("report", "joint") for n in image)


# ------------------------------------------------------------------------------------- configs and CLI


@pytest.mark.parametrize("section,name,message", [
    ({"attacks": ["fgsm", "report-word-substitution"]}, "report-word-substitution",
     "'evaluation.attacks[1]': report-word-substitution is a report-attack (it attacks the report text); "
     "list it under evaluation.report_attacks"),
    ({"worst_case": ["joint-image-report"]}, "joint-image-report",
     "'evaluation.worst_case[0]': joint-image-report is a report-attack (it attacks image and report together); "
     "list it under evaluation.report_attacks"),
    ({"report_attacks": [{"name": "pgd", "budgets": [1]}]}, "pgd",
     "'evaluation.report_attacks[0]': pgd is an image attack (it attacks the image); list it under "
     "evaluation.attacks or worst_case"),
])
def test_config_names_the_family_of_a_misplaced_attack(section, name, message):
    from medrobust.config import ConfigError, validate

    with pytest.raises(ConfigError) as err:
        validate({"evaluation": section})
    assert message in str(err.value)


def test_config_unknown_report_attack_lists_the_report_attacks():
    from medrobust.config import ConfigError, validate

    with pytest.raises(ConfigError, match=r"'evaluation.report_attacks\[0\]': unknown report-attack 'report-bogus'"):
        validate({"evaluation": {"report_attacks": [{"name": "report-bogus", "budgets": [1]}]}})


def test_list_shows_report_attacks_in_their_own_family(capsys):
    from medrobust import cli

    assert cli.FAMILIES == registry.FAMILIES
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "report-attack report-word-substitution" in lines and "attack pgd" in lines
    assert not [line for line in lines if line.startswith(("attack report-", "attack joint-"))]
    assert cli.main(["list", "report-attack"]) == 0
    only = capsys.readouterr().out.splitlines()
    assert only and all(line.startswith("report-attack ") for line in only)
