"""ConVIRT: the asymmetric bidirectional InfoNCE against an explicit loop, the method's surface and errors."""

import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from medrobust import registry
from medrobust.methods.contract import Encoders
from medrobust.methods.convirt import ConVIRT, ConVIRTParams, convirt_loss
from medrobust.methods.losses import clip_loss
from medrobust.models.encoders import SmallCNN
from medrobust.models.text import TextTransformer


def explicit_convirt(img, txt, tau, lam):
    """Zhang et al. 2022, eqs. 2-4, one pair at a time."""
    n = len(img)
    v = [img[i] / img[i].norm() for i in range(n)]
    u = [txt[i] / txt[i].norm() for i in range(n)]
    total = 0.0
    for i in range(n):
        l_vu = -math.log(math.exp(float(v[i] @ u[i]) / tau) / sum(math.exp(float(v[i] @ u[k]) / tau) for k in range(n)))
        l_uv = -math.log(math.exp(float(u[i] @ v[i]) / tau) / sum(math.exp(float(u[i] @ v[k]) / tau) for k in range(n)))
        total += lam * l_vu + (1 - lam) * l_uv
    return total / n


@pytest.mark.parametrize("tau, lam", [(0.1, 0.75), (0.5, 0.0), (0.2, 1.0)])
def test_convirt_loss_equals_explicit_loop(tau, lam):
    torch.manual_seed(0)
    img, txt = torch.randn(6, 5), torch.randn(6, 5)
    assert abs(convirt_loss(img, txt, tau, lam).item() - explicit_convirt(img, txt, tau, lam)) < 1e-4


def test_convirt_loss_weighting_is_asymmetric_and_half_is_clip():
    torch.manual_seed(1)
    img, txt = torch.randn(8, 4), torch.randn(8, 4)
    # λ = 1/2 is CLIP's symmetric loss with logit scale 1/τ
    assert torch.allclose(convirt_loss(img, txt, 0.1, 0.5), clip_loss(img, txt, torch.tensor(math.log(10.0))),
                          atol=1e-5)
    # swapping the modalities swaps the direction weights: λ ↔ 1 − λ
    assert torch.allclose(convirt_loss(img, txt, 0.1, 0.75), convirt_loss(txt, img, 0.1, 0.25), atol=1e-5)
    assert not torch.allclose(convirt_loss(img, txt, 0.1, 0.75), convirt_loss(txt, img, 0.1, 0.75), atol=1e-3)
    # matched pairs give a lower loss than random pairs
    assert convirt_loss(img, img + 0.01 * torch.randn_like(img), 0.1, 0.75) < convirt_loss(img, txt, 0.1, 0.75)
    with pytest.raises(ValueError, match="lam must be in"):
        convirt_loss(img, txt, 0.1, 1.5)
    with pytest.raises(ValueError, match="temperature must be"):
        convirt_loss(img, txt, 0.0, 0.5)


def build(**params):
    torch.manual_seed(0)
    image, text = SmallCNN(1, 2, 28, [0.5], [0.25]), TextTransformer(60)
    return ConVIRT(Encoders(image, text), ConVIRTParams(**params), seed=0)


def test_convirt_method_surface_defaults_and_loss():
    assert registry.get("method", "convirt") is ConVIRT
    info = ConVIRT.info
    assert (info.display_name, info.role, info.modalities, info.counterpart, info.uses_fusion) == (
        "ConVIRT", "self-supervised", ("image", "text"), "supervised-multimodal", False)
    p = ConVIRTParams()
    assert (p.temperature, p.lam) == (0.1, 0.75)
    method = build()
    for proj, enc in ((method.image_proj, method.image_encoder), (method.text_proj, method.text_encoder)):
        assert [type(m) for m in proj] == [nn.Linear, nn.ReLU, nn.Linear]  # non-linear projection
        assert proj[0].in_features == enc.feature_dim and proj[-1].out_features == p.embed_dim
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, 60, (8, 12), generator=g)
    batch = {"image": torch.rand(8, 1, 28, 28, generator=g), "tokens": tokens}
    out = method(batch)
    assert set(out) == {"loss"} and out["loss"].ndim == 0
    # at initialisation the loss is near log N (chance) and backpropagates into both encoders
    assert abs(out["loss"].item() - math.log(8)) < 1.0
    out["loss"].backward()
    assert method.image_encoder.body[1].weight.grad.abs().sum() > 0
    assert method.text_encoder.token.weight.grad.abs().sum() > 0


def test_convirt_errors():
    with pytest.raises(ValueError, match="needs a text encoder"):
        ConVIRT(Encoders(SmallCNN(1, 2, 28, [0.5], [0.25])))
    with pytest.raises(ValidationError, match="lam"):
        ConVIRTParams(lam=1.5)
    with pytest.raises(ValidationError, match="temperature"):
        ConVIRTParams(temperature=0)
    with pytest.raises(ValidationError, match="extra"):
        ConVIRTParams(tau=0.1)
