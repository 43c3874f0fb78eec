"""Config building blocks shared by the study config and the section schemas of the library."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Component(BaseModel):
    """A registered component by ``name`` plus its own parameters (checked against its ``Params``)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    params: dict[str, Any] = {}


def as_component(v: Any) -> Any:
    """Accept ``"pgd"`` or ``{name: pgd, steps: 20}`` (flat) and return ``{name, params}``."""
    if isinstance(v, str):
        return {"name": v}
    if isinstance(v, dict) and "params" not in v and "name" in v:
        return {"name": v["name"], "params": {k: x for k, x in v.items() if k != "name"}}
    return v
