"""Checkpoints of module weights, written atomically (a killed run never leaves a half-written file)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medrobust.fileio import atomic_write


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the modules."""


def save_modules(path: str | Path, modules: dict[str, nn.Module], meta: dict | None = None) -> Path:
    state = {"modules": {k: m.state_dict() for k, m in modules.items()}, "meta": meta or {}}
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_modules(path: str | Path, modules: dict[str, nn.Module]) -> dict:
    """Load weights saved by :func:`save_modules` into ``modules``; returns the saved ``meta``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for name, module in modules.items():
            module.load_state_dict(state["modules"][name])
    except (RuntimeError, KeyError, EOFError, OSError) as exc:
        raise CheckpointError(f"checkpoint {path} cannot be loaded into {sorted(modules)} ({exc}); "
                              "delete it to pre-train again") from None
    return state.get("meta", {})
