"""The method contract (medrobust.methods.contract), checked on every registered method at once.

Each method declares ``info = MethodInfo(...)`` and a strict ``Params``; a self-supervised method is built as
``cls(Encoders(...), params, seed)`` and a supervised objective as ``cls(model, task, params, seed)``; ``forward(batch)``
returns a finite scalar ``"loss"`` that trains the image encoder, and the same seeds give the same loss.
"""

import inspect

import pytest
import torch
from pydantic import BaseModel, ValidationError

from medrobust import registry
from medrobust.data.base import Task
from medrobust.data.tokenizer import CLS, PAD
from medrobust.engine.distributed import rank
from medrobust.methods.contract import Encoders, MethodInfo, SourceFacts, info_of, method_generator
from medrobust.models.encoders import SmallCNN
from medrobust.models.fusion import Fusion
from medrobust.models.heads import Classifier
from medrobust.models.text import TextTransformer

NAMES = registry.names("method")
VOCAB = 40
TASK = Task("binary", ("negative", "positive"))


def tiny_batch(n: int = 6) -> dict[str, torch.Tensor]:
    """``n`` 28x28 images in [0, 1], reports of 10 tokens ([CLS] first, some [PAD] at the end), labels, sites."""
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(4, VOCAB, (n, 10), generator=g)
    tokens[:, 0] = CLS
    tokens[: n // 2, 7:] = PAD
    return {"image": torch.rand(n, 1, 28, 28, generator=g), "tokens": tokens,
            "label": torch.randint(0, 2, (n,), generator=g), "site": torch.randint(0, 2, (n,), generator=g),
            "source": torch.zeros(n, dtype=torch.long)}  # a batch of source 0 of a one-source labeled pool


def build(name: str, seed: int = 0, global_seed: int = 0):
    """The method with default params on tiny encoders (the torch seed fixed before any module is created)."""
    cls = registry.get("method", name)
    info = info_of(cls)
    torch.manual_seed(global_seed)
    image = SmallCNN(1, 2, 28, [0.5], [0.25])
    text = TextTransformer(VOCAB) if info.uses_text else None
    if not info.pretrains:
        return cls(Classifier(image, TASK.n_outputs, text), TASK, cls.Params(), seed=seed), image
    fusion = Fusion(image.feature_dim, text.feature_dim) if info.uses_fusion else None
    sources = (SourceFacts("labeled", (1, 28, 28), (0.5,), (0.25,), TASK),) if info.role == "supervised-pretraining" else ()
    return cls(Encoders(image, text, fusion, sources=sources), cls.Params(), seed=seed), image


def loss_of(method, batch) -> torch.Tensor:
    torch.manual_seed(123)  # any draw from the global generator (dropout) is the same in every build
    return method(batch)["loss"]


@pytest.mark.parametrize("name", NAMES)
def test_declares_info_and_strict_params(name):
    cls = registry.get("method", name)
    assert isinstance(cls.info, MethodInfo) and info_of(cls) is cls.info
    for old in ("kind", "modalities", "counterpart", "uses_fusion"):
        assert not hasattr(cls, old), f"{name}: bare `{old}` attribute; it belongs in `info`"
    assert issubclass(cls.Params, BaseModel) and cls.Params.model_config.get("extra") == "forbid"
    cls.Params.model_validate({})
    with pytest.raises(ValidationError, match="no_such_key"):
        cls.Params.model_validate({"no_such_key": 1})


@pytest.mark.parametrize("name", NAMES)
def test_one_constructor_signature_per_role(name):
    cls = registry.get("method", name)
    params = list(inspect.signature(cls.__init__).parameters)[1:]
    assert params == (["encoders", "params", "seed"] if cls.info.pretrains else ["model", "task", "params", "seed"])


@pytest.mark.parametrize("name", [n for n in NAMES if info_of(registry.get("method", n)).pretrains])
def test_counterpart_is_a_supervised_method_with_the_same_inputs(name):
    info = info_of(registry.get("method", name))
    counterpart = info_of(registry.get("method", info.counterpart))
    assert counterpart.role == "supervised"
    assert counterpart.modalities == info.modalities, "an arm and its baseline must see the same inputs"


def test_display_names_are_distinct():
    shown = [info_of(registry.get("method", n)).display_name for n in NAMES]
    assert len(set(shown)) == len(shown), shown


@pytest.mark.parametrize("name", NAMES)
def test_loss_is_a_finite_scalar_that_trains_the_image_encoder_and_is_seeded(name):
    batch = tiny_batch()
    method, image = build(name)
    out = method(batch)
    assert isinstance(out, dict) and out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert all(not v.requires_grad for k, v in out.items() if k != "loss"), "logged extras must be detached"
    out["loss"].backward()
    grads = [p.grad for p in image.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), f"{name}: some image-encoder parameters get no gradient"
    assert sum(float(g.abs().sum()) for g in grads) > 0

    reference = loss_of(build(name)[0], batch)
    assert torch.equal(loss_of(build(name)[0], batch), reference), "same seeds, different loss"
    if hasattr(method, "generator"):  # random at all
        assert not torch.equal(loss_of(build(name, seed=1)[0], batch), reference), "the seed changes nothing"


def test_info_of_names_a_class_without_info():
    class NoContract(torch.nn.Module):
        pass

    with pytest.raises(TypeError, match="NoContract"):
        info_of(NoContract)
    with pytest.raises(TypeError, match="NoContract"):
        info_of(NoContract())


@pytest.mark.parametrize("kwargs, match", [
    ({"role": "unsupervised"}, "role"),
    ({"role": "self-supervised"}, "counterpart"),
    ({"role": "supervised", "counterpart": "supervised"}, "no counterpart"),
    ({"role": "supervised", "modalities": ("text",)}, "modalities"),
    ({"role": "self-supervised", "counterpart": "supervised", "uses_fusion": True}, "uses_fusion"),
    ({"role": "supervised-pretraining"}, "counterpart"),
])
def test_method_info_rejects_inconsistent_declarations(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MethodInfo("X", **kwargs)


def test_method_info_properties_encoders_and_generator():
    info = MethodInfo("X", "self-supervised", ("image", "text"), counterpart="supervised-multimodal")
    assert info.self_supervised and info.uses_text and not info.uses_fusion
    assert not MethodInfo("Y", "supervised").self_supervised and not MethodInfo("Y", "supervised").uses_text
    assert info.pretrains and not MethodInfo("Y", "supervised").pretrains
    pool_labels = MethodInfo("Z", "supervised-pretraining", counterpart="supervised")
    assert pool_labels.pretrains and not pool_labels.self_supervised
    image, fusion = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    assert Encoders(image).modules() == {"image": image}
    assert Encoders(image, fusion=fusion).modules() == {"image": image, "fusion": fusion}
    draw = torch.rand(3, generator=method_generator(4))
    assert torch.equal(draw, torch.rand(3, generator=torch.Generator().manual_seed(4 * 7919 + rank())))


@pytest.mark.parametrize("name", NAMES)
def test_loss_under_bf16_autocast_is_finite_and_close(name):
    """``precision: bf16`` autocasts every method's forward (augmentations stay fp32): a finite loss that trains
    the image encoder, within bf16 rounding of the fp32 loss."""
    method, image = build(name)
    full = loss_of(method, tiny_batch()).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_of(method, tiny_batch())
    loss.float().backward()
    assert torch.isfinite(loss) and abs(loss.item() - full) <= 0.05 * abs(full) + 0.05, (loss.item(), full)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in image.parameters())
