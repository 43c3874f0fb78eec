"""Typed study configuration: YAML -> validated schema, ``key=value`` overrides, loud errors.

Unknown keys and wrong types are rejected with the dotted key named (DESIGN principle 8). Component
parameters (data source, encoders, methods, attacks) are checked against the ``Params`` schema that each
registered component declares. The resolved config is saved with the study and hashed into run keys.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medrobust.engine.train import FitConfig
from medrobust.evaluation.robustness import EvalConfig
from medrobust.schema import Component, as_component


class ConfigError(ValueError):
    """A study config that cannot be used; the message names the file, the key and what was expected."""


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = "synthetic"
    holdout_sites: list[str] = Field(["D"], description="sites kept out of training; all their images are test images")
    params: dict[str, Any] = {}


class PoolSource(BaseModel):
    """One source of a pre-training pool: a data source spec like ``data`` (``{source: medmnist, path: ...}``,
    ``{source: manifest, path: ..., columns: ...}``, ``{source: synthetic, modality: ultrasound}``) or
    ``{source: target}`` (the study's own training images, without their labels), with an optional sampling
    ``weight`` (the chance that a pre-training step draws its batch from this source is its weight over the sum)
    and ``max_images`` (a fixed seeded subset of the source's training split)."""

    model_config = ConfigDict(extra="forbid")
    source: str
    weight: float = Field(1.0, gt=0, description="relative chance that a step's batch comes from this source")
    max_images: int | None = Field(None, ge=1, description="cap: a fixed seeded subset of its training images")
    params: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {"source": v}
        if isinstance(v, dict) and "params" not in v:
            own = {"source", "weight", "max_images"}
            return {**{k: x for k, x in v.items() if k in own}, "params": {k: x for k, x in v.items() if k not in own}}
        return v

    @property
    def is_target(self) -> bool:
        return self.source == TARGET_SOURCE

    def describe(self) -> str:
        """``synthetic(modality=ultrasound)``, ``medmnist(path=breastmnist_64.npz)``, ``target``."""
        shown = {k: (Path(v).name if k == "path" and isinstance(v, str) else v) for k, v in self.params.items()
                 if k in ("path", "modality", "image_size")}
        return _with_params(self.source, shown)


#: the pool source that stands for the study's own training images
TARGET_SOURCE = "target"


class Arm(Component):
    """A method of the study grid with its parameters, optionally a ``defense`` (a registered defense applied
    when fine-tuning / wrapping the model); ``label_fractions`` / ``seeds`` restrict this arm to those of
    the study's fractions / seeds (e.g. ablations at the sparse-label fraction only); an arm left with none
    is skipped with a message.

    ``inputs``: what the downstream classifier sees at decision time. ``image`` (the default of every method
    but ``supervised-multimodal``): an image+report pre-training arm is evaluated through its image pathway,
    fine-tuned on the labeled images and compared with the supervised image arm (as ConVIRT / GLoRIA evaluate).
    ``image+indication`` (``supervised-multimodal``'s only value): the image with the indication, the text
    written before the image is read; never the report, which is written after reading it and states the
    findings (a label oracle at test time)."""

    label_fractions: list[float] | None = None
    seeds: list[int] | None = None
    defense: Component | None = None
    inputs: Literal["image", "image+indication"] | None = None
    pool: str | None = Field(None, description="pre-train on this pool of pretrain.pools instead of the target's "
                             "training images (pre-training methods only)")

    @property
    def label(self) -> str:
        """``robust-mmr``, ``robust-mmr(domain_weight=0)``, ``supervised + pgd-at``, ``clip [image+indication]``,
        ``simclr @ diverse`` (how tables name the arm)."""
        name = self.base_label
        return name if self.defense is None else f"{name} + {_with_params(self.defense.name, self.defense.params)}"

    @property
    def decides_with_text(self) -> bool:
        """Whether the downstream classifier sees the indication with the image."""
        return self.name == MULTIMODAL_SUPERVISED if self.inputs is None else self.inputs == "image+indication"

    @property
    def base_label(self) -> str:
        """The undefended arm this one is compared with (itself when it has no defense)."""
        return self.target_only_label + (f" @ {self.pool}" if self.pool else "")

    @property
    def target_only_label(self) -> str:
        """The same arm pre-trained on the target's training images (itself when it has no pool): what a pool arm
        is compared with in the report's diversity comparison."""
        name = _with_params(self.name, self.params)
        return name + (" [image+indication]" if self.inputs == "image+indication" and self.name != MULTIMODAL_SUPERVISED
                       else "")


#: the supervised image+text method: its classifier always sees the image with the indication
MULTIMODAL_SUPERVISED = "supervised-multimodal"


def _with_params(name: str, params: dict) -> str:
    return name if not params else f"{name}({', '.join(f'{k}={v}' for k, v in sorted(params.items()))})"


class MultimodalConfig(BaseModel):
    """Image+report arms: the fusion architecture and the downstream tasks beyond classification."""

    model_config = ConfigDict(extra="forbid")
    fusion: Component | None = Field(None, description="e.g. {name: fusion, dim: 64, depth: 1}: image patch and "
                                     "report tokens in one transformer; null = late concatenation of features")
    tasks: list[Literal["retrieval", "vqa"]] = Field([], description="downstream tasks besides classification")
    retrieval_pairs: int = Field(200, ge=10, description="in-site test pairs in the retrieval gallery")
    report_edits: int = Field(2, ge=1, description="words replaced in the perturbed / adversarial report conditions")
    vqa_questions: int = Field(600, ge=10, description="test questions scored per split (fixed subset)")
    task_steps: int | None = Field(None, ge=1, description="fine-tuning steps of retrieval and VQA (default: "
                                   "finetune.steps; batch size and learning rate as finetune)")

    @field_validator("fusion", mode="before")
    @classmethod
    def _fusion(cls, v: Any) -> Any:
        return None if v is None else as_component(v)


class PretrainConfig(FitConfig):
    pair_fraction: float = Field(
        1.0, gt=0, le=1, description="fraction of the training images that have a report (the sparse-pairs "
        "setting): image+text methods pre-train on that seeded subset of the pairs; image-only methods use "
        "every training image")
    pools: dict[str, list[PoolSource]] = Field(
        {}, description="named pre-training pools, e.g. {diverse: [{source: target}, {source: synthetic, modality: "
        "ultrasound}]}; an arm {name: simclr, pool: diverse} pre-trains on one")

    @field_validator("pools")
    @classmethod
    def _pools(cls, v: dict[str, list[PoolSource]]) -> dict[str, list[PoolSource]]:
        for name, sources in v.items():
            if not sources:
                raise ValueError(f"pool {name!r} has no sources; expected a list like [{{source: target}}, "
                                 "{source: synthetic, modality: ultrasound}]")
            if not name or any(c in name for c in " /@[]()"):
                raise ValueError(f"pool name {name!r} must be a plain word (it names files and arms)")
        return v

    def budget(self) -> dict:
        """The optimisation budget that a pre-training's result depends on (not the pools: an arm's own pool goes
        into its key separately, so adding a pool does not re-run the others)."""
        return self.model_dump(exclude={"pools"})


class FinetuneConfig(FitConfig):
    mode: list[Literal["full", "linear", "knn"]] = Field(
        ["full"], description="pre-trained arms: fine-tune all, a linear probe on frozen features, and/or a kNN "
        "probe (no training); one run per mode. Supervised arms always train fully")
    knn_k: int = Field(20, ge=1, description="neighbours of the kNN probe")
    knn_temperature: float = Field(0.07, gt=0, description="vote weight exp(cosine / τ)")
    class_balance: Literal["auto", "oversample", "off"] = Field(
        "auto", description="class-balanced sampling of the labeled examples: oversample repeats each class up to "
        "the largest; auto does so when the rarest class has under half its balanced share (binary: under 25%)")

    @field_validator("class_balance", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:  # YAML reads a bare off / on as a boolean
        return {False: "off", True: "oversample"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("mode", mode="before")
    @classmethod
    def _modes(cls, v: Any) -> Any:
        v = [v] if isinstance(v, str) else v
        if isinstance(v, list) and len(set(v)) != len(v):
            raise ValueError(f"modes must be distinct, got {v}")
        return v


class ExecutorConfig(BaseModel):
    """Where the study's runs execute (study.executors): one after another here (``sequential``), in a pool of
    ``workers`` processes here (``local``), or as submitit jobs (``submitit``: ``cluster: slurm | local | debug``).
    The metrics of a run do not depend on it: every seed comes from the run, each run uses ``threads`` threads."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["sequential", "local", "submitit"] = "sequential"
    workers: int = Field(2, ge=1, description="local: processes at once; submitit: jobs in flight at once")
    threads: int | None = Field(None, ge=1, description="CPU threads per run (default: the study's `threads`, else 1 "
                                                        "for local / submitit)")
    retries: int = Field(1, ge=0, description="a failed job is submitted again this many times, then recorded")
    cluster: Literal["slurm", "local", "debug"] = "slurm"
    partition: str | None = None
    account: str | None = None
    time_min: int = Field(60, ge=1, description="SLURM time limit per job (minutes)")
    gpus_per_job: int = Field(0, ge=0)
    cpus_per_task: int | None = Field(None, ge=1)
    mem_gb: float | None = Field(None, gt=0)
    slurm: dict[str, Any] = Field(default_factory=dict, description="passed through as submitit `slurm_<key>`")


class StudyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "study"
    output_dir: str = Field("results/{name}", description="study folder (store, checkpoints, report); {name} expands")
    data: DataConfig = DataConfig()
    methods: list[Arm] = [Arm(name=m) for m in ("supervised", "supervised-multimodal", "simclr", "clip")]
    label_fractions: list[float] = [0.1, 1.0]
    seeds: list[int] = [0, 1, 2]
    image_encoder: Component = Component(name="cnn")
    text_encoder: Component = Component(name="transformer")
    pretrain: PretrainConfig = PretrainConfig(steps=150, batch_size=256, lr=2e-3)
    finetune: FinetuneConfig = FinetuneConfig(steps=150, batch_size=64, lr=2e-3)
    evaluation: EvalConfig = EvalConfig()
    multimodal: MultimodalConfig = MultimodalConfig()
    device: Literal["cpu", "cuda", "auto"] = "auto"
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: all cores)")
    run_budget_min: float | None = Field(None, gt=0, description="per-run time budget: a run projected over it "
                                         "makes the study say which keys to lower (it cuts nothing)")
    executor: ExecutorConfig = ExecutorConfig()

    @field_validator("data", mode="before")
    @classmethod
    def _data(cls, v: Any) -> Any:
        if isinstance(v, dict) and "params" not in v:
            own = {"source", "holdout_sites"}
            return {**{k: x for k, x in v.items() if k in own}, "params": {k: x for k, x in v.items() if k not in own}}
        return v

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, v: Any) -> Any:
        if isinstance(v, (str, dict)):
            v = [v]
        if not isinstance(v, list):
            return v
        out = []
        for m in v:
            own = {}
            if isinstance(m, dict) and "params" not in m:
                m = dict(m)
                own = {k: m.pop(k) for k in ("label_fractions", "seeds", "defense", "inputs", "pool") if k in m}
                if own.get("defense") is not None:
                    own["defense"] = as_component(own["defense"])
            m = as_component(m)
            out.append({**m, **own} if isinstance(m, dict) else m)
        return out

    @field_validator("image_encoder", "text_encoder", mode="before")
    @classmethod
    def _encoders(cls, v: Any) -> Any:
        return as_component(v)

    @field_validator("label_fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        bad = [f for f in v if not 0 < f <= 1]
        if bad or not v:
            raise ValueError(f"label fractions must lie in (0, 1], got {v}")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"seeds must be a non-empty list of distinct integers, got {v}")
        return v

    @property
    def study_dir(self) -> Path:
        return Path(self.output_dir.format(name=self.name))


# ---------------------------------------------------------------- loading, overrides, errors


def load_config(path: str | Path | None, overrides: list[str] = ()) -> StudyConfig:
    """Read a YAML study config (or the defaults when ``path`` is None), apply ``key=value`` overrides."""
    raw: dict[str, Any] = {}
    where = "defaults" if path is None else str(path)
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {p} must hold a mapping of keys, got {type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item)
    return validate(raw, where)


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` in ``raw``; the value is parsed as YAML (``seeds=[0,1]``, ``finetune.steps=5``)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like key=value (e.g. finetune.steps=50)")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {exc}") from None
    node = raw
    parts = key.strip().split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: '{'.'.join(parts[: i + 1])}' is not a section of keys")
        node = child
    node[parts[-1]] = value


def validate(raw: dict[str, Any], where: str = "config") -> StudyConfig:
    try:
        cfg = StudyConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: " + "; ".join(_describe(e, StudyConfig) for e in exc.errors())) from None
    _check_components(cfg, where)
    return cfg


def _check_components(cfg: StudyConfig, where: str) -> None:
    from medrobust import registry

    checks = [("data", "data", cfg.data.source, cfg.data.params),
              ("image_encoder", "encoder", cfg.image_encoder.name, cfg.image_encoder.params),
              ("text_encoder", "encoder", cfg.text_encoder.name, cfg.text_encoder.params)]
    checks += [(f"methods[{i}]", "method", m.name, m.params) for i, m in enumerate(cfg.methods)]
    checks += [(f"methods[{i}].defense", "defense", m.defense.name, m.defense.params)
               for i, m in enumerate(cfg.methods) if m.defense is not None]
    if cfg.multimodal.fusion is not None:
        checks.append(("multimodal.fusion", "encoder", cfg.multimodal.fusion.name, cfg.multimodal.fusion.params))
    checks += [(f"evaluation.attacks[{i}]", "attack", a.name, a.params) for i, a in enumerate(cfg.evaluation.attacks)]
    checks += [(f"evaluation.worst_case[{i}]", "attack", a.name, a.params)
               for i, a in enumerate(cfg.evaluation.sequence())]
    checks += [(f"evaluation.report_attacks[{i}]", "report-attack", a.name, a.params)
               for i, a in enumerate(cfg.evaluation.report_attacks)]
    if cfg.evaluation.corruptions != "auto":
        checks += [(f"evaluation.corruptions[{i}]", "corruption", c, None)
                   for i, c in enumerate(cfg.evaluation.corruptions)]
    for key, family, name, params in checks:
        try:
            component = registry.get(family, name)
        except registry.RegistryError as exc:
            raise ConfigError(f"{where}: '{key}': {_misplaced_attack(registry, family, name) or exc}") from None
        if params is not None:
            try:
                component.Params.model_validate(params)
            except ValidationError as exc:
                prefix = key if family != "data" else "data"
                raise ConfigError(f"{where}: " + "; ".join(_describe(e, component.Params, prefix) for e in exc.errors())) from None
    _check_pools(cfg, where, registry)
    names = [m.label for m in cfg.methods]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: 'methods' lists an arm twice (same method and parameters): {names}")


def _check_pools(cfg: StudyConfig, where: str, registry) -> None:
    """Pool sources are registered data sources with valid params; an arm's pool exists and it pre-trains; a pool
    source is not the target's own data (its training split holds the held-out sites: use ``{source: target}``)."""
    from medrobust.methods.contract import info_of

    for name, sources in cfg.pretrain.pools.items():
        for i, src in enumerate(sources):
            key = f"pretrain.pools.{name}[{i}]"
            if src.is_target:
                if src.params:
                    raise ConfigError(f"{where}: '{key}': the target source takes no parameters (it is the study's "
                                      f"own training split), got {sorted(src.params)}")
                continue
            try:
                component = registry.get("data", src.source)
                component.Params.model_validate(src.params)
            except registry.RegistryError as exc:
                raise ConfigError(f"{where}: '{key}': {exc}; or 'target' for the study's own training images") from None
            except ValidationError as exc:
                raise ConfigError(f"{where}: " + "; ".join(_describe(e, component.Params, key) for e in exc.errors())) from None
            if src.source == cfg.data.source and component.Params.model_validate(src.params) == \
                    component.Params.model_validate(cfg.data.params):
                raise ConfigError(f"{where}: '{key}' is the study's own data ({src.describe()}); its training split "
                                  "includes the held-out sites. Use {source: target} for the target's training images")
    for i, m in enumerate(cfg.methods):
        if m.pool is None:
            continue
        if m.pool not in cfg.pretrain.pools:
            have = ", ".join(sorted(cfg.pretrain.pools)) or "none (define pretrain.pools)"
            raise ConfigError(f"{where}: 'methods[{i}].pool': pool {m.pool!r} of {m.name} is not defined; pools: {have}")
        if not info_of(registry.get("method", m.name)).pretrains:
            raise ConfigError(f"{where}: 'methods[{i}].pool': {m.name} does not pre-train (it trains on the target's "
                              "sparse labels only); give pools to pre-training methods, e.g. simclr, or "
                              "supervised-multitask for supervised pre-training on the pool's labels")
    for i, m in enumerate(cfg.methods):
        if m.pool is None and info_of(registry.get("method", m.name)).role == "supervised-pretraining":
            raise ConfigError(f"{where}: 'methods[{i}]': {m.name} pre-trains on a pool's labels; name one with "
                              f"pool: (pools: {', '.join(sorted(cfg.pretrain.pools)) or 'none defined'})")


def _misplaced_attack(registry, family: str, name: str) -> str | None:
    """Why an image attack listed as a report attack (or the other way round) is wrong, and where it belongs."""
    other = {"attack": "report-attack", "report-attack": "attack"}.get(family)
    if other is None or name not in registry.names(other):
        return None
    if other == "attack":
        return f"{name} is an image attack (it attacks the image); list it under evaluation.attacks or worst_case"
    joint = getattr(registry.get(other, name), "target", "") == "joint"
    what = "image and report together" if joint else "the report text"
    return f"{name} is a report-attack (it attacks {what}); list it under evaluation.report_attacks"


def _describe(error: dict, model: type[BaseModel], prefix: str = "") -> str:
    loc = [str(p) for p in error["loc"] if p not in ("params",)]
    key = ".".join(([prefix] if prefix else []) + loc)
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, [p for p in error["loc"][:-1]])
        hint = f" (allowed keys: {', '.join(allowed)})" if allowed else ""
        return f"unknown key '{key}'{hint}"
    return f"'{key}': {error['msg']} (got {error.get('input')!r})"


def _allowed_keys(model: type[BaseModel], path: list) -> list[str]:
    """Field names of the (nested) model that ``path`` leads to, for the 'unknown key' hint."""
    current: Any = model
    for part in path:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return []
        current = _model_of(current.model_fields[part].annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [k for k in current.model_fields if k != "params"]
    return []


def _model_of(annotation: Any) -> Any:
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
        inner = _model_of(arg) if typing.get_args(arg) else None
        if inner is not None:
            return inner
    return None


def dump(cfg: StudyConfig) -> str:
    """The resolved config as YAML (saved with the study and shown in the report)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
