"""Expand a study config into its grid of runs, each with a content hash as its key.

A run's key hashes everything that determines its result (data, encoders, method and its parameters,
label fraction, seed, training budgets, evaluation), so a finished run is found again after a restart
and any change to what it depends on makes a new run rather than reusing a stale one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from medrobust import registry
from medrobust.config import MULTIMODAL_SUPERVISED, Arm, ConfigError, StudyConfig
from medrobust.methods.contract import info_of

# bump when a change to the code changes results for the same config. 3: a self-supervised run's modules are
# always loaded from its pre-training checkpoint, so a run that pre-trained gives what a cached one gives.
# 4: the supervised objective augments its batches by default (a stored supervised run trained without)
# 5: classifiers see the indication, never the report; the synthetic data has indications (reports changed)
PROTOCOL_VERSION = 5


def _canonical(obj):
    """Integral floats as ints, tuples as lists: ``128`` and ``128.0`` (YAML round trip) hash alike."""
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)
    return obj


def digest(obj) -> str:
    """Content hash of a JSON-like object, stable across a YAML dump and reload of the config."""
    return hashlib.sha256(json.dumps(_canonical(obj), sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunSpec:
    method: Arm
    fraction: float
    seed: int
    key: str
    pretrain_key: str | None  # cache key of the pre-trained encoders (self-supervised arms)
    mode: str = "full"  # full fine-tuning, linear probe or kNN probe (self-supervised arms)

    @property
    def arm(self) -> str:
        """How the report names the arm: ``simclr``, ``simclr [linear]``, ``supervised + pgd-at``."""
        return self.method.label + ("" if self.mode == "full" else f" [{self.mode}]")

    @property
    def label(self) -> str:
        return f"{self.arm} | {self.fraction * 100:g}% labels | seed {self.seed}"


def check_inputs(method: Arm) -> None:
    """Reject an ``inputs`` the method cannot have (the message names the arm and what it can be)."""
    info = info_of(registry.get("method", method.name))
    if method.name == MULTIMODAL_SUPERVISED and method.inputs == "image":
        raise ConfigError(f"methods: {method.name} with inputs: image is the supervised image arm; use "
                          "'supervised' (supervised-multimodal always sees the image with the indication)")
    if method.decides_with_text and not info.uses_text:
        raise ConfigError(f"methods: {method.label} has inputs: image+indication but {method.name} trains no text "
                          "encoder; expected inputs: image (or an image+text method)")


def expand(cfg: StudyConfig, has_text: bool, has_indications: bool = False) -> tuple[list[RunSpec], list[dict]]:
    """The runs of the grid (seed-major, so early seeds complete first) and the arms skipped, with reasons.

    ``has_text``: the data has reports (image+text pre-training); ``has_indications``: it has the text a
    classifier may see with the image (arms whose classifier sees it need it)."""
    common = {"v": PROTOCOL_VERSION, "data": cfg.data.model_dump(), "image_encoder": cfg.image_encoder.model_dump(),
              "text_encoder": cfg.text_encoder.model_dump()}
    runs, skipped = [], []
    for method in cfg.methods:
        info = info_of(registry.get("method", method.name))
        check_inputs(method)
        if info.uses_text and not has_text:
            skipped.append({"method": method.label, "reason": "needs image-report pairs but the data set has no "
                            "report text; it is skipped (image-only methods still run)"})
        elif method.decides_with_text and not has_indications:
            skipped.append({"method": method.label, "reason": "its classifier sees the image with the indication "
                            "(the text written before the image is read), which the data set does not have; a "
                            "classifier never sees the report (written after reading the image, it states the "
                            "findings). Name an 'indication' column in the manifest"})
        fractions = [f for f in cfg.label_fractions if method.label_fractions is None or f in method.label_fractions]
        seeds = [x for x in cfg.seeds if method.seeds is None or x in method.seeds]
        if not fractions or not seeds:
            skipped.append({"method": method.label, "reason": f"its label_fractions {method.label_fractions} / seeds "
                            f"{method.seeds} share none with the study's {cfg.label_fractions} / {cfg.seeds}"})
    skip = {s["method"] for s in skipped}
    for seed in cfg.seeds:
        for method in cfg.methods:
            if method.label in skip or (method.seeds is not None and seed not in method.seeds):
                continue
            info = info_of(registry.get("method", method.name))
            arm = {"name": method.name, "params": method.params,
                   "inputs": "image+indication" if method.decides_with_text else "image",
                   **({"defense": method.defense.model_dump()} if method.defense is not None else {})}
            multimodal = cfg.multimodal.model_dump() if info.uses_text else None
            fusion = (multimodal and multimodal["fusion"]) or {"name": "fusion", "params": {}}
            pretrain_key = None
            if info.pretrains:
                budget = cfg.pretrain.budget()
                if not info.uses_text:
                    budget.pop("pair_fraction")  # image-only: every image, no pairs
                pool = None if method.pool is None else [s.model_dump() for s in cfg.pretrain.pools[method.pool]]
                pretrain_key = digest({**common, "method": {"name": method.name, "params": method.params},
                                       "seed": seed, "pretrain": budget,
                                       **({"fusion": fusion} if info.uses_fusion else {}),
                                       **({"pool": pool} if pool is not None else {})})
            modes = cfg.finetune.mode if info.pretrains else ["full"]
            if info.uses_text and "knn" in modes:
                modes = [m for m in modes if m != "knn"]
                if seed == cfg.seeds[0]:
                        skipped.append({"method": f"{method.label} [knn]", "reason": "the kNN probe is image-only; "
                                    "the image+report arm runs its other fine-tuning modes"})
            if method.defense is not None and "knn" in modes:  # a kNN probe would bypass the defended model
                modes = [m for m in modes if m != "knn"]
                if seed == cfg.seeds[0]:
                    skipped.append({"method": f"{method.label} [knn]", "reason": "a kNN probe on the encoder's "
                                    "features would bypass the defense; the defended arm runs its other modes"})
            finetune = cfg.finetune.model_dump(exclude={"mode"})
            for fraction in [f for f in cfg.label_fractions if method.label_fractions is None
                             or f in method.label_fractions]:
                for mode in modes:
                    key = digest({**common, "method": arm, "fraction": fraction, "seed": seed, "mode": mode,
                                  "pretrain": pretrain_key, "finetune": finetune,
                                  "evaluation": cfg.evaluation.model_dump(),
                                  **({"multimodal": multimodal} if multimodal else {})})
                    runs.append(RunSpec(method, fraction, seed, key, pretrain_key, mode))
    return runs, skipped
