"""Issue 12 point 9: "text left out" goes through the model's declared missing-modality path, not an empty text."""

import numpy as np
import pytest
import torch

from medrobust import registry
from medrobust.data.base import Task, to_unit
from medrobust.data.tokenizer import ReportTokenizer
from medrobust.evaluation.adversarial import AttackTarget
from medrobust.evaluation.robustness import EvalConfig, EvalData, evaluate
from medrobust.models.heads import Classifier, FixedReport
from medrobust.models.text import TextParams, TextTransformer


def test_text_left_out_uses_missing_report_and_differs_from_an_empty_text(synthetic_small):
    test = synthetic_small.test.subset(np.arange(60))
    tok = ReportTokenizer.train(synthetic_small.train.indications, vocab_size=200, max_len=24)
    torch.manual_seed(0)
    model = Classifier(registry.get("encoder", "cnn")(1, 2, 28, [0.5], [0.25]), 2,
                       text_encoder=TextTransformer(tok.vocab_size, TextParams(max_len=24))).eval()
    with torch.no_grad():  # a non-zero text head, so that zeroed and empty-text features give different logits
        model.head.weight.normal_()
    x = to_unit(test.images)
    with torch.no_grad():
        declared = model(x, missing="report")
        empty = model(x, torch.as_tensor(tok.encode([""] * len(test))))
    assert not torch.allclose(declared, empty)  # the two ways of "removing" the text are not the same function
    data = EvalData(Task("binary", ("normal", "abnormal")), test.images, test.labels,
                    test_tokens=tok.encode(test.indications), test_texts=test.indications, tokenizer=tok)
    cfg = EvalConfig(epsilons=[0, 2], reference_epsilon=2, attacks=["fgsm"], worst_case=[], report_attacks=[],
                     corruptions=[], max_adversarial=20, check_epsilon=64)
    m = evaluate(model, data, cfg)
    expected = float((declared.argmax(1) == torch.as_tensor(test.labels)).double().mean())
    assert m.without_text.acc == pytest.approx(expected, abs=1e-6)
    # the large-ε check attacks the image pathway through the same path (the text left out)
    target = AttackTarget(model, test.images[:5], test.labels[:5], data.task, missing="report")
    fn = target.function(np.arange(5))
    assert isinstance(fn, FixedReport) and fn.select(torch.tensor([0, 1])) is fn
    with torch.no_grad():
        assert torch.allclose(fn(x[:5]), declared[:5])
