"""Every registered self-supervised method pre-trains a medformer on a pool of sources of different shapes.

The pool: 1-channel 28² X-rays, 3-channel 28² fundus photos, 1-channel 64² ultrasound, 1-channel 28³ CT volumes;
each batch comes from one source (``batch["source"]``); heads that depend on the input's shape exist once per
signature (channels × 2D/3D) and are picked by the batch's shape.
"""

import pytest
import torch

from medrobust import registry
from medrobust.data.tokenizer import CLS, PAD
from medrobust.data.views import ViewParams, random_view
from medrobust.methods.adapters import SignatureHeads
from medrobust.methods.contract import Encoders, SourceFacts, display_name_of, info_of
from medrobust.models.encoders import SmallCNN
from medrobust.models.fusion import Fusion
from medrobust.models.medformer import Medformer, MedformerParams
from medrobust.models.text import TextTransformer

SOURCES = (SourceFacts("xray", (1, 28, 28), (0.5,), (0.25,)),
           SourceFacts("fundus", (3, 28, 28), (0.45, 0.3, 0.2), (0.2, 0.15, 0.1)),
           SourceFacts("ultrasound", (1, 64, 64), (0.3,), (0.2,)),
           SourceFacts("ct", (1, 28, 28, 28), (0.4,), (0.3,)))
SIGNATURES = {"1ch-2d", "3ch-2d", "1ch-3d"}
VOCAB = 40
#: every registered self-supervised method with its defaults, and MAE's SimMIM-style variant on the medformer
CASES = {name: (name, {}) for name in registry.names("method") if info_of(registry.get("method", name)).self_supervised}
CASES["mae-simmim"] = ("mae", {"variant": "simmim"})
RECONSTRUCTION = ["restoration", "mae", "mae-simmim", "mmr", "robust-mmr"]


def medformer(sources=SOURCES, seed: int = 0) -> Medformer:
    torch.manual_seed(seed)
    first = sources[0]
    enc = Medformer(first.image_shape[0], len(first.image_shape) - 1, first.image_shape[-1], first.mean, first.std,
                    MedformerParams(dim=32, depth=1, heads=2))
    for s in sources:
        enc.add_input(s.image_shape[0], len(s.image_shape) - 1, s.mean, s.std)
    return enc


def build(case: str, sources=SOURCES):
    name, params = CASES[case]
    cls, image = registry.get("method", name), medformer(sources)
    info = info_of(cls)
    text = TextTransformer(VOCAB) if info.uses_text else None
    fusion = Fusion(image.feature_dim, text.feature_dim) if info.uses_fusion else None
    return cls(Encoders(image, text, fusion, sources=tuple(sources)), cls.Params(**params), seed=0), image


def source_batch(index: int, n: int = 8) -> dict[str, torch.Tensor]:
    """``n`` smooth random images of source ``index`` with reports, sites and ``source``."""
    g = torch.Generator().manual_seed(index)
    shape = SOURCES[index].image_shape
    coarse = torch.rand(n, shape[0], *[4] * (len(shape) - 1), generator=g)
    mode = "bilinear" if len(shape) == 3 else "trilinear"
    image = torch.nn.functional.interpolate(coarse, size=shape[1:], mode=mode, align_corners=False)
    tokens = torch.randint(4, VOCAB, (n, 10), generator=g)
    tokens[:, 0] = CLS
    tokens[: n // 2, 7:] = PAD
    return {"image": image, "tokens": tokens, "site": torch.randint(0, 2, (n,), generator=g),
            "source": torch.full((n,), index, dtype=torch.long)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_trains_on_a_batch_of_every_source(case):
    method, image = build(case)
    for index, source in enumerate(SOURCES):
        out = method(source_batch(index))
        assert out["loss"].ndim == 0 and torch.isfinite(out["loss"]), f"{case} on {source.name}"
        out["loss"].backward()
        for sig, adapter in image.adapters.items():
            grads = [p.grad for p in adapter.parameters()]
            if sig == source.signature:
                assert all(g is not None and g.abs().sum() > 0 for g in grads), f"{case}: {source.name}'s adapter"
            else:
                assert all(g is None or g.abs().sum() == 0 for g in grads), f"{case}: {sig} is not in this batch"
        method.zero_grad(set_to_none=True)
        if hasattr(method, "after_step"):
            method.after_step()


@pytest.mark.parametrize("case", RECONSTRUCTION)
def test_reconstruction_losses_fall_on_each_source_in_turn(case):
    """Source after source, 4 AdamW steps on its fixed batch (same views and masks) lower its loss by > 2%."""
    method, _ = build(case)
    key = "mim" if case == "robust-mmr" else "loss"  # its adversarial site term is not meant to fall
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=3e-3)

    def loss_on(batch, grad=False):
        method.generator.manual_seed(123)
        with torch.set_grad_enabled(grad):
            return method(batch)[key if not grad else "loss"]

    for index, source in enumerate(SOURCES):
        batch = source_batch(index, 4)
        before = float(loss_on(batch))
        for _ in range(4):
            opt.zero_grad()
            loss_on(batch, grad=True).backward()
            opt.step()
        after = float(loss_on(batch))
        assert after < 0.98 * before, f"{case} on {source.name}: {before:.4f} -> {after:.4f}"


def test_input_shaped_heads_exist_per_signature_and_name_a_missing_one():
    for case, attr in (("restoration", "decoder"), ("mae", "decoder_pred"), ("mae-simmim", "heads"),
                       ("jigsaw", "heads"), ("mmr", "decoder")):
        method, _ = build(case)
        heads = getattr(method, attr)
        assert isinstance(heads, SignatureHeads) and set(heads) == SIGNATURES, case
    assert build("jigsaw")[0].heads["1ch-3d"].permutations.shape[1] == 8  # 2³ tiles of a volume
    assert build("mae")[0].decoder_pred["1ch-3d"].out_features == 7 ** 3  # its own patch size
    two_d = build("restoration", SOURCES[:3])[0]
    with pytest.raises(ValueError, match=r"no head for 1ch-3d.*1ch-2d, 3ch-2d"):
        two_d(source_batch(3))


def test_without_sources_one_head_for_the_encoders_own_geometry():
    cls = registry.get("method", "restoration")
    method = cls(Encoders(SmallCNN(3, 3, 16, [0.5] * 3, [0.2] * 3)), cls.Params())
    assert list(method.decoder) == ["3ch-3d"]
    multi_cls = registry.get("method", "multi")
    multi = multi_cls(Encoders(medformer(), sources=SOURCES), multi_cls.Params())
    assert set(multi.tasks["restoration"].decoder) == SIGNATURES, "multi passes the sources on to its tasks"


def test_mae_on_the_medformer_uses_sincos_decoder_positions_and_encodes_visible_tokens_only():
    method, image = build("mae")
    assert method.use_mae and method.decoder_pos is None
    assert display_name_of(registry.get("method", "mae"), "medformer") == "MAE"
    seen = []
    image.blocks.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[1]))
    method(source_batch(2))  # 64²: 256 tokens at patch 4, 60% visible
    method(source_batch(3))  # 28³: 64 tokens at patch 7
    assert seen == [1 + round(256 * 0.6), 1 + round(64 * 0.6)]


@pytest.mark.parametrize("shape", [(6, 3, 28, 28), (6, 1, 16, 16, 16)])
def test_random_views_of_colour_images_and_volumes(shape):
    x = torch.rand(shape)
    view = random_view(x, ViewParams(), torch.Generator().manual_seed(0))
    assert view.shape == x.shape and view.min() >= 0 and view.max() <= 1 and not torch.equal(view, x)
    assert torch.isfinite(view).all()
