"""MoCo v2 (queue of negatives, momentum key encoder) and MoCo v3 (symmetric, in-batch keys, predictor).

* He, Fan, Wu, Xie, Girshick (2020), "Momentum Contrast for Unsupervised Visual Representation Learning",
  CVPR — the queue and the momentum key encoder; Chen, Fan, Girshick, He (2020), "Improved Baselines with
  Momentum Contrastive Learning", arXiv:2003.04297 — MoCo v2: MLP head, blur, cosine schedule, τ = 0.2.
* Chen, Xie, He (2021), "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV —
  MoCo v3: no queue, keys from the (global) batch, a prediction head, symmetrised loss scaled by 2τ.

The study keeps ``image_encoder`` (the query encoder); the key / momentum encoder is a frozen deep copy
updated by :meth:`after_step`. Sizes are scaled for CPU: heads of width 128, output 64, queue 1024 (paper
65536), key momentum 0.99 (paper 0.999).

Defaults of MoCo v2 that differ from the paper, each a parameter, for short budgets on small data sets:

* ``head_bn``: BatchNorm in the MLP head, as MoCo v3 (and SimCLR v2) use. The small GroupNorm CNN starts
  with pooled features that are nearly parallel across images; without BatchNorm all queries stayed
  nearly identical (mean pairwise cosine 0.94) and the loss sat at log K. With it the loss falls.
  ("Shuffling BN" guards BN in the *encoder*; our encoders use GroupNorm.)
* ``symmetric``: both views serve as query, as in the authors' CIFAR demo; ``batch_negatives``: the
  current step's keys of the other images are negatives too (fresh keys, as in MoCo v3), besides the queue.
* ``exclude_same_image``: MoCo assumes the queue holds no key of the query's own image (data set ≫
  queue). Medical data sets are often smaller (BreastMNIST: 546 training images), so the keys of the
  query's own source image are left out of its negatives; images are recognised by a fixed random
  projection of their un-augmented pixels (:func:`image_fingerprint`), stored alongside the keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medrobust.data.views import ViewParams, random_view
from medrobust.engine.distributed import rank
from medrobust.methods.contract import Encoders, MethodInfo, method_generator
from medrobust.methods.momentum import ema_update, frozen_copy, gather_no_grad, mlp
from medrobust.methods.simclr import projector
from medrobust.registry import register


def moco_infonce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float,
                 exclude: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE of MoCo (He et al. 2020, eq. 1) with the queue as negatives.

    ``L = −mean_i log[ exp(q_i·k_i/τ) / (exp(q_i·k_i/τ) + Σ_{j ∉ E_i} exp(q_i·n_j/τ)) ]``.

    Args:
        q: ``[N, D]`` queries, L2-normalised.
        k: ``[N, D]`` positive keys, L2-normalised, no gradient.
        queue: ``[K, D]`` negative keys, L2-normalised.
        exclude: optional ``bool [N, K]``: queue entries ``E_i`` left out of query ``i``'s negatives.
    """
    pos = (q * k).sum(dim=1, keepdim=True)  # [N, 1]
    neg = q @ queue.t()  # [N, K]
    if exclude is not None:
        neg = neg.masked_fill(exclude, float("-inf"))
    logits = torch.cat([pos, neg], dim=1) / temperature  # [N, 1 + K]
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def image_fingerprint(x: torch.Tensor) -> torch.Tensor:
    """``float64 [N]``: a fixed random projection of each (un-augmented) image, equal for equal images."""
    flat = x.detach().flatten(1).double()  # [N, M]
    weights = torch.rand(flat.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return flat @ weights.to(flat.device)


def moco_v3_contrastive(q: torch.Tensor, k: torch.Tensor, temperature: float, offset: int = 0) -> torch.Tensor:
    """MoCo v3's ``ctr(q, k)`` (Chen et al. 2021, Alg. 1): InfoNCE over in-batch keys, scaled by ``2τ``.

    ``L = 2τ · mean_i −log[ exp(q_i·k_{i+offset}/τ) / Σ_j exp(q_i·k_j/τ) ]`` with L2-normalised inputs.

    Args:
        q: ``[n, D]`` this rank's queries.
        k: ``[M, D]`` keys of the global batch (``M = n · world``), no gradient.
        offset: index of this rank's first sample in the global batch (``rank · n``).
    """
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = q @ k.t() / temperature  # [n, M]
    labels = torch.arange(len(q), device=q.device) + offset
    return F.cross_entropy(logits, labels) * (2 * temperature)


def same_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``bool [len(a), len(b)]``: equal fingerprints (relative tolerance 1e-9; NaN matches nothing)."""
    return torch.isclose(a.view(-1, 1), b.view(1, -1), rtol=1e-9, atol=0.0)


class MoCoQueue(nn.Module):
    """A FIFO of ``size`` keys (``[size, dim]``, L2-normalised random init as in the paper) with a pointer,
    and the fingerprint of the image each key came from (``ids``, NaN for the initial random keys).

    :meth:`enqueue` overwrites the oldest keys, wrapping around the end (``queue_ptr`` is the next slot).
    """

    def __init__(self, size: int, dim: int, generator: torch.Generator):
        super().__init__()
        self.register_buffer("queue", F.normalize(torch.randn(size, dim, generator=generator), dim=1))
        self.register_buffer("ids", torch.full((size,), float("nan"), dtype=torch.float64))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, ids: torch.Tensor | None = None) -> None:  # keys [B, dim], ids [B]
        size = len(self.queue)
        ids = torch.full((len(keys),), float("nan"), dtype=torch.float64) if ids is None else ids
        keys, ids = keys[-size:], ids[-size:]
        idx = (int(self.queue_ptr) + torch.arange(len(keys), device=keys.device)) % size  # [B]
        self.queue[idx] = keys.to(self.queue.dtype)
        self.ids[idx] = ids.to(self.ids)
        self.queue_ptr.fill_((int(self.queue_ptr) + len(keys)) % size)

    def same_image(self, ids: torch.Tensor) -> torch.Tensor:
        """``bool [N, K]``: queue entries whose key came from the same image as query ``i`` (fingerprint ``ids``)."""
        return same_image(ids, self.ids)


class MoCoV2Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(0.2, gt=0, description="τ of MoCo v2")
    queue_size: int = Field(1024, ge=1, description="negatives kept (paper 65536; CPU scale)")
    momentum: float = Field(0.99, ge=0, le=1, description="key-encoder EMA (paper 0.999 over ~500k steps)")
    proj_dim: int = Field(64, ge=2)
    proj_hidden: int = Field(128, ge=2)
    symmetric: bool = Field(True, description="both views serve as query (the paper's CIFAR demo; v2 is asymmetric)")
    exclude_same_image: bool = Field(True, description="leave keys of the query's own image out of its negatives")
    batch_negatives: bool = Field(True, description="also contrast with the current keys of the other images")
    head_bn: bool = Field(True, description="BatchNorm in the MLP head (hidden and output), as MoCo v3")
    views: ViewParams = ViewParams()


@register("method", "moco-v2")
class MoCoV2(nn.Module):
    """MoCo v2: query encoder + MLP head against a momentum key encoder and a queue of negatives."""

    Params = MoCoV2Params
    info = MethodInfo("MoCo v2", "self-supervised", counterpart="supervised")

    def __init__(self, encoders: Encoders, params: MoCoV2Params | None = None, seed: int = 0):
        super().__init__()
        image_encoder = encoders.image
        self.params = p = params or MoCoV2Params()
        self.generator = method_generator(seed)
        self.image_encoder = image_encoder
        self.head = (mlp(image_encoder.feature_dim, p.proj_hidden, p.proj_dim, last_bn=True) if p.head_bn
                     else projector(image_encoder.feature_dim, p.proj_hidden, p.proj_dim))
        self.key_encoder, self.key_head = frozen_copy(image_encoder), frozen_copy(self.head)
        # the initial queue must be the same on every rank: drawn from the seed alone
        self.queue = MoCoQueue(p.queue_size, p.proj_dim, torch.Generator().manual_seed(seed))

    def _query(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.image_encoder.forward_features(x)), dim=1)

    @torch.no_grad()
    def _key(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.key_head(self.key_encoder.forward_features(x)), dim=1)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, p = batch["image"], self.params  # [N, C, *spatial] in [0, 1]
        v1, v2 = random_view(x, p.views, self.generator), random_view(x, p.views, self.generator)
        ids = image_fingerprint(x)  # [N]
        if p.symmetric:
            (q1, q2), (k1, k2) = self._query(torch.cat([v1, v2])).chunk(2), self._key(torch.cat([v1, v2])).chunk(2)
            pairs = [(q1, k2), (q2, k1)]  # (query, positive key), [N, D] each
        else:
            pairs = [(self._query(v1), self._key(v2))]
        keys = gather_no_grad(torch.cat([k for _, k in pairs]))  # [W·P·N, D], this step's keys of all ranks
        key_ids = gather_no_grad(ids.repeat(len(pairs)))
        negatives = self.queue.queue.clone()  # [K, D]; a copy, as the enqueue below must not touch the graph
        exclude = (self.queue.same_image(ids) if p.exclude_same_image
                   else torch.zeros(len(x), len(negatives), dtype=torch.bool, device=x.device))  # [N, K]
        if p.batch_negatives:  # the positive's own key is among them: excluded by its fingerprint
            negatives = torch.cat([negatives, keys])
            exclude = torch.cat([exclude, same_image(ids, key_ids)], dim=1)
        loss = sum(moco_infonce(q, k, negatives, p.temperature, exclude) for q, k in pairs) / len(pairs)
        if self.training:
            self.queue.enqueue(keys, key_ids)
        return {"loss": loss}

    def after_step(self) -> None:
        ema_update(self.key_encoder, self.image_encoder, self.params.momentum)
        ema_update(self.key_head, self.head, self.params.momentum)


class MoCoV3Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(0.2, gt=0, description="τ (paper: 0.2 for ViT, 1.0 for ResNet)")
    momentum: float = Field(0.99, ge=0, le=1, description="momentum-encoder EMA (paper 0.99, cosine to 1)")
    proj_dim: int = Field(64, ge=2, description="paper 256")
    proj_hidden: int = Field(128, ge=2, description="paper 4096")
    views: ViewParams = ViewParams()


@register("method", "moco-v3")
class MoCoV3(nn.Module):
    """MoCo v3: encoder + 3-layer projector + 2-layer predictor; keys from a momentum encoder + projector."""

    Params = MoCoV3Params
    info = MethodInfo("MoCo v3", "self-supervised", counterpart="supervised")

    def __init__(self, encoders: Encoders, params: MoCoV3Params | None = None, seed: int = 0):
        super().__init__()
        image_encoder = encoders.image
        self.params = p = params or MoCoV3Params()
        self.generator = method_generator(seed)
        self.image_encoder = image_encoder
        self.projector = mlp(image_encoder.feature_dim, p.proj_hidden, p.proj_dim, layers=3, last_bn=True)
        self.predictor = mlp(p.proj_dim, p.proj_hidden, p.proj_dim, layers=2)
        self.momentum_encoder, self.momentum_projector = frozen_copy(image_encoder), frozen_copy(self.projector)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["image"]  # [N, C, *spatial] in [0, 1]
        v = torch.cat([random_view(x, self.params.views, self.generator),
                       random_view(x, self.params.views, self.generator)])  # [2N, ...]
        # encoders see both views at once (GroupNorm: per-sample); the BN heads see one view at a time, as in
        # the paper's code, so their batch statistics are those of a single view
        q1, q2 = (self.predictor(self.projector(f)) for f in self.image_encoder.forward_features(v).chunk(2))
        with torch.no_grad():
            k1, k2 = (self.momentum_projector(f) for f in self.momentum_encoder.forward_features(v).chunk(2))
        offset, t = rank() * len(x), self.params.temperature
        loss = moco_v3_contrastive(q1, gather_no_grad(k2), t, offset) + \
            moco_v3_contrastive(q2, gather_no_grad(k1), t, offset)
        return {"loss": loss}

    def after_step(self) -> None:
        ema_update(self.momentum_encoder, self.image_encoder, self.params.momentum)
        ema_update(self.momentum_projector, self.projector, self.params.momentum)
