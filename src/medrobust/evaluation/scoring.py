"""How a point is scored in the adversarial evaluation: a deterministic model by one forward pass, a
randomised model (``randomized = True``) by its *expected* decision (issue 12).

A randomised model gives a new decision at every pass. Scoring each adversarial point with one pass and
then taking the per-example worst case over attacks and ε compounds independent noise draws: an example
right with probability 0.7 per pass is "broken" by the first of ten looks that draws wrong, whatever the
attack did. :func:`decide` scores a point by the argmax of the mean softmax over :data:`SCORING_DRAWS`
passes at least (the smoothed classifier's decision, Cohen et al. 2019), and draws more — doubling, up
to :data:`MAX_SCORING_DRAWS` — for the examples whose decision is still within :data:`SETTLED_Z` standard
errors of a tie, so sampling error alone rarely flips a decision. Points whose expected decision is a true
tie stay a coin flip at any number of draws. Draws are stacked along the batch (one forward pass for many
draws), so the extra passes cost little on small models. Written here: no library scores a randomised
classifier for an attack evaluation this way.
"""

from __future__ import annotations

import torch
from torch import nn

from medrobust.attacks.base import restrict
from medrobust.task import Task, per_example_accuracy

#: forward passes whose mean softmax scores one point of a randomised model (its expected decision), at
#: least; an example whose decision is within SETTLED_Z standard errors of a tie gets more, up to the maximum
SCORING_DRAWS = 32
MAX_SCORING_DRAWS = 512
SETTLED_Z = 3.0
SCORING_ELEMENTS = 2 ** 22  # input elements per forward pass when draws are stacked along the batch


def scoring_draws(model: nn.Module) -> int:
    """Passes that score one point: the model's ``scoring_draws``, else :data:`SCORING_DRAWS` for a
    randomised model, else 1."""
    own = getattr(model, "scoring_draws", None)
    if own is not None:
        return int(own)
    return SCORING_DRAWS if getattr(model, "randomized", False) else 1


def _unsettled(s1: torch.Tensor, s2: torch.Tensor, k: torch.Tensor, task: Task) -> torch.Tensor:
    """``[n]`` bool: the expected decision is within :data:`SETTLED_Z` standard errors of a tie.

    ``s1`` ``[n, K]`` sums of the per-draw probabilities; ``s2`` their sums of squares ``[n, K]``
    (multilabel) or of outer products ``[n, K, K]``; ``k`` ``[n]`` draws so far. Single-label: the gap
    between the two most probable classes vs the standard error of the per-draw difference.
    """
    mean = s1 / k[:, None]  # [n, K]
    if task.multilabel:
        var = (s2 / k[:, None] - mean ** 2).clamp_min(0)  # [n, K]
        return ((mean - 0.5).abs() <= SETTLED_Z * (var / k[:, None]).sqrt()).any(dim=1)
    cov = s2 / k[:, None, None] - mean[:, :, None] * mean[:, None, :]  # [n, K, K]
    a, b = mean.topk(2, dim=1).indices.unbind(1)  # [n] each
    r = torch.arange(len(mean))
    var = (cov[r, a, a] + cov[r, b, b] - 2 * cov[r, a, b]).clamp_min(0)
    return mean[r, a] - mean[r, b] <= SETTLED_Z * (var / k).sqrt()


def _draw(fn: nn.Module, x: torch.Tensor, rows: torch.Tensor, draws: int, task: Task
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums over ``draws`` passes of the probabilities of the examples ``rows`` of ``x`` (``[m, K]``) and of
    their squares / outer products; draws are stacked along the batch, :data:`SCORING_ELEMENTS` at most."""
    m = len(rows)
    per_pass = max(1, SCORING_ELEMENTS // (m * x[0].numel()))
    s1 = s2 = 0.0
    done = 0
    while done < draws:
        c = min(per_pass, draws - done)
        stacked = rows.repeat(c)  # [c*m]: draw j of example i at j*m + i
        logits = restrict(fn, stacked)(x[stacked])  # [c*m, K]
        p = (torch.sigmoid(logits) if task.multilabel else torch.softmax(logits, dim=1)).view(c, m, -1).cpu()
        s1 = s1 + p.sum(0)
        s2 = s2 + ((p ** 2).sum(0) if task.multilabel else torch.einsum("cmk,cml->mkl", p, p))
        done += c
    return s1, s2


def decide(fn: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task, draws: int = 1) -> torch.Tensor:
    """``[N]`` per-example accuracy of the decision at ``x`` (no gradient).

    ``draws == 1``: one pass, ``per_example_accuracy(fn(x), y)``. ``draws > 1`` (randomised models): the
    expected decision, argmax of the mean softmax (multilabel: mean sigmoid > 1/2 per finding) over at
    least ``draws`` passes; examples whose decision is still within :data:`SETTLED_Z` standard errors of
    a tie get as many passes again (doubling), up to :data:`MAX_SCORING_DRAWS`, so that a point is not
    scored wrong by sampling error alone (the worst case would compound such errors over attacks and ε).
    """
    with torch.no_grad():
        if draws == 1:
            return per_example_accuracy(fn(x), y, task)
        n = len(x)
        s1 = s2 = None
        k = torch.zeros(n)
        active = torch.arange(n)
        while len(active):
            more = int(k[active[0]]) or draws  # the active examples all have the same count: double it
            a1, a2 = _draw(fn, x, active, more, task)
            if s1 is None:
                s1, s2 = torch.zeros(n, *a1.shape[1:]), torch.zeros(n, *a2.shape[1:])
            s1[active] += a1
            s2[active] += a2
            k[active] += more
            active = active[_unsettled(s1[active], s2[active], k[active], task) & (k[active] < MAX_SCORING_DRAWS)]
        mean = s1 / k[:, None]
        return per_example_accuracy(mean - 0.5 if task.multilabel else mean, y.cpu(), task).to(x.device)
