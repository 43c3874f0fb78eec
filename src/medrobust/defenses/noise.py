"""Noise-injection defenses: at the input, in attention maps of the image encoder, at the fusion layer.

All three are active in training *and* evaluation, so the defended model is random: it declares
``randomized = True`` and ``eot_samples``, and every gradient attack of :mod:`medrobust.attacks` averages
over that many passes (EOT, Athalye et al. 2018) — the evaluation pitfall of noise layers evaluated with
single-sample gradients (DESIGN §5) cannot happen. Noise comes from the defense's own seeded generator.

- ``input-noise``: ``clamp(x + σ·N(0, I), 0, 1)`` (Gaussian data augmentation / randomised smoothing at
  the input; Cohen et al. 2019, "Certified Adversarial Robustness via Randomized Smoothing", ICML).
- ``attention-noise``: in the spirit of UMAN (MI-Protector's uni-modal attention-noise module): after the
  image encoder's conv body, channel attention (squeeze-excitation, Hu et al. 2018) and spatial
  attention (a conv over channel-mean/max maps, CBAM, Woo et al. 2018) whose logits receive Gaussian
  noise with a learnable scale (a log-parameter, as the learnable noise of PNI, He et al. 2019). The
  attention is ``2·sigmoid(a + σ·ε)`` with zero-initialised last layers, so at σ = 0 the wrapped
  encoder computes exactly what it did before (pre-training is kept).
- ``fusion-noise``: in the spirit of MMIFAN (its multimodal fusion attention with noise): attention over
  the modalities ``[image, report]`` at the fusion layer; Gaussian noise with a learnable scale is added to
  the attention logits; the weights ``M·softmax`` (``M`` modalities) scale each modality's features (late
  fusion: the pooled vectors before the head; fusion encoder: the token streams entering it), so equal
  logits give back the undefended model. Needs an image+report classifier.

A learnable noise scale trained by the task loss alone tends to shrink (He et al. 2019 train it jointly
with adversarial training); its value is reported by ``noise_scales()``.
"""

from __future__ import annotations

import copy
import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.defenses.base import DefendedClassifier, Defense, DefenseInputError, NoiseSource, gaussian_like
from medrobust.models.layers import conv
from medrobust.registry import register


class InputNoiseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sigma: float = Field(0.05, gt=0, description="std of the Gaussian pixel noise ([0, 1] pixel units)")
    eot_samples: int = Field(8, ge=1, description="passes the evaluation averages (EOT)")


class AttentionNoiseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sigma: float = Field(0.5, gt=0, description="initial std of the noise on the attention logits (learnable)")
    reduction: int = Field(4, ge=1, description="channel-attention bottleneck: channels // reduction")
    kernel_size: int = Field(3, ge=1, description="odd kernel of the spatial-attention conv")
    learn_scale: bool = Field(True, description="train the noise scale (log-parameter) with the model")
    eot_samples: int = Field(8, ge=1)


class FusionNoiseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sigma: float = Field(1.0, gt=0, description="initial std of the noise on the modality-attention logits")
    learn_scale: bool = True
    eot_samples: int = Field(8, ge=1)


def _log_scale(sigma: float, learn: bool) -> nn.Parameter:
    return nn.Parameter(torch.tensor(math.log(sigma)), requires_grad=learn)


class InputNoiseClassifier(DefendedClassifier):
    """``classifier(clamp(x + σ·ε, 0, 1), ...)``; the report (if any) is untouched."""

    randomized = True

    def __init__(self, classifier: nn.Module, sigma: float, eot_samples: int, seed: int):
        super().__init__(classifier)
        self.sigma, self.eot_samples, self.noise = sigma, eot_samples, NoiseSource(seed)

    def forward(self, image: torch.Tensor | None, tokens: torch.Tensor | None = None, *,
                text_features: torch.Tensor | None = None, **kw) -> torch.Tensor:
        if image is not None:
            image = (image + gaussian_like(self.noise, image, self.sigma)).clamp(0.0, 1.0)  # [N, C, *spatial]
        return self.classifier(image, tokens, text_features=text_features, **kw)


class NoisyAttention(nn.Module):
    """Channel then spatial attention on a feature map ``[N, C, *spatial]`` with noisy logits (UMAN-style)."""

    def __init__(self, channels: int, spatial_dims: int, p: AttentionNoiseParams, noise: NoiseSource):
        super().__init__()
        if p.kernel_size % 2 == 0:
            raise DefenseInputError(f"attention-noise: kernel_size must be odd, got {p.kernel_size}")
        hidden = max(channels // p.reduction, 4)
        self.channel = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        self.spatial = conv(spatial_dims)(2, 1, p.kernel_size, padding=p.kernel_size // 2)
        for last in (self.channel[-1], self.spatial):  # zero logits: attention 2·sigmoid(0) = 1 (identity)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.log_sigma = _log_scale(p.sigma, p.learn_scale)
        self.noise = noise

    def forward(self, f: torch.Tensor) -> torch.Tensor:  # [N, C, *spatial] -> same
        sigma = self.log_sigma.exp()
        a_c = self.channel(f.flatten(2).mean(dim=2))  # [N, C]
        a_c = a_c + gaussian_like(self.noise, a_c, sigma)
        f = f * (2 * torch.sigmoid(a_c)).view(*a_c.shape, *([1] * (f.ndim - 2)))
        pooled = torch.cat([f.mean(dim=1, keepdim=True), f.amax(dim=1, keepdim=True)], dim=1)  # [N, 2, *sp]
        a_s = self.spatial(pooled)  # [N, 1, *spatial]
        a_s = a_s + gaussian_like(self.noise, a_s, sigma)
        return f * 2 * torch.sigmoid(a_s)


class NoisyAttentionEncoder(nn.Module):
    """A conv encoder (``body`` then spatial mean) with :class:`NoisyAttention` between body and pooling."""

    def __init__(self, encoder: nn.Module, attention: NoisyAttention):
        super().__init__()
        self.encoder, self.attention = encoder, attention
        self.feature_dim = encoder.feature_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, *spatial] -> [N, feature_dim]
        return self.attention(self.encoder.body(x)).flatten(2).mean(dim=2)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:  # -> [N, h*w(*d), feature_dim] (fusion encoders)
        return self.attention(self.encoder.body(x)).flatten(2).transpose(1, 2)

    forward = forward_features


def _conv_body_dims(encoder: nn.Module) -> int:
    """Spatial dims of a supported encoder (``SmallCNN``: ``body`` = conv blocks ending in ReLU, mean pool)."""
    from medrobust.models.encoders import SmallCNN

    if not isinstance(encoder, SmallCNN):
        raise DefenseInputError(
            f"attention-noise needs a convolutional image encoder whose features are the spatial mean of "
            f"`body(x)` (encoder 'cnn'), got {type(encoder).__name__}; use input-noise for other encoders")
    convs = [m for m in encoder.body.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    return 3 if isinstance(convs[0], nn.Conv3d) else 2


class AttentionNoiseClassifier(DefendedClassifier):
    """The classifier with its image encoder replaced by the noisy-attention encoder (head, report shared)."""

    randomized = True

    def __init__(self, classifier: nn.Module, p: AttentionNoiseParams, seed: int):
        encoder = classifier.image_encoder
        attention = NoisyAttention(encoder.feature_dim, _conv_body_dims(encoder), p, NoiseSource(seed))
        inner = copy.copy(classifier)  # same class, same submodules (shared weights) ...
        for key, value in classifier.__dict__.items():  # ... but its own module table and hook dicts
            if isinstance(value, (dict, set)):
                inner.__dict__[key] = copy.copy(value)
        inner.image_encoder = NoisyAttentionEncoder(encoder, attention)
        super().__init__(inner)
        self.eot_samples = p.eot_samples

    @property
    def attention(self) -> NoisyAttention:
        return self.classifier.image_encoder.attention

    def noise_scales(self) -> dict[str, float]:
        return {"attention_sigma": float(self.attention.log_sigma.detach().exp())}

    def forward(self, image: torch.Tensor | None, tokens: torch.Tensor | None = None, *,
                text_features: torch.Tensor | None = None, **kw) -> torch.Tensor:
        return self.classifier(image, tokens, text_features=text_features, **kw)


class FusionNoiseClassifier(DefendedClassifier):
    """Noisy attention over the modalities ``[image, report]`` at the fusion layer (MMIFAN-style).

    Late fusion (:class:`~medrobust.models.heads.Classifier`): the weights scale the pooled image and report
    feature vectors before the head. Fusion encoder (:class:`~medrobust.models.fusion.FusionClassifier`):
    the weights, computed from the mean image token and the mean real report token, scale the two token
    streams entering the fusion transformer. A missing modality has zero (late) or no (encoder) features.
    """

    randomized = True

    def __init__(self, classifier: nn.Module, p: FusionNoiseParams, seed: int):
        if not getattr(classifier, "uses_text", False):
            raise ValueError("fusion-noise needs an image+report arm (a classifier with a report encoder); "
                             "this classifier is image-only — use input-noise or attention-noise")
        super().__init__(classifier)
        self.token_fusion = hasattr(classifier, "fusion")  # FusionClassifier: fuses token sequences
        self.dims = (classifier.image_encoder.feature_dim, classifier.text_encoder.feature_dim)
        self.score = nn.ModuleList(nn.Linear(d, 1) for d in self.dims)  # per-modality attention logit
        for layer in self.score:  # equal logits at the start: the undefended model
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.log_sigma = _log_scale(p.sigma, p.learn_scale)
        self.noise, self.eot_samples = NoiseSource(seed), p.eot_samples

    def noise_scales(self) -> dict[str, float]:
        return {"fusion_sigma": float(self.log_sigma.detach().exp())}

    def modality_weights(self, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:  # [N, Di], [N, Dt] -> [N, 2]
        logits = torch.cat([self.score[0](img), self.score[1](txt)], dim=1)  # [N, 2]
        logits = logits + gaussian_like(self.noise, logits, self.log_sigma.exp())
        return 2 * torch.softmax(logits, dim=1)

    def forward(self, image: torch.Tensor | None, tokens: torch.Tensor | None = None, *,
                text_features: torch.Tensor | None = None, missing: str | None = None) -> torch.Tensor:
        """Logits ``[N, K]``; ``missing="image"`` / ``"report"`` drops that modality."""
        if missing not in (None, "image", "report"):
            raise ValueError(f"missing must be None, 'image' or 'report', got {missing!r}")
        txt = None
        if missing != "report":
            if text_features is None:
                if tokens is None:
                    raise ValueError("fusion-noise: this image+report classifier needs report tokens "
                                     "(or text_features, or missing='report')")
                text_features = self.classifier.text_features(tokens)
            txt = text_features  # [N, Dt] (late fusion) or [N, L, Dt + 1] (fusion encoder: states + real flag)
        if missing != "image" and image is None:
            raise ValueError("fusion-noise needs an image (or missing='image')")
        if self.token_fusion:
            return self._fused_tokens(None if missing == "image" else image, txt)
        if txt is not None and txt.ndim != 2:
            raise DefenseInputError(f"fusion-noise: late fusion needs pooled report features [N, D], got shape "
                                    f"{tuple(txt.shape)}")
        img = None if missing == "image" else self.classifier.image_encoder.forward_features(image)  # [N, Di]
        ref = img if img is not None else txt
        img = ref.new_zeros(len(ref), self.dims[0]) if img is None else img
        txt = ref.new_zeros(len(ref), self.dims[1]) if txt is None else txt
        w = self.modality_weights(img, txt)  # [N, 2]
        return self.classifier.head(torch.cat([img * w[:, :1], txt * w[:, 1:]], dim=1))

    def _fused_tokens(self, image: torch.Tensor | None, packed: torch.Tensor | None) -> torch.Tensor:
        """Fusion-encoder path: weighted token streams through the classifier's fusion transformer and head."""
        tokens = None if image is None else self.classifier.image_encoder.forward_tokens(image)  # [N, P, Di]
        states = pad = None
        if packed is not None:
            states, real = packed[..., :-1], packed[..., -1:]  # [N, L, Dt], [N, L, 1]
            pad = real.squeeze(-1) < 0.5
        ref = tokens if tokens is not None else states
        img = ref.new_zeros(len(ref), self.dims[0]) if tokens is None else tokens.mean(dim=1)  # [N, Di]
        txt = (ref.new_zeros(len(ref), self.dims[1]) if states is None else
               (states * real).sum(dim=1) / real.sum(dim=1).clamp_min(1.0))  # [N, Dt] mean real token
        w = self.modality_weights(img, txt)  # [N, 2]
        tokens = None if tokens is None else tokens * w[:, 0, None, None]
        states = None if states is None else states * w[:, 1, None, None]
        return self.classifier.head(self.classifier.fusion(tokens, states, pad)[0])


class _NoiseDefense(Defense):
    kind = "model"
    randomized = True

    def _build(self, classifier: nn.Module) -> DefendedClassifier:
        raise NotImplementedError

    def wrap(self, classifier: nn.Module, images: torch.Tensor, device: torch.device | str) -> nn.Module:
        """The noisy model on ``device``; ``images`` are not needed (the noise layers are not pre-trained).

        New layers are initialised from the defense's seed; the global RNG is left as it was.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return self._build(classifier).to(device)


@register("defense", "input-noise")
class InputNoise(_NoiseDefense):
    """Gaussian noise on the input pixels, clamped to [0, 1], in training and evaluation."""

    Params = InputNoiseParams

    def _build(self, classifier: nn.Module) -> DefendedClassifier:
        return InputNoiseClassifier(classifier, self.params.sigma, self.params.eot_samples, self.seed)


@register("defense", "attention-noise")
class AttentionNoise(_NoiseDefense):
    """UMAN-style noisy channel + spatial attention after the image encoder's conv body."""

    Params = AttentionNoiseParams

    def _build(self, classifier: nn.Module) -> DefendedClassifier:
        return AttentionNoiseClassifier(classifier, self.params, self.seed)


@register("defense", "fusion-noise")
class FusionNoise(_NoiseDefense):
    """MMIFAN-style noisy modality attention at the fusion layer of an image+report classifier."""

    Params = FusionNoiseParams

    def _build(self, classifier: nn.Module) -> DefendedClassifier:
        return FusionNoiseClassifier(classifier, self.params, self.seed)
