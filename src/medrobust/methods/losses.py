"""Loss functions of the methods, as small typed functions with the paper formula in the docstring."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medrobust.task import task_loss  # noqa: F401 - re-exported: the one definition is in task.py


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et al. 2020, eq. 1).

    For the 2N views ``z = [z1; z2]`` (``[N, D]`` each), with cosine similarity ``s_ij`` and positives
    ``(i, i+N)``: ``l_i = -log exp(s_{i,p(i)}/τ) / Σ_{k≠i} exp(s_ik/τ)``, averaged over all 2N anchors.
    """
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)  # [2N, D]
    n = len(z1)
    sim = z @ z.t() / temperature  # [2N, 2N]
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)  # [2N]
    return F.cross_entropy(sim, positives)


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric image-text InfoNCE of CLIP (Radford et al. 2021, Fig. 3 pseudo-code).

    ``logits = exp(t) · norm(I) norm(T)^T`` (``[N, N]``); loss = mean of the cross-entropies over rows
    (image → text) and columns (text → image), the matching pair on the diagonal.
    """
    img = F.normalize(image_emb, dim=1)  # [N, D]
    txt = F.normalize(text_emb, dim=1)  # [N, D]
    logits = logit_scale.exp() * img @ txt.t()  # [N, N]
    target = torch.arange(len(img), device=img.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
