"""supervised-multimodal's modality dropout: a share of the training texts goes through the missing-text path."""

import torch
from torch import nn

from medrobust.data.base import Task
from medrobust.methods.supervised import SupervisedMultimodal


class Recorder(nn.Module):
    """A two-class image+text model whose logits say which path each example took (text: +1, missing: -1)."""

    uses_text = True

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.calls = []

    def forward(self, image, tokens=None, missing=None):
        self.calls.append((len(image), missing))
        sign = -1.0 if missing == "report" else 1.0
        return self.w + torch.tensor([0.0, sign]).expand(len(image), 2)


def _logits_of(objective, batch):
    captured = {}
    import medrobust.methods.supervised as sup

    real = sup.task_loss
    sup.task_loss = lambda logits, y, task: (captured.setdefault("logits", logits), real(logits, y, task))[1]
    try:
        objective(batch)
    finally:
        sup.task_loss = real
    return captured["logits"]


def test_dropped_examples_take_the_missing_text_path_in_their_own_rows():
    task = Task("binary", ("normal", "abnormal"))
    n = 4000
    batch = {"image": torch.rand(n, 1, 4, 4), "tokens": torch.ones(n, 3, dtype=torch.long),
             "label": torch.zeros(n, dtype=torch.long)}
    params = SupervisedMultimodal.Params(augment=False, text_dropout=0.3)
    objective = SupervisedMultimodal(Recorder(), task, params, seed=0).train()
    logits = _logits_of(objective, batch)
    dropped = (logits[:, 1] < 0).double().mean().item()
    assert abs(dropped - 0.3) < 0.03  # the configured share, drawn per example
    assert {m for _, m in objective.model.calls} == {None, "report"} and sum(k for k, _ in objective.model.calls) == n
    # eval mode, or text_dropout 0: every example keeps its text
    assert (_logits_of(objective.eval(), batch)[:, 1] > 0).all()
    plain = SupervisedMultimodal(Recorder(), task, SupervisedMultimodal.Params(augment=False, text_dropout=0), seed=0)
    assert (_logits_of(plain.train(), batch)[:, 1] > 0).all()
    # the same seed draws the same examples
    again = SupervisedMultimodal(Recorder(), task, params, seed=0).train()
    assert torch.equal(_logits_of(again, batch), logits)
