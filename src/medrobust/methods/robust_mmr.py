"""Robust-MMR: masked multimodal reconstruction with robustness objectives.

Filvantorkaman & Piri (2026), "Robust Pre-Training of Medical Vision-and-Language Models with
Domain-Invariant Multi-Modal Masked Reconstruction". ``mmr`` (see :mod:`medrobust.methods.mmr`) plus,
each switchable for ablations (all on by default; all off gives exactly ``mmr``'s loss):

(a) perturbation-aware asymmetric masking: different mask ratios per modality; a fraction ``saliency`` of
    each mask goes to the patches / tokens with the largest input gradient of the reconstruction loss
    (one extra forward-backward to the inputs, parameters untouched); the visible image in the
    reconstruction path is perturbed within an L∞ ball (one FGSM step from that same gradient, or a random
    sign), the targets stay clean;
(b) domain consistency: an acquisition-style view of the batch (gamma, contrast, brightness, blur, noise,
    bias field; same geometry) gives image-only fused features pulled toward those of the clean images
    (a stop-gradient anchor, so the clean pass costs only a forward) with InfoNCE — the contrastive form of
    "pulled together": other images are negatives, so the [CLS] output cannot collapse to a constant —
    and a site classifier behind a gradient-reversal layer (Ganin & Lempitsky 2015, DANN) makes the site
    hard to predict from the joint fused features;
(c) modality resilience: image-only and report-only fused features (the same masked inputs with the other
    modality dropped) matched to the detached joint features by InfoNCE.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from medrobust.corruptions.intensity import bias_field_log
from medrobust.data.tokenizer import PAD
from medrobust.data.views import ViewParams, covered_corruptions, random_view
from medrobust.engine.distributed import gather_with_grad
from medrobust.methods.contract import Encoders, MethodInfo
from medrobust.methods.masking import pad_to_multiple, patch_grid, patch_mask_to_pixels, patchify, saliency_mask
from medrobust.methods.mmr import MMR, MMRParams, maskable_tokens
from medrobust.registry import register

# Acquisition differences only: intensity response, blur, noise; no crop, rotation or flip.
SITE_STYLE = ViewParams(crop_scale=(1.0, 1.0), max_rotation=0.0, flip_p=0.0, gamma=1.5, contrast=0.4,
                        brightness=0.1, blur_p=0.5, blur_sigma=0.8, noise_p=0.5, noise_std=0.04)


class RobustMMRParams(MMRParams):
    text_mask_ratio: float = Field(0.25, gt=0, lt=1, description="fraction of real report tokens masked")
    saliency: float = Field(0.5, ge=0, le=1, description="fraction of each mask chosen by input-gradient saliency")
    perturb_eps: float = Field(2.0, ge=0, description="L∞ radius of the perturbation of the visible image, in 1/255")
    perturb: Literal["fgsm", "random"] = Field("fgsm", description="one FGSM step or a random sign")
    domain_weight: float = Field(0.1, ge=0, description="InfoNCE: site-style view -> clean image (image-only); "
                                 "0.5 made the image features no better than random at 150 steps (RESULTS.md)")
    site_weight: float = Field(0.1, ge=0, description="gradient-reversal site classifier on batch['site']")
    resilience_weight: float = Field(0.5, ge=0, description="image-only / report-only vs joint InfoNCE")
    n_sites: int = Field(4, ge=2, description="site ids in batch['site'] must be in [0, n_sites)")
    temperature: float = Field(0.2, gt=0, description="of the domain and resilience contrastive terms")
    style: ViewParams = SITE_STYLE
    bias_field: float = Field(0.3, ge=0, description="max |log gain| of the random smooth bias field of a style view")


class _GradientReversal(torch.autograd.Function):
    """Identity forward, negated gradient backward (Ganin & Lempitsky 2015)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


def grad_reverse(x: torch.Tensor) -> torch.Tensor:
    return _GradientReversal.apply(x)


def info_nce(query: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """One-directional InfoNCE (van den Oord et al. 2018): query i must pick key i among all keys.

    ``query, keys: [N, D]``; ``−mean_i log softmax_k(<q_i, k_k>/τ)_i`` with cosine similarity.
    """
    logits = F.normalize(query, dim=1) @ F.normalize(keys, dim=1).t() / temperature  # [N, N]
    return F.cross_entropy(logits, torch.arange(len(query), device=query.device))


def acquisition_style(x: torch.Tensor, style: ViewParams, bias_field: float, generator: torch.Generator
                      ) -> torch.Tensor:
    """The same images as if acquired elsewhere: intensity/blur/noise view, then a smooth multiplicative bias field.

    ``x``: ``[N, C, *spatial]`` in [0, 1] -> same shape, in [0, 1].
    """
    out = random_view(x, style, generator)
    if bias_field > 0:
        strength = torch.rand(len(x), generator=generator).to(x.device) * bias_field  # [N]
        log_field = bias_field_log(tuple(out.shape), generator, out)  # [N, 1, *spatial], max |.| = 1
        out = out * torch.exp(strength.view(-1, *([1] * (x.ndim - 1))) * log_field)
    return out.clamp(0.0, 1.0)


@register("method", "robust-mmr")
class RobustMMR(MMR):
    """``mmr`` + saliency masking, perturbed reconstruction inputs, domain consistency, site adversary,
    modality resilience. Loss dict: ``loss``, ``mim``, ``mlm`` and each active term (``domain``, ``site``,
    ``site_accuracy`` (not in the loss), ``resilience``)."""

    Params = RobustMMRParams
    info = MethodInfo("Robust-MMR", "self-supervised", ("image", "text"), counterpart="supervised-multimodal",
                      uses_fusion=True)

    @classmethod
    def augmented_corruptions(cls, params: RobustMMRParams) -> list[str]:
        """The site-style view's corruptions, plus ``bias-field`` when its random bias field is on."""
        return covered_corruptions(params.style) + (["bias-field"] if params.bias_field > 0 else [])

    def __init__(self, encoders: Encoders, params: RobustMMRParams | None = None, seed: int = 0):
        super().__init__(encoders, params, seed)
        p: RobustMMRParams = self.params
        if p.site_weight > 0:  # only built when used: unused parameters would break DDP
            dim = self.fusion.feature_dim
            self.site_head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, p.n_sites))

    def input_gradients(self, x: torch.Tensor, tokens: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gradients of the full (nothing masked) reconstruction loss w.r.t. pixels and token embeddings.

        Every patch is reconstructed and every real token predicted from the clean joint input; only the
        inputs get gradients (``autograd.grad``), the parameters' ``.grad`` are untouched.
        Returns ``[N, C, *spatial]``, ``[N, L, Dt]`` and the clean image tokens ``[N, T, Di]`` (detached).
        """
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            emb = self.text_encoder.embed(tokens).detach().requires_grad_(True)
            _, image_out, text_out, image_tokens, _ = self.fuse(xg, emb, tokens)
            n_patches = math.prod(patch_grid(x.shape, self.params.patch_size))
            all_patches = torch.ones(len(x), n_patches, dtype=torch.bool, device=x.device)
            loss = self.reconstruction(image_out, text_out, x, tokens, all_patches, maskable_tokens(tokens))["loss"]
            grad_x, grad_emb = torch.autograd.grad(loss, [xg, emb])
        return grad_x, grad_emb, image_tokens.detach()

    def masks(self, x: torch.Tensor, tokens: torch.Tensor, grad_x: torch.Tensor | None,
              grad_emb: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        p: RobustMMRParams = self.params
        if p.saliency == 0:
            return self.random_masks(x, tokens)
        padded = pad_to_multiple(grad_x.abs(), p.patch_size, "constant")  # border padding has no gradient
        patch_scores = patchify(padded, p.patch_size).sum(dim=-1)  # [N, P]: L1 of the gradient per patch
        token_scores = grad_emb.norm(dim=-1)  # [N, L]
        image_mask = saliency_mask(patch_scores, p.image_mask_ratio, p.saliency, self.generator)
        token_mask = saliency_mask(token_scores, p.text_mask_ratio, p.saliency, self.generator,
                                   valid=maskable_tokens(tokens))
        return image_mask, token_mask

    def perturb_visible(self, x_in: torch.Tensor, image_mask: torch.Tensor, grad_x: torch.Tensor | None
                        ) -> torch.Tensor:
        """``x_in`` + ε · direction on the visible pixels only (masked ones keep the fill), kept in [0, 1]."""
        p: RobustMMRParams = self.params
        if p.perturb == "fgsm":
            direction = grad_x.sign()
        else:
            direction = torch.randint(0, 2, x_in.shape, generator=self.generator).to(x_in) * 2 - 1
        visible = ~patch_mask_to_pixels(image_mask, tuple(x_in.shape), p.patch_size)  # [N, 1, *spatial]
        return (x_in + p.perturb_eps / 255 * direction * visible).clamp(0.0, 1.0)

    def domain_consistency(self, x: torch.Tensor, clean_tokens: torch.Tensor | None) -> torch.Tensor:
        """InfoNCE of the image-only fused features of a site-style view of ``x`` to those of ``x`` (no gradient)."""
        p: RobustMMRParams = self.params
        with torch.no_grad():
            if clean_tokens is None:
                clean_tokens = self.image_encoder.forward_tokens(x)  # [N, T, Di]
            anchor = self.fusion(clean_tokens, None)[0]  # [N, dim]
        styled = acquisition_style(x, p.style, p.bias_field, self.generator)  # [N, C, *spatial]
        feats = self.fusion(self.image_encoder.forward_tokens(styled), None)[0]  # [N, dim]
        return info_nce(gather_with_grad(feats), gather_with_grad(anchor), p.temperature)

    def check_sites(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        n_sites = self.params.n_sites
        if "site" not in batch:
            raise ValueError("robust-mmr: the batch has no 'site' (int64 [N] site index), needed by the site "
                             "adversary (site_weight > 0); pass sites or set site_weight=0")
        site = batch["site"].long()
        if site.numel() and (site.min() < 0 or site.max() >= n_sites):
            raise ValueError(f"robust-mmr: 'site' ids must be in [0, n_sites={n_sites}), got min {int(site.min())} "
                             f"max {int(site.max())}; raise n_sites")
        return site

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        p: RobustMMRParams = self.params
        x, tokens = self.check_batch(batch)  # [N, C, *spatial] in [0, 1], [N, L]
        site = self.check_sites(batch) if p.site_weight > 0 else None
        grad_x = grad_emb = clean_tokens = None
        if p.saliency > 0 or (p.perturb_eps > 0 and p.perturb == "fgsm"):
            grad_x, grad_emb, clean_tokens = self.input_gradients(x, tokens)
        image_mask, token_mask = self.masks(x, tokens, grad_x, grad_emb)
        x_in, tok_in = self.masked_inputs(x, tokens, image_mask, token_mask)
        if p.perturb_eps > 0:
            x_in = self.perturb_visible(x_in, image_mask, grad_x)
        pooled, image_out, text_out, image_tokens, states = self.fuse(x_in, self.text_encoder.embed(tok_in), tok_in)
        out = self.reconstruction(image_out, text_out, x, tokens, image_mask, token_mask)  # clean targets
        terms = {}  # name -> (weight, value)
        if p.domain_weight > 0:
            terms["domain"] = (p.domain_weight, self.domain_consistency(x, clean_tokens))
        if p.site_weight > 0:
            site_loss, out["site_accuracy"] = self.site_adversary(pooled, site)
            terms["site"] = (p.site_weight, site_loss)
        if p.resilience_weight > 0:
            terms["resilience"] = (p.resilience_weight, self.modality_resilience(pooled, image_tokens, states,
                                                                                 tok_in == PAD))
        loss = out["loss"]
        for name, (weight, value) in terms.items():
            loss = loss + weight * value
            out[name] = value.detach()
        out["loss"] = loss
        return out

    def site_adversary(self, pooled: torch.Tensor, site: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of the site classifier on gradient-reversed joint features, and its accuracy."""
        logits = self.site_head(grad_reverse(pooled))  # [N, n_sites]
        return F.cross_entropy(logits, site), (logits.argmax(dim=1) == site).float().mean().detach()

    def modality_resilience(self, pooled: torch.Tensor, image_tokens: torch.Tensor, states: torch.Tensor,
                            pad: torch.Tensor) -> torch.Tensor:
        """Image-only and report-only fused features (same encoder outputs, other modality dropped) must
        identify their own detached joint feature among the batch's: mean of the two InfoNCE losses."""
        temperature = self.params.temperature
        joint = gather_with_grad(pooled.detach())  # [N, dim]
        image_only = self.fusion(image_tokens, None)[0]  # [N, dim]
        report_only = self.fusion(None, states, pad)[0]  # [N, dim]
        return 0.5 * (info_nce(gather_with_grad(image_only), joint, temperature)
                      + info_nce(gather_with_grad(report_only), joint, temperature))
