"""Self-checks of the adversarial evaluation (DESIGN principle 7), shown in the report with pass/fail.

- ``eps0_equals_clean``: every attack at ε=0 gives exactly the clean per-example accuracy.
- ``monotone_in_eps``: robust accuracy of every attack does not rise with ε (a rise of more than one
  example's worth, ``> 1/n``, fails: PGD is a heuristic, but a larger ball contains the smaller one).
- ``above_chance``: clean accuracy beats always predicting the majority class (per finding for
  multilabel) by at least 2 points; a model that did not learn makes every robustness number meaningless.
- ``large_eps_breaks``: PGD at a very large ε (``evaluation.check_epsilon``) drives accuracy below 5%;
  otherwise gradient masking (or a broken attack) is suspected. Image+report models are checked on the
  image pathway with the report removed, since a clean report may rightly keep the decision.
- ``gradients_nonzero``: the input gradient of the loss vanishes on < 5% of the attacked examples.
- ``noise_weaker_than_attack``: random ±ε noise hurts less than the worst-case attack at the reference ε.
- ``apgd_not_weaker_than_pgd``: APGD-CE at the reference ε is at least as strong as PGD (one example slack).
- ``report_monotone_in_budget``: report-side robust accuracy does not rise with the edit/embedding budget.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def eps0_equals_clean(clean: torch.Tensor, per_attack: dict[str, dict[float, torch.Tensor]],
                      randomized: bool = False) -> dict:
    """At ε=0 no attack may change a prediction. A randomised model draws new noise at every pass, so for it
    the accuracies must agree within sampling error (3 binomial standard errors of a difference) instead."""
    bad = {name: int((by_eps[0.0] != clean).sum()) for name, by_eps in per_attack.items() if 0.0 in by_eps}
    if not bad:
        return {"name": "eps0_equals_clean", "passed": False, "detail": "no attack was run at ε=0"}
    n, acc = len(clean), float(clean.float().mean())
    if randomized:
        tol = 3 * math.sqrt(2 * max(acc * (1 - acc), 1.0 / n) / n)
        gaps = {name: abs(float(by_eps[0.0].float().mean()) - acc) for name, by_eps in per_attack.items()
                if 0.0 in by_eps}
        failed = {k: v for k, v in gaps.items() if v > tol}
        detail = (f"randomised model: at ε=0 every attack's accuracy is within {tol:.3f} of clean {acc:.3f}"
                  if not failed else "; ".join(f"{k} differs from clean by {v:.3f} at ε=0 (tolerance {tol:.3f})"
                                               for k, v in failed.items()))
        return {"name": "eps0_equals_clean", "passed": not failed, "detail": detail}
    failed = {k: v for k, v in bad.items() if v}
    detail = (f"at ε=0 every attack reproduces clean accuracy {acc:.3f} on the {n} attacked examples"
              if not failed else "; ".join(f"{k} changed {v} of {n} predictions at ε=0" for k, v in failed.items()))
    return {"name": "eps0_equals_clean", "passed": not failed, "detail": detail}


def monotone_in_eps(per_attack: dict[str, dict[float, torch.Tensor]], epsilons: list[float]) -> dict:
    rises = []
    for name, by_eps in per_attack.items():
        accs = [float(by_eps[e].mean()) for e in epsilons]
        n = len(by_eps[epsilons[0]])
        for (e0, a0), (e1, a1) in zip(zip(epsilons, accs), zip(epsilons[1:], accs[1:])):
            if a1 - a0 > 1.0 / n + 1e-6:  # float32 means
                rises.append(f"{name} accuracy rose from {a0:.3f} at {e0:g}/255 to {a1:.3f} at {e1:g}/255")
    detail = "; ".join(rises) if rises else "robust accuracy is non-increasing in ε for every attack"
    return {"name": "monotone_in_eps", "passed": not rises, "detail": detail}


def above_chance(clean_acc: float, labels, multilabel: bool) -> dict:
    labels = np.asarray(labels)
    if multilabel:
        majority = float(np.mean(np.maximum(labels.mean(axis=0), 1 - labels.mean(axis=0))))
    else:
        majority = float(np.bincount(labels).max() / len(labels))
    passed = clean_acc >= majority + 0.02
    detail = (f"clean accuracy {clean_acc:.3f} vs {majority:.3f} for always predicting the majority class"
              + ("" if passed else " — the model did not learn; its robustness numbers are meaningless"))
    return {"name": "above_chance", "passed": passed, "detail": detail}


def large_eps_breaks(acc: float, eps: float, image_only_note: str = "",
                     gradient_free_acc: float | None = None) -> dict:
    """An (almost) unbounded image attack must drive accuracy near 0; otherwise gradients are suspect.

    ``gradient_free_acc`` (image+report models, image pathway): what a gradient-free attack leaves at the same
    ε. When it cannot break the model either, the image alone cannot flip those decisions (bounded image
    influence, a property of the model), which is not gradient masking: the check then passes if the gradient
    attack is at least as strong as the gradient-free one.
    """
    passed = acc < 0.05
    detail = f"PGD at ε={eps:g}/255 leaves {acc:.3f} accuracy{image_only_note}"
    if not passed and gradient_free_acc is not None and acc <= gradient_free_acc + 0.02:
        passed = True
        detail += (f"; the gradient-free Square attack leaves {gradient_free_acc:.3f}: the image alone cannot flip "
                   "these decisions (bounded image influence), not gradient masking")
    elif not passed:
        detail += (" — should be near 0: gradient masking or a broken attack suspected"
                   + ("" if gradient_free_acc is None else f" (gradient-free Square leaves {gradient_free_acc:.3f})"))
    return {"name": "large_eps_breaks", "passed": passed, "detail": detail}


def gradients_nonzero(norms: torch.Tensor) -> dict:
    """Input gradients of the loss must not vanish (zero gradients make gradient attacks powerless)."""
    zero = float((norms <= 1e-12).float().mean())
    passed = zero < 0.05
    detail = (f"input-gradient norm: median {float(norms.median()):.3g}, zero on {zero:.1%} of attacked examples"
              + ("" if passed else " — vanishing gradients: gradient-based robust accuracy is not trustworthy"))
    return {"name": "gradients_nonzero", "passed": passed, "detail": detail}


def noise_weaker_than_attack(noise_acc: float, attack_acc: float, eps: float, n: int) -> dict:
    """Random noise of the attack's size must hurt less than the attack (else the attack is not searching)."""
    passed = noise_acc >= attack_acc - 1.0 / n - 1e-6
    detail = f"at ε={eps:g}/255: random ±ε noise {noise_acc:.3f} vs worst-case attack {attack_acc:.3f}"
    return {"name": "noise_weaker_than_attack", "passed": passed, "detail": detail}


def apgd_not_weaker_than_pgd(apgd_acc: float, pgd_acc: float, eps: float, n: int) -> dict:
    """APGD (adaptive step size) should be at least as strong as PGD at the same ε (one example of slack)."""
    passed = apgd_acc <= pgd_acc + 1.0 / n + 1e-6
    detail = f"at ε={eps:g}/255: APGD-CE {apgd_acc:.3f} vs PGD {pgd_acc:.3f}"
    return {"name": "apgd_not_weaker_than_pgd", "passed": passed, "detail": detail}
