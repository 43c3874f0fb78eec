"""Self-checks of the adversarial evaluation (DESIGN principle 7), shown in the report with pass/fail.

- ``eps0_equals_clean``: every attack and the worst case at ε=0 give exactly the clean per-example accuracy;
  for a randomised model, the *expected* clean accuracy (decisions scored by the mean softmax of many draws,
  :func:`medrobust.evaluation.scoring.decide`) within sampling error.
- ``monotone_in_eps``: robust accuracy of every attack does not rise with ε (a rise of more than one
  example's worth, ``> 1/n``, fails: PGD is a heuristic, but a larger ball contains the smaller one).
- ``above_chance``: clean accuracy beats always predicting the majority class (per finding for
  multilabel) by at least 2 points; a model that did not learn makes every robustness number meaningless.
- ``large_eps_breaks``: at a very large ε (``evaluation.check_epsilon``) an attack must actually drive
  accuracy near 0. The rule: PGD-10 leaves < 5% → pass. Otherwise image-only models fail (gradient masking
  or a broken attack). Image+report models are checked on the image pathway with the report removed (a
  clean report may rightly keep the decision) and get gradient-free looks: if a 100-query Square breaks
  more than PGD (beyond 2 pp), the gradients are masked → fail; if Square also leaves ≥ 5%, Square with
  1000 queries attacks what PGD left — only if it cannot move it either (accuracy within 2 pp of PGD's) do
  the decisions count as bounded image influence (pass, with that note); if it can, fail. PGD within 2 pp
  of a Square that leaves < 5% passes. PGD merely being no worse than a weak Square is not enough: both
  fail on masked gradients when the search budget is small.
- ``gradients_nonzero``: the input gradient of the loss vanishes on < 5% of the attacked examples.
- ``noise_weaker_than_attack``: random ±ε noise hurts less than the worst-case attack at the reference ε.
- ``apgd_not_weaker_than_pgd``: APGD-CE at the reference ε is at least as strong as PGD (one example slack).
- ``attack_converged``: at the reference ε, the strongest gradient attack re-run with double the steps and
  one more restart (on the examples still correct) lowers the worst case by at most max(1 pp, 1/n);
  otherwise the attack budget is too small and the reported robust accuracy overstates robustness.
- ``report_monotone_in_budget``: report-side robust accuracy does not rise with the edit/embedding budget.
"""

from __future__ import annotations

import math

import numpy as np
import torch

BREAKS_BELOW = 0.05  # large_eps_breaks: accuracy an unbounded attack must get below
SLACK = 0.02  # large_eps_breaks: how much better a gradient-free attack may do before masking is suspected
CONVERGED_WITHIN = 0.01  # attack_converged: the largest drop allowed (or one example's worth, if larger)


def eps0_equals_clean(clean: torch.Tensor, per_attack: dict[str, dict[float, torch.Tensor]],
                      randomized: bool = False, worst: torch.Tensor | None = None) -> dict:
    """At ε=0 no attack may change a prediction, nor may the worst case (``worst``, ``[n]`` at ε=0).

    A randomised model is compared with its *expected* clean accuracy (``clean`` scored by expected
    decisions); since each point is an estimate from finitely many draws, the accuracies must agree within
    sampling error (3 binomial standard errors of a difference) instead of exactly.
    """
    at0 = {name: by_eps[0.0] for name, by_eps in per_attack.items() if 0.0 in by_eps}
    if not at0:
        return {"name": "eps0_equals_clean", "passed": False, "detail": "no attack was run at ε=0"}
    if worst is not None:
        at0["the worst case"] = worst
    n, acc = len(clean), float(clean.float().mean())
    if randomized:
        tol = 3 * math.sqrt(2 * max(acc * (1 - acc), 1.0 / n) / n)
        gaps = {name: abs(float(a.float().mean()) - acc) for name, a in at0.items()}
        failed = {k: v for k, v in gaps.items() if v > tol}
        detail = ("randomised model (expected decisions): at ε=0 every attack" + (" and the worst case" if worst
                  is not None else "") + f" are within {tol:.3f} of the expected clean accuracy {acc:.3f}"
                  if not failed else "; ".join(f"{k} differs from the expected clean accuracy {acc:.3f} by {v:.3f}"
                                               f" at ε=0 (tolerance {tol:.3f})" for k, v in failed.items()))
        return {"name": "eps0_equals_clean", "passed": not failed, "detail": detail}
    failed = {k: int((a != clean).sum()) for k, a in at0.items()}
    failed = {k: v for k, v in failed.items() if v}
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


def above_chance(clean_acc: float, labels, multilabel: bool, balanced: float | None = None) -> dict:
    """The model beats always predicting the majority class: its accuracy by 2 pp, or — for a model trained to
    balance the classes, whose accuracy may sit below the majority rate of an imbalanced test set — its balanced
    accuracy (``balanced``) by 5 pp over chance (1/K; 0.5 per finding for multilabel), which a majority-class guess
    cannot do (its balanced accuracy is exactly chance)."""
    labels = np.asarray(labels)
    if multilabel:
        majority = float(np.mean(np.maximum(labels.mean(axis=0), 1 - labels.mean(axis=0))))
        chance, classes = 0.5, 2
    else:
        counts = np.bincount(labels)
        classes = int((counts > 0).sum())
        majority, chance = float(counts.max() / len(labels)), 1.0 / max(2, classes)
    by_acc = clean_acc >= majority + 0.02
    by_balanced = balanced is not None and classes >= 2 and balanced >= chance + 0.05  # one class: says nothing
    passed = by_acc or by_balanced
    detail = (f"clean accuracy {clean_acc:.3f} vs {majority:.3f} for always predicting the majority class"
              + (f"; balanced accuracy {balanced:.3f} vs {chance:.3f} by chance" if balanced is not None else "")
              + ("" if passed else " — the model did not learn; its robustness numbers are meaningless"))
    return {"name": "above_chance", "passed": passed, "detail": detail}


def large_eps_breaks(acc: float, eps: float, image_only_note: str = "", gradient_free_acc: float | None = None,
                     strong_gradient_free_acc: float | None = None) -> dict:
    """An (almost) unbounded image attack must drive accuracy near 0; otherwise gradients are suspect.

    ``acc``: PGD's accuracy. Image+report models (image pathway) add ``gradient_free_acc``, what a
    100-query Square leaves, and ``strong_gradient_free_acc``, what is left once a 1000-query Square also
    attacks the examples PGD left correct (:func:`medrobust.evaluation.adversarial.large_eps_accuracies`).
    The rule is in the module docstring: near 0 (< 5%) by some attack, or bounded image influence shown by
    the 1000-query Square moving nothing PGD could not (within 2 pp).
    """
    detail = f"PGD at ε={eps:g}/255 leaves {acc:.3f} accuracy{image_only_note}"
    if acc < BREAKS_BELOW:
        return {"name": "large_eps_breaks", "passed": True, "detail": detail}
    if gradient_free_acc is None:
        return {"name": "large_eps_breaks", "passed": False,
                "detail": detail + " — should be near 0: gradient masking or a broken attack suspected"}
    detail += f"; a 100-query Square leaves {gradient_free_acc:.3f}"
    if acc > gradient_free_acc + SLACK:
        return {"name": "large_eps_breaks", "passed": False, "detail": detail + " — the gradient-free attack "
                "breaks what PGD cannot: gradient masking suspected"}
    if gradient_free_acc < BREAKS_BELOW:  # PGD within 2 pp of an attack that drives accuracy near 0
        return {"name": "large_eps_breaks", "passed": True, "detail": detail}
    if strong_gradient_free_acc is None:
        return {"name": "large_eps_breaks", "passed": False, "detail": detail + " — neither attack drives accuracy "
                "near 0 and no stronger gradient-free attack was run: gradient masking not ruled out"}
    detail += f"; a 1000-query Square on what PGD left leaves {strong_gradient_free_acc:.3f}"
    if strong_gradient_free_acc >= acc - SLACK:
        return {"name": "large_eps_breaks", "passed": True, "detail": detail + ": the image alone cannot flip these "
                "decisions (bounded image influence), not gradient masking"}
    return {"name": "large_eps_breaks", "passed": False, "detail": detail + " — more queries break what PGD cannot: "
            "gradient masking suspected"}


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


def attack_converged(before: float, after: float, eps: float, n: int, attack: str) -> dict:
    """The worst case at the reference ε must not drop by more than max(1 pp, 1/n) when ``attack`` (the
    strongest gradient attack with double the steps and one more restart) also runs; ``before``/``after``
    are the worst-case accuracies without/with it."""
    tol, drop = max(CONVERGED_WITHIN, 1.0 / n), before - after
    passed = drop <= tol + 1e-6
    detail = (f"at ε={eps:g}/255, adding {attack} moves the worst case {before:.3f} → {after:.3f} "
              f"(drop {100 * drop:.1f} pp, tolerance {100 * tol:.1f} pp)")
    detail += (": the attack budget has converged" if passed else " — attack budget too small: the robust accuracy "
               "overstates robustness; raise the attacks' steps/queries (e.g. evaluation.worst_case: autoattack)")
    return {"name": "attack_converged", "passed": passed, "detail": detail}
