"""Generative purification in the spirit of DGMP: a denoiser trained on clean images, applied before the
classifier, attacked as one pipeline.

The purifier is a small convolutional denoising autoencoder (Vincent et al. 2008, "Extracting and
Composing Robust Features with Denoising Autoencoders", ICML) with a U-Net-style skip and a residual output
(``clamp(x + r(x), 0, 1)``, residual learning as in DnCNN, Zhang et al. 2017), trained in :meth:`wrap` to
map ``x + σ·N(0, I)`` (plus optional uniform L∞ noise) back to ``x`` on the *unlabeled* training images
only: it never receives a label, neither while it is trained nor at test time, and the classifier's
fine-tuning leaves it frozen (the pitfall of label-conditioned purifiers, DESIGN §5, cannot happen).

At test time the model is ``classifier(purifier(x))`` and every attack targets that whole pipeline:
deterministic and differentiable by default (gradients go straight through the purifier);
``randomized = True`` adds Gaussian noise before denoising (EOT is then applied by the attacks);
``quantize = True`` rounds the purified image to ``levels`` grey levels, a non-differentiable step: the
model declares ``non_differentiable`` and ``bpda_forward`` uses the identity as the rounding's gradient
(BPDA, Athalye et al. 2018). Written by hand: no maintained library offers a CPU-sized image purifier.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.data.base import to_unit
from medrobust.defenses.base import DefendedClassifier, Defense, NoiseSource, check_images, gaussian_like
from medrobust.models.layers import conv
from medrobust.registry import register


class PurifierParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(300, ge=1, description="Adam steps training the denoiser on clean training images")
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)
    width: int = Field(8, ge=1, description="channels of the first denoiser block (doubled once)")
    sigma: float = Field(0.1, ge=0, description="std of the Gaussian training noise ([0, 1] pixel units)")
    linf: float = Field(0.0, ge=0, description="extra uniform noise in [-linf, linf] (1/255 units) in training")
    randomized: bool = Field(False, description="add N(0, test_sigma²) noise before denoising at test time (EOT)")
    test_sigma: float | None = Field(None, gt=0, description="noise std when randomized; None = sigma")
    quantize: bool = Field(False, description="round the purified image to `levels` grey levels (BPDA)")
    levels: int = Field(32, ge=2)
    eot_samples: int = Field(8, ge=1, description="passes the evaluation averages when randomized")


class DenoisingAutoencoder(nn.Module):
    """``[N, C, *spatial]`` in [0, 1] -> same: conv encoder, one stride-2 level, skip, residual output."""

    def __init__(self, in_channels: int, spatial_dims: int, width: int = 8):
        super().__init__()
        Conv = conv(spatial_dims)
        self.enc1 = nn.Sequential(Conv(in_channels, width, 3, 1, 1), nn.ReLU())
        self.enc2 = nn.Sequential(Conv(width, 2 * width, 3, 2, 1), nn.ReLU(), Conv(2 * width, 2 * width, 3, 1, 1),
                                  nn.ReLU())
        self.dec = nn.Sequential(Conv(3 * width, width, 3, 1, 1), nn.ReLU(), Conv(width, in_channels, 1))
        nn.init.zeros_(self.dec[-1].weight)  # the identity at initialisation
        nn.init.zeros_(self.dec[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h1 = self.enc1(x - 0.5)  # [N, w, *spatial]
        h2 = self.enc2(h1)  # [N, 2w, *spatial/2]
        up = F.interpolate(h2, size=h1.shape[2:], mode="nearest")  # [N, 2w, *spatial]
        return (x + self.dec(torch.cat([up, h1], dim=1))).clamp(0.0, 1.0)


def corrupt(x: torch.Tensor, p: PurifierParams, noise: NoiseSource) -> torch.Tensor:
    """The denoiser's training input: ``clamp(x + σ·N(0, I) + U(-linf, linf), 0, 1)``."""
    out = x + gaussian_like(noise, x, p.sigma)
    if p.linf > 0:
        out = out + (2 * noise.rand(x.shape, x) - 1) * p.linf / 255.0
    return out.clamp(0.0, 1.0)


def train_denoiser(net: DenoisingAutoencoder, images: torch.Tensor, p: PurifierParams, seed: int,
                   device: torch.device) -> list[float]:
    """Fit ``net`` to map corrupted images back to the clean ones (MSE); only ``images`` are seen."""
    batch_gen, noise = torch.Generator().manual_seed(seed), NoiseSource(seed + 1)
    opt = torch.optim.Adam(net.parameters(), lr=p.lr)
    net.train()
    losses = []
    for _ in range(p.steps):
        idx = torch.randint(len(images), (min(p.batch_size, len(images)),), generator=batch_gen)
        x = to_unit(images[idx]).to(device)  # [B, C, *spatial] clean, float in [0, 1]
        loss = F.mse_loss(net(corrupt(x, p, noise)), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


class PurifiedClassifier(DefendedClassifier):
    """``classifier(purifier(x))``: the defended pipeline every attack targets as a whole."""

    def __init__(self, classifier: nn.Module, purifier: DenoisingAutoencoder, p: PurifierParams, seed: int,
                 train_seconds: float):
        super().__init__(classifier)
        self.purifier = purifier.requires_grad_(False)  # trained on clean images; fine-tuning never updates it
        self.randomized, self.non_differentiable = p.randomized, p.quantize
        self.eot_samples, self.levels = p.eot_samples, p.levels
        self.test_sigma = p.test_sigma if p.test_sigma is not None else p.sigma
        self.noise = NoiseSource(seed + 2)
        self.purifier_train_seconds = train_seconds

    def purify(self, x: torch.Tensor, straight_through: bool = False) -> torch.Tensor:
        """``[N, C, *spatial]`` in [0, 1] -> purified, same shape; ``straight_through``: rounding passes gradients."""
        if self.randomized:
            x = (x + gaussian_like(self.noise, x, self.test_sigma)).clamp(0.0, 1.0)
        x = self.purifier(x)
        if self.non_differentiable:
            q = torch.round(x * (self.levels - 1)) / (self.levels - 1)
            x = x + (q - x).detach() if straight_through else q
        return x

    def forward(self, image: torch.Tensor | None, tokens: torch.Tensor | None = None, *,
                text_features: torch.Tensor | None = None, **kw) -> torch.Tensor:
        image = None if image is None else self.purify(image)
        return self.classifier(image, tokens, text_features=text_features, **kw)

    def bpda_forward(self, image: torch.Tensor | None, tokens: torch.Tensor | None = None, *,
                     text_features: torch.Tensor | None = None, **kw) -> torch.Tensor:
        """Same values as :meth:`forward`; the rounding's backward pass is the identity (BPDA)."""
        image = None if image is None else self.purify(image, straight_through=True)
        return self.classifier(image, tokens, text_features=text_features, **kw)


@register("defense", "purifier")
class Purifier(Defense):
    """Denoising-autoencoder purification before the classifier (DGMP-style), attacked end to end."""

    Params = PurifierParams
    kind = "model"

    def __init__(self, params: PurifierParams | None = None, seed: int = 0):
        super().__init__(params, seed)
        self.randomized = self.params.randomized
        self.train_seconds: float | None = None
        self.train_losses: list[float] = []

    def wrap(self, classifier: nn.Module, images: torch.Tensor, device: torch.device | str) -> nn.Module:
        """Train the denoiser on ``images`` (unlabeled, ``[N, C, *spatial]``, uint8 or float in [0, 1]) and
        return the pipeline ``classifier(purifier(x))`` on ``device``."""
        images = check_images(images, "purifier")
        device = torch.device(device)
        with torch.random.fork_rng(devices=[]):  # seeded initial weights; the global RNG is left as it was
            torch.manual_seed(self.seed)
            net = DenoisingAutoencoder(images.shape[1], images.ndim - 2, self.params.width).to(device)
        start = time.perf_counter()
        self.train_losses = train_denoiser(net, images, self.params, self.seed, device)
        self.train_seconds = time.perf_counter() - start
        return PurifiedClassifier(classifier, net.eval(), self.params, self.seed, self.train_seconds).to(device)
