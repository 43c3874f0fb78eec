"""Corruption sets per imaging modality: what ``evaluation.corruptions: auto`` evaluates.

Modelled on MedMNIST-C's per-data-set lists (Di Salvo et al. 2024, Table 1: e.g. ChestMNIST / PneumoniaMNIST get
pixelate, JPEG, Gaussian / speckle / impulse / shot noise, Gaussian blur, brightness ±, contrast ±, gamma ±;
BreastMNIST (ultrasound) pixelate, JPEG, speckle, motion blur, brightness ±, contrast −), extended with the scanner
artefacts of each modality (MRI k-space artefacts, CT window / dose / beam hardening, ultrasound speckle, shadowing
and gain). A set keeps only the registered corruptions defined for the data's shape (``dims`` / ``channels``), so a
set names corruptions that may be added later without breaking; an unknown modality gets :data:`GENERIC`.
"""

from __future__ import annotations

from typing import Sequence

from medrobust import registry
from medrobust.corruptions.base import applies_to

#: the generic set (no modality known): today's four
GENERIC = ("gaussian-noise", "gaussian-blur", "contrast", "jpeg")

_XRAY = ("pixelate", "jpeg", "gaussian-noise", "speckle-noise", "impulse-noise", "shot-noise", "gaussian-blur",
         "brightness", "brightness-down", "contrast", "contrast-up", "gamma", "gamma-down")

#: modality (``Dataset.modality``, case-insensitive) -> corruption names, in report order
SETS: dict[str, tuple[str, ...]] = {
    "x-ray": _XRAY,
    "ultrasound": ("pixelate", "jpeg", "speckle-noise", "rayleigh-speckle", "motion-blur", "brightness",
                   "brightness-down", "contrast", "acoustic-shadowing", "ultrasound-gain"),
    "ct": ("ct-window-shift", "ct-low-dose", "ct-beam-hardening", "gaussian-noise", "gaussian-blur",
           "anisotropic-resolution", "pixelate", "jpeg", "contrast", "bias-field"),
    "mri": ("mri-ghosting", "mri-motion", "mri-spike", "gibbs-ringing", "rician-noise", "bias-field",
            "anisotropic-resolution", "gaussian-blur", "contrast"),
    "fundus photography": ("pixelate", "jpeg", "gaussian-noise", "speckle-noise", "defocus-blur", "motion-blur",
                           "zoom-blur", "brightness", "brightness-down", "contrast", "contrast-up", "saturate",
                           "black-corner", "gamma", "gamma-down"),
    "dermatology": ("pixelate", "jpeg", "gaussian-noise", "impulse-noise", "defocus-blur", "motion-blur",
                    "zoom-blur", "brightness", "brightness-down", "contrast", "contrast-up", "saturate",
                    "black-corner", "characters", "hair"),
    "histology": ("pixelate", "jpeg", "impulse-noise", "defocus-blur", "motion-blur", "zoom-blur", "brightness",
                  "contrast", "saturate", "stain-shift", "stain-deposit", "bubble"),
    "microscopy": ("pixelate", "jpeg", "gaussian-noise", "impulse-noise", "defocus-blur", "motion-blur",
                   "brightness", "contrast", "saturate", "stain-shift", "bubble"),
    "oct": ("pixelate", "jpeg", "speckle-noise", "gaussian-noise", "defocus-blur", "motion-blur", "contrast",
            "brightness", "brightness-down"),
}


def corruption_set(modality: str | None, image_shape: Sequence[int]) -> list[str]:
    """The registered corruptions of ``modality``'s set that take images of ``image_shape`` (``[C, *spatial]``);
    :data:`GENERIC` (filtered the same way) for an unknown or missing modality."""
    names = SETS.get((modality or "").strip().lower(), GENERIC)
    known = set(registry.names("corruption"))
    return [n for n in names if n in known and applies_to(registry.get("corruption", n), image_shape) is None]


def check_corruptions(names: Sequence[str], image_shape: Sequence[int], where: str) -> None:
    """Raise ``ValueError`` naming the corruption and the data when one of ``names`` does not take the data's
    images (e.g. a 3D-only corruption on 2D images)."""
    for i, name in enumerate(names):
        why = applies_to(registry.get("corruption", name), image_shape)
        if why is not None:
            raise ValueError(f"'evaluation.corruptions[{i}]': {name} cannot corrupt {where} "
                             f"({'×'.join(map(str, image_shape))}): {why}; drop it or use corruptions: auto")
