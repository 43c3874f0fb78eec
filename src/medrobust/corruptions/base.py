"""Shared conventions of the corruption family (ImageNet-C style, 5 severities).

A corruption is a plain function registered by name::

    @register("corruption", "gaussian-noise")
    @severity_table((0.04, 0.08, 0.12, 0.16, 0.20), stochastic=True)
    def gaussian_noise(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor: ...

* ``x`` is a float tensor in [0, 1] (principle 1 of DESIGN.md, "one pixel space"), shape ``[N, C, H, W]``
  (2D images) or ``[N, C, D, H, W]`` (3D volumes); the spatial rank is read from ``x.ndim``.
* ``severity`` is an int in 1..5 (:data:`SEVERITIES`); 0 ("clean") is never a severity — the caller skips
  the corruption instead.
* All randomness comes from ``generator`` (a seeded ``torch.Generator`` gives identical output; ``None``
  falls back to torch's global RNG).
* The result is a new tensor with the same shape and dtype, clamped to [0, 1]; the input is not modified.

:func:`severity_table` attaches the per-severity parameters (``fn.severity_params``) and whether the
corruption draws random numbers (``fn.stochastic``), so reports and tests can read them.
:func:`apply` looks a corruption up by name and validates the input loudly.

The protocol follows Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions
and Perturbations", ICLR 2019 (ImageNet-C); the medical calibrations draw on Di Salvo et al., "MedMNIST-C:
Comprehensive benchmark and improved classifier robustness by simulating realistic image corruptions", 2024.
Written by hand (torch only) because the libraries that implement these (imagecorruptions, kornia, MONAI)
are either numpy/skimage per-image loops or heavy imports, and none covers 2D and 3D with one generator.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, TypeVar

import torch
from torch import Tensor

from medrobust import registry

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

F = TypeVar("F", bound=Callable[..., Tensor])


class Corruption(Protocol):
    """Call signature of every registered corruption."""

    severity_params: tuple[Any, ...]
    stochastic: bool

    def __call__(self, x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor: ...


def check_severity(severity: int) -> int:
    """Return ``severity`` if it is an int in 1..5, else raise ``ValueError`` naming the value."""
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise ValueError(
            f"corruption severity must be an int in {SEVERITIES[0]}..{SEVERITIES[-1]}, got {severity!r} "
            "(severity 0 means 'clean': skip the corruption instead)"
        )
    return severity


def check_images(x: Tensor, *, check_values: bool = True, who: str = "corruption") -> None:
    """Raise ``TypeError``/``ValueError`` unless ``x`` is a finite float ``[N,C,H,W]``/``[N,C,D,H,W]`` in [0, 1].

    With ``check_values=False`` only type and rank are checked (cheap; used inside every corruption).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{who}: expected a torch.Tensor of images, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{who}: images must be a float tensor in [0, 1], got dtype {x.dtype}")
    if x.ndim not in (4, 5):
        raise ValueError(
            f"{who}: images must have shape [N, C, H, W] (2D) or [N, C, D, H, W] (3D), "
            f"got {x.ndim} dims with shape {tuple(x.shape)}"
        )
    if not check_values or x.numel() == 0:
        return
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int((~finite).sum()) - n_nan
        raise ValueError(f"{who}: images contain non-finite values ({n_nan} NaN, {n_inf} inf)")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{who}: image values must lie in [0, 1] (normalisation belongs inside the model), "
            f"got min {lo:.4g}, max {hi:.4g}"
        )


#: the corruption families of the report's per-family table (MedMNIST-C / ImageNet-C grouping, plus scanner physics)
FAMILIES = ("noise", "blur", "intensity", "acquisition", "digital")


def severity_table(params: Sequence[Any], *, stochastic: bool, family: str = "digital",
                   dims: tuple[int, ...] = (2, 3), channels: tuple[int, ...] | None = None) -> Callable[[F], F]:
    """Decorator: attach the 5 per-severity parameters, the randomness flag and what the corruption applies to.

    ``family``: one of :data:`FAMILIES`; ``dims``: the spatial ranks it is defined for (e.g. ``(2,)`` for JPEG or
    a hair overlay, ``(3,)`` for slice-wise motion); ``channels``: the channel counts it takes (``(3,)`` for an H&E
    stain shift; ``None``: any). A study checks its corruptions against the data with these
    (:func:`applies_to`)."""
    params = tuple(params)
    if len(params) != len(SEVERITIES):
        raise ValueError(f"a severity table needs {len(SEVERITIES)} entries, got {len(params)}: {params}")
    if family not in FAMILIES:
        raise ValueError(f"corruption family {family!r} is not one of {FAMILIES}")
    if not dims or not set(dims) <= {2, 3}:
        raise ValueError(f"corruption dims {dims!r} must be a non-empty subset of (2, 3)")

    def deco(fn: F) -> F:
        fn.severity_params = params  # type: ignore[attr-defined]
        fn.stochastic = stochastic  # type: ignore[attr-defined]
        fn.family = family  # type: ignore[attr-defined]
        fn.dims = tuple(dims)  # type: ignore[attr-defined]
        fn.channels = None if channels is None else tuple(channels)  # type: ignore[attr-defined]
        return fn

    return deco


def applies_to(fn: Callable[..., Tensor], image_shape: Sequence[int]) -> str | None:
    """``None`` when corruption ``fn`` takes images of shape ``[C, *spatial]``, else why not (for messages)."""
    c, d = int(image_shape[0]), len(image_shape) - 1
    if d not in fn.dims:  # type: ignore[attr-defined]
        return f"it is defined for {'/'.join(f'{k}D' for k in fn.dims)} images, the data is {d}D"  # type: ignore[attr-defined]
    if fn.channels is not None and c not in fn.channels:  # type: ignore[attr-defined]
        return f"it takes {'/'.join(map(str, fn.channels))}-channel images, the data has {c}"  # type: ignore[attr-defined]
    return None


def param(fn: Callable[..., Tensor], severity: int) -> Any:
    """The table parameter of corruption ``fn`` at ``severity`` (validated)."""
    return fn.severity_params[check_severity(severity) - 1]  # type: ignore[attr-defined]


def begin(x: Tensor, severity: int, who: str) -> Tensor:
    """Common entry of every corruption: check rank/dtype and severity; return the working-precision input.

    Half-precision inputs are computed in float32 (CPU kernels for Poisson/JPEG need it) and cast back by
    :func:`finish`.
    """
    check_images(x, check_values=False, who=who)
    check_severity(severity)
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def finish(out: Tensor, like: Tensor) -> Tensor:
    """Clamp to [0, 1] and restore the input's dtype; always a new tensor."""
    return out.clamp(0.0, 1.0).to(like.dtype)


def randn(shape: Sequence[int], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Standard normal samples drawn on the generator's device, returned on ``like``'s device/dtype."""
    device = generator.device if generator is not None else like.device
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=like.dtype).to(like.device)


def rand(shape: Sequence[int], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Uniform [0, 1) samples drawn on the generator's device, returned on ``like``'s device/dtype."""
    device = generator.device if generator is not None else like.device
    return torch.rand(tuple(shape), generator=generator, device=device, dtype=like.dtype).to(like.device)


def spatial_dims(x: Tensor) -> int:
    """2 for ``[N, C, H, W]``, 3 for ``[N, C, D, H, W]``."""
    return x.ndim - 2


def apply(name: str, x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Corrupt ``x`` with the registered corruption ``name`` at ``severity`` (1..5), validating everything.

    Raises:
        medrobust.registry.RegistryError: unknown ``name`` (the message lists the registered ones).
        ValueError: severity outside 1..5, wrong rank, NaN/inf values or values outside [0, 1].
        TypeError: ``x`` is not a float tensor.
    """
    fn = registry.get("corruption", name)
    check_severity(severity)
    check_images(x, who=f"corruption {name!r}")
    return fn(x, severity, generator=generator)
