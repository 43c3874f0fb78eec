"""One plain dict per component family; components register themselves by name.

Follows timm's ``@register_model`` / solo-learn's ``METHODS``: each component lives in its own module and
adds itself with :func:`register`. :func:`load_all` imports every component module so the registry is full
(used by ``medrobust list`` and by look-ups from configs).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable, TypeVar

# "attack": image attacks, ``attack(model, x, y, *, eps, task, generator) -> x_adv``;
# "report-attack": report-side and joint image+report attacks,
# ``attack(model, image, tokens, y, *, budget, task, texts, tokenizer, generator) -> AdversarialPair``.
FAMILIES = ("data", "encoder", "method", "attack", "report-attack", "corruption", "defense")

# family -> package whose modules hold the components of that family
_PACKAGES = {
    "data": "medrobust.data",
    "encoder": "medrobust.models",
    "method": "medrobust.methods",
    "attack": "medrobust.attacks",
    "report-attack": "medrobust.attacks",
    "corruption": "medrobust.corruptions",
    "defense": "medrobust.defenses",
}

_REGISTRY: dict[str, dict[str, Any]] = {family: {} for family in FAMILIES}
_loaded = False

T = TypeVar("T")


class RegistryError(KeyError):
    """A name that is not registered, or registered twice."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


def register(family: str, name: str) -> Callable[[T], T]:
    """Decorator: register ``obj`` under ``name`` in ``family``; a duplicate name is an error."""
    if family not in _REGISTRY:
        raise RegistryError(f"unknown component family {family!r}; expected one of {', '.join(FAMILIES)}")

    def deco(obj: T) -> T:
        if name in _REGISTRY[family]:
            raise RegistryError(f"{family} {name!r} is registered twice ({_REGISTRY[family][name]!r} and {obj!r})")
        _REGISTRY[family][name] = obj
        try:
            obj.registry_name = name  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            pass
        return obj

    return deco


def load_all() -> None:
    """Import every component module so that all components are registered."""
    global _loaded
    if _loaded:
        return
    for package_name in dict.fromkeys(_PACKAGES.values()):
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, prefix=package_name + "."):
            importlib.import_module(info.name)
    _loaded = True


def get(family: str, name: str) -> Any:
    """Look up a registered component, naming the known ones when ``name`` is unknown."""
    load_all()
    try:
        return _REGISTRY[family][name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY.get(family, {}))) or "none"
        raise RegistryError(f"unknown {family} {name!r}; registered {family} names: {known}") from None


def names(family: str) -> list[str]:
    """Sorted names registered in ``family``."""
    load_all()
    return sorted(_REGISTRY[family])


def entries() -> list[tuple[str, str]]:
    """Every registered component as ``(family, name)``, families in their canonical order."""
    load_all()
    return [(family, name) for family in FAMILIES for name in sorted(_REGISTRY[family])]
