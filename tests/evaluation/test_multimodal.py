"""Tests for the multimodal downstream tasks: retrieval model, its attack views, report perturbation, VQA."""

import numpy as np
import pytest
import torch

from medrobust import registry
from medrobust.attacks.text import WORD
from medrobust.data.base import Task
from medrobust.data.tokenizer import ReportTokenizer
from medrobust.engine.train import FitConfig, fit
from medrobust.evaluation.multimodal import (ClosedSetVQA, ImageToReports, PairData, ReportsToImages, RetrievalModel,
                                             RetrievalObjective, VQAData, VQAObjective, evaluate_retrieval,
                                             evaluate_vqa, perturb_reports)
from medrobust.evaluation.retrieval import retrieval_metrics
from medrobust.models.heads import Classifier
from medrobust.models.text import TextTransformer, TextParams
from types import SimpleNamespace


@pytest.fixture(scope="module")
def pairs(synthetic_small):
    """A retrieval model fine-tuned briefly on synthetic pairs, with its tokenizer and 40 test pairs."""
    train, test = synthetic_small.train, synthetic_small.test
    tok = ReportTokenizer.train(train.texts, vocab_size=400, max_len=48)
    torch.manual_seed(0)
    image = registry.get("encoder", "cnn")(1, 2, 28, [0.5], [0.25])
    model = RetrievalModel(image, TextTransformer(tok.vocab_size, TextParams(max_len=48)))
    tensors = {"image": torch.as_tensor(train.images), "tokens": torch.as_tensor(tok.encode(train.texts))}
    fit(RetrievalObjective(model), tensors, FitConfig(steps=60, batch_size=64, lr=3e-3), seed=0, device=torch.device("cpu"))
    idx = np.arange(40)
    data = PairData(test.images[idx], tok.encode([test.texts[i] for i in idx]), [test.texts[i] for i in idx])
    return model.eval(), tok, data


def test_retrieval_embeddings_are_unit_vectors_and_training_beats_chance(pairs):
    model, tok, data = pairs
    x = torch.as_tensor(data.images).float() / 255
    with torch.no_grad():
        img, txt = model.encode_image(x), model.encode_text(torch.as_tensor(data.tokens))
    assert img.shape == txt.shape == (40, 64)
    assert torch.allclose(img.norm(dim=1), torch.ones(40), atol=1e-5)
    m = retrieval_metrics(img @ txt.T)
    # chance mean rank is (40 + 1) / 2 = 20.5; reports of the same findings look alike, so far from 1 too
    assert m["image_to_report"]["mean_rank"] < 17 and m["report_to_image"]["mean_rank"] < 17


def test_attack_views_reproduce_the_similarity_and_attacks_raise_the_rank(pairs):
    model, tok, data = pairs
    x, tokens = torch.as_tensor(data.images).float() / 255, torch.as_tensor(data.tokens)
    with torch.no_grad():
        img, txt = model.encode_image(x), model.encode_text(tokens)
        assert torch.allclose(ImageToReports(model, txt)(x), model.scale * img @ txt.T, atol=1e-5)
        view = ReportsToImages(model, img)
        assert torch.allclose(view(None, tokens), model.scale * txt @ img.T, atol=1e-5)
        emb = model.text_encoder.embed(tokens)
        assert torch.allclose(view.text_features_from_embeddings(emb, tokens), txt, atol=1e-6)
    cfg = SimpleNamespace(batch_size=64, corruptions=["gaussian-noise"], reference_epsilon=4.0)
    out = evaluate_retrieval(model, data, None, tok, cfg, seed=0, report_edits=2)
    clean = out["clean"]["image_to_report"]["mean_rank"]
    adv = out["adversarial_image"]
    assert adv["image_to_report"]["mean_rank"] > clean + 1  # the attack pushes the match down the ranking
    assert adv["degradation"]["image_to_report"]["delta"] == pytest.approx(adv["image_to_report"]["mean_rank"] - clean)
    # the word attack stops once the match leaves rank 1 (a misclassification attack): compare R@1
    word = out["adversarial_text"]["report_to_image"]["R@1"]
    rand = out["perturbed_text"]["report_to_image"]["R@1"]
    assert word <= rand and word < out["clean"]["report_to_image"]["R@1"]
    assert "holdout" not in out and "corrupted_image" in out


def test_perturbed_reports_change_at_most_k_words_and_are_seeded():
    texts = ["Small nodule in the right upper lobe. No pleural effusion.", "Heart size is normal."]
    a, b = perturb_reports(texts, 2, seed=1), perturb_reports(texts, 2, seed=1)
    assert a == b
    for orig, new in zip(texts, a):
        wo, wn = WORD.split(orig)[1::2], WORD.split(new)[1::2]
        changed = sum(x != y for x, y in zip(wo, wn)) if len(wo) == len(wn) else None
        assert changed is None or 1 <= changed <= 2 or new != orig
        assert new != orig


def _vqa_model():
    torch.manual_seed(0)
    return Classifier(registry.get("encoder", "cnn")(1, 2, 28, [0.5], [0.25]), 5, TextTransformer(30)).eval()


def test_closed_set_vqa_only_answers_within_the_question_set():
    model = _vqa_model()
    x, tokens = torch.rand(6, 1, 28, 28), torch.randint(4, 30, (6, 8))
    cand = torch.zeros(6, 5, dtype=torch.bool)
    cand[:3, :2] = True  # yes/no questions
    cand[3:, 2:] = True  # side questions
    with torch.no_grad():
        pred = ClosedSetVQA(model, tokens, cand)(x).argmax(1)
    assert (pred[:3] < 2).all() and (pred[3:] >= 2).all()
    sub = ClosedSetVQA(model, tokens, cand).select(torch.tensor([4]))
    with torch.no_grad():
        assert torch.allclose(sub(x[[4]]), ClosedSetVQA(model, tokens, cand)(x)[[4]])
    batch = {"image": x, "tokens": tokens, "label": torch.tensor([0, 1, 0, 2, 3, 4]), "candidates": cand}
    loss = VQAObjective(model)(batch)["loss"]
    logits = model(x, tokens).masked_fill(~cand, -1e4)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, batch["label"]).item(), rel=1e-5)


def test_evaluate_vqa_scores_each_condition_against_the_entries():
    from medrobust.data.vqa import vqa_accuracy

    model = _vqa_model()
    answers = ["no", "yes", "left", "right", "both"]
    entries = [{"image_name": f"i{i}", "question": "q", "answer": answers[i % 5], "answer_type": "CLOSED" if i % 5 < 2
                else "OPEN", "question_type": "presence" if i % 5 < 2 else "side"} for i in range(10)]
    cand = np.zeros((10, 5), dtype=bool)
    for i in range(10):
        cand[i, :2] = i % 5 < 2
        cand[i, 2:] = i % 5 >= 2
    data = VQAData(entries, np.arange(10) % 4, np.random.default_rng(0).integers(4, 30, (10, 8)),
                   np.array([i % 5 for i in range(10)]), cand)
    images = np.random.default_rng(1).integers(0, 255, (4, 1, 28, 28), dtype=np.uint8)
    cfg = SimpleNamespace(batch_size=4, corruptions=[], reference_epsilon=2.0)
    out = evaluate_vqa(model, {"test": images}, {"test": data}, answers, cfg, seed=0)
    with torch.no_grad():
        x = torch.as_tensor(images[data.image_index]).float() / 255
        pred = ClosedSetVQA(model, torch.as_tensor(data.tokens), torch.as_tensor(cand))(x).argmax(1)
    assert out["clean"] == vqa_accuracy([answers[i] for i in pred], entries)
    assert set(out) == {"clean", "image_missing", "adversarial_image"}
    assert out["adversarial_image"]["overall"]["accuracy"] <= out["clean"]["overall"]["accuracy"]
