"""Report-side and joint image+report attacks: budgets, identity at zero budget, monotone strength, word list,
joint at least as strong as its parts, loud errors, eval-mode handling."""

import json
import re
from functools import lru_cache
from importlib import resources

import pytest
import torch

from medrobust import registry
from medrobust.attacks.base import AttackInputError
from medrobust.attacks.text import AdversarialPair, embedding_scale, typos
from medrobust.data.tokenizer import CLS, PAD
from medrobust.evaluation.metrics import per_example_accuracy

REPORT_ATTACKS = ["report-embedding-pgd", "report-word-substitution", "joint-image-report"]
WORDS = re.compile(r"[^\W_]+")
EPS = 8 / 255


def attack(name, family="report-attack", **params):
    cls = registry.get(family, name)
    return cls(cls.Params(**params))


@pytest.fixture(scope="module")
def fx():
    """Image+report classifier on synthetic 'abnormal' data; half of the training reports are emptied so the
    model uses both the report and the image (clean accuracy well above chance, and both pathways matter)."""
    from medrobust.data.base import to_unit
    from medrobust.data.synthetic import SyntheticParams, load_synthetic
    from medrobust.data.tokenizer import ReportTokenizer
    from medrobust.engine.train import FitConfig, fit
    from medrobust.methods.supervised import SupervisedMultimodal, SupervisedParams
    from medrobust.models.encoders import SmallCNN
    from medrobust.models.heads import Classifier
    from medrobust.models.layers import image_stats
    from medrobust.models.text import TextParams, TextTransformer

    ds = load_synthetic(SyntheticParams(n_per_site=120))
    tok = ReportTokenizer.train(ds.train.texts, vocab_size=1000, max_len=64)
    torch.manual_seed(0)
    model = Classifier(SmallCNN(1, 2, 28, *image_stats(ds.train.images)), 2,
                       TextTransformer(tok.vocab_size, TextParams(max_len=64)))
    tokens = torch.as_tensor(tok.encode(ds.train.texts))
    emptied = torch.rand(len(tokens), generator=torch.Generator().manual_seed(0)) < 0.5
    tokens[emptied] = torch.as_tensor(tok.encode([""]))
    tensors = {"image": torch.as_tensor(ds.train.images), "label": torch.as_tensor(ds.train.labels), "tokens": tokens}
    fit(SupervisedMultimodal(model, ds.task, SupervisedMultimodal.Params(augment=False, text_dropout=0)), tensors,
        FitConfig(steps=200, batch_size=64, lr=3e-3), seed=0)
    texts = ds.test.texts
    return model.eval(), to_unit(ds.test.images), torch.as_tensor(tok.encode(texts)), texts, \
        torch.as_tensor(ds.test.labels), ds.task, tok


@pytest.fixture(scope="module")
def run(fx):
    """Memoised attack runs on the whole test split: (name, budget, params) -> AdversarialPair."""
    model, x, tokens, texts, y, task, tok = fx
    cache = {}

    def go(name, budget, **params):
        key = (name, budget, tuple(sorted(params.items())))
        if key not in cache:
            cache[key] = attack(name, **params)(model, x, tokens, y, budget=budget, task=task, texts=texts,
                                                tokenizer=tok, generator=torch.Generator().manual_seed(0))
        return cache[key]

    return go


def accuracy(fx, pair: AdversarialPair) -> float:
    model, y, task = fx[0], fx[4], fx[5]
    with torch.no_grad():
        return per_example_accuracy(model(pair.image, text_features=pair.text_features), y, task).mean().item()


@lru_cache(maxsize=1)
def group_of() -> dict[str, set[str]]:
    text = resources.files("medrobust.attacks").joinpath("medical_words.json").read_text(encoding="utf-8")
    return {t.lower(): {s.lower() for s in g["terms"]} for g in json.loads(text)["groups"] for t in g["terms"]}


def is_typo(a: str, b: str) -> bool:
    """One deletion, insertion or adjacent swap; first and last letter kept; words of >= 4 letters."""
    if len(a) < 4 or a[0] != b[0] or a[-1] != b[-1]:
        return False
    if len(a) == len(b):
        d = [i for i in range(len(a)) if a[i] != b[i]]
        return len(d) == 2 and d[1] == d[0] + 1 and a[d[0]] == b[d[1]] and a[d[1]] == b[d[0]]
    short, long = sorted((a, b), key=len)
    return len(long) == len(short) + 1 and any(long[:i] + long[i + 1:] == short for i in range(len(long)))


def check_edits(clean: list[str], adv: list[str], edits: torch.Tensor, k: int) -> int:
    """Same separators, <= k changed words (= edits), each a synonym from its group or a typo; returns total."""
    total = 0
    for c, a, n in zip(clean, adv, edits.tolist()):
        assert WORDS.split(c)[::2] == WORDS.split(a)[::2], (c, a)  # punctuation and spaces kept
        changed = [(u, v) for u, v in zip(WORDS.findall(c), WORDS.findall(a)) if u != v]
        assert len(changed) == n <= k, (c, a, n)
        for u, v in changed:
            assert v.lower() in group_of().get(u.lower(), ()) or is_typo(u, v), (u, v, c)
        total += n
    return total


def test_fixture_uses_report_and_image(fx):
    model, x, tokens, _, y, task, _ = fx
    with torch.no_grad():
        clean = per_example_accuracy(model(x, tokens), y, task).mean().item()
    majority = max(y.float().mean().item(), 1 - y.float().mean().item())
    assert clean > majority + 0.2, (clean, majority)


def test_embedding_pgd_budget_per_token(fx, monkeypatch):
    """Every embedding the attack feeds the encoder is within the per-token radius; [PAD]/[CLS] never move."""
    model, x, tokens, _, y, task, _ = fx
    enc, seen = model.text_encoder, []
    clean_emb = enc.embed(tokens[:32]).detach()
    original = enc.forward_embeddings
    monkeypatch.setattr(enc, "forward_embeddings", lambda emb, tok: (seen.append(emb.detach() - clean_emb),
                                                                    original(emb, tok))[1])
    budget = 0.3
    pair = attack("report-embedding-pgd", steps=5, step_size=2.0)(model, x[:32], tokens[:32], y[:32], budget=budget,
                                                                   task=task)
    radius = budget * embedding_scale(enc)
    fixed = (tokens[:32] == PAD) | (tokens[:32] == CLS)
    assert len(seen) >= 6
    for d in seen:
        assert d.norm(dim=-1).max().item() <= radius + 1e-5
        assert d[fixed].abs().max().item() == 0.0
    assert seen[-1].norm(dim=-1).max().item() > 0.5 * radius  # the large step reaches the boundary
    assert pair.tokens is None and pair.texts is None and pair.edits is None
    assert torch.equal(pair.image, x[:32])


@pytest.mark.parametrize("rank", ["gradient", "loss"])
def test_word_substitution_budget_and_vocabulary(fx, run, rank):
    model, x, _, texts, _, _, tok = fx
    for k in (1, 3):
        pair = run("report-word-substitution", k, rank=rank)
        assert check_edits(texts, pair.texts, pair.edits, k) > 0
        assert torch.equal(pair.tokens, torch.as_tensor(tok.encode(pair.texts)))
        with torch.no_grad():
            assert torch.allclose(pair.text_features, model.text_features(pair.tokens))
        assert torch.equal(pair.image, x)


def test_joint_budget(fx, run):
    _, x, _, texts, _, _, tok = fx
    pair = run("joint-image-report", (EPS, 2))
    assert (pair.image - x).abs().max().item() <= EPS + 1e-6
    assert pair.image.min().item() >= 0.0 and pair.image.max().item() <= 1.0
    assert (pair.image != x).any()
    assert check_edits(texts, pair.texts, pair.edits, 2) > 0
    assert torch.equal(pair.tokens, torch.as_tensor(tok.encode(pair.texts)))


@pytest.mark.parametrize("name,budget", [("report-embedding-pgd", 0.0), ("report-word-substitution", 0),
                                         ("joint-image-report", (0.0, 0))])
def test_zero_budget_is_identity(fx, name, budget):
    model, x, tokens, texts, y, task, tok = fx
    pair = attack(name)(model, x[:32], tokens[:32], y[:32], budget=budget, task=task, texts=texts[:32], tokenizer=tok,
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(pair.text_features, model.text_features(tokens[:32]))
    assert torch.equal(pair.image, x[:32])
    if pair.tokens is not None:
        assert torch.equal(pair.tokens, tokens[:32]) and pair.texts == texts[:32] and int(pair.edits.sum()) == 0


def test_embedding_pgd_monotone_and_strong(fx, run):
    accs = [accuracy(fx, run("report-embedding-pgd", b)) for b in (0.0, 0.05, 0.5)]
    assert accs == sorted(accs, reverse=True), accs
    assert accs[0] - accs[-1] > 0.4 and accs[-1] < 0.2, accs


@pytest.mark.parametrize("rank", ["gradient", "loss"])
def test_word_substitution_monotone_and_strong(fx, run, rank):
    accs = [accuracy(fx, run("report-word-substitution", k, rank=rank)) for k in (0, 1, 2, 3)]
    assert accs == sorted(accs, reverse=True), accs
    assert accs[0] - accs[-1] > 0.25, f"{rank} ranking: accuracy over k = 0..3 is {accs}"


def test_ranking_beats_reading_order(fx, run):
    """The importance ranking matters: one edit at the top-ranked words hurts more than at the first words."""
    model, x, tokens, texts, y, task, tok = fx
    ranked = accuracy(fx, run("report-word-substitution", 1, rank="loss"))
    atk = attack("report-word-substitution", rank="loss")
    atk._rank = lambda score, toks, parts, positions, loss, tokenizer: positions  # reading order
    plain = atk(model, x, tokens, y, budget=1, task=task, texts=texts, tokenizer=tok)
    assert ranked < accuracy(fx, plain) - 0.05, (ranked, accuracy(fx, plain))


def test_typos_are_readable_one_edit_variants():
    assert len(typos("nodule")) >= 8 and all(is_typo("nodule", t) for t in typos("nodule"))
    assert "nodule" not in typos("nodule") and "ndoule" in typos("nodule") and "noule" in typos("nodule")
    assert typos("nod") == [] and typos("2011") == [] and typos("CMG") == []


def test_joint_at_least_as_strong_as_each_part(fx, run):
    from medrobust.models.heads import FixedReport

    model, x, tokens, _, y, task, _ = fx
    x_adv = attack("pgd", "attack")(FixedReport(model, tokens=tokens), x, y, eps=EPS, task=task,
                          generator=torch.Generator().manual_seed(0))
    image_only = accuracy(fx, AdversarialPair(x_adv, model.text_features(tokens).detach(), None, None, None))
    report_only = accuracy(fx, run("report-word-substitution", 3))
    joint = accuracy(fx, run("joint-image-report", (EPS, 3)))
    assert joint <= min(image_only, report_only) + 1 / len(y) + 1e-9, (joint, image_only, report_only)
    assert joint < min(image_only, report_only) - 0.05, "both modalities matter on the fixture: joint must gain"


def test_word_list_from_package():
    from medrobust.attacks.text import word_groups
    from medrobust.data.synthetic import lexicon

    text = resources.files("medrobust.attacks").joinpath("medical_words.json").read_text(encoding="utf-8")
    groups = [g["terms"] for g in json.loads(text)["groups"]]
    assert [tuple(g) for g in groups] == list(word_groups())
    assert all(len(g) >= 2 for g in groups)
    terms = [t.lower() for g in groups for t in g]
    assert len(terms) == len(set(terms)), "a term may belong to one group only"
    expected = {t.lower() for f in ("nodule", "effusion", "consolidation") for t in lexicon.SYNONYMS[f]}
    expected |= {t.lower() for v in lexicon.PROSE_SYN.values() for t in v}
    expected |= {t.lower() for d in (lexicon.SIDE_ABBREV, lexicon.EFF_SIZE_ABBREV) for v in d.values() for t in v}
    assert expected <= set(terms), expected - set(terms)
    assert {"no", "without", "possible", "questionable", "cmg", "cardiomegaly"} <= set(terms)


@pytest.mark.parametrize("name,budget", [("report-word-substitution", 1), ("joint-image-report", (EPS, 1))])
def test_missing_texts_or_tokenizer(fx, name, budget):
    model, x, tokens, texts, y, task, tok = fx
    with pytest.raises(ValueError, match="texts"):
        attack(name)(model, x[:4], tokens[:4], y[:4], budget=budget, task=task, tokenizer=tok)
    with pytest.raises(ValueError, match="tokenizer"):
        attack(name)(model, x[:4], tokens[:4], y[:4], budget=budget, task=task, texts=texts[:4])


def test_bad_budgets_and_mismatched_tokens(fx):
    model, x, tokens, texts, y, task, tok = fx
    kw = {"task": task, "texts": texts[:4], "tokenizer": tok}
    with pytest.raises(AttackInputError, match="budget"):
        attack("report-word-substitution")(model, x[:4], tokens[:4], y[:4], budget=1.5, **kw)
    with pytest.raises(AttackInputError, match="budget"):
        attack("report-embedding-pgd")(model, x[:4], tokens[:4], y[:4], budget=-0.1, **kw)
    with pytest.raises(AttackInputError, match="budget"):
        attack("joint-image-report")(model, x[:4], tokens[:4], y[:4], budget=EPS, **kw)
    with pytest.raises(ValueError, match="tokenizer.encode"):
        attack("report-word-substitution")(model, x[:4], tokens[4:8], y[:4], budget=1, **kw)


@pytest.mark.parametrize("name,budget", [("report-embedding-pgd", 0.1), ("report-word-substitution", 1),
                                         ("joint-image-report", (EPS, 1))])
def test_mode_restored_and_param_grads_untouched(fx, name, budget):
    model, x, tokens, texts, y, task, tok = fx
    assert registry.get("report-attack", name).target == ("joint" if name.startswith("joint") else "report")
    model.zero_grad(set_to_none=True)
    model.train()
    try:
        attack(name)(model, x[:8], tokens[:8], y[:8], budget=budget, task=task, texts=texts[:8], tokenizer=tok)
        assert model.training, "attack must restore train mode"
        assert all(p.grad is None for p in model.parameters()), "attacks must not touch parameter gradients"
    finally:
        model.eval()
