"""Build typed run records and study facts from the compact dicts the report tests write.

The tests describe a run in the previous (dict) record layout with only the fields they need; this fills the
rest with neutral defaults and converts it with :meth:`RunRecord.from_legacy`, the same path that reads a store
written by the previous version.
"""

from medrobust.record import RunRecord, StudyFacts


def record(d: dict) -> RunRecord:
    """``metrics`` may hold ``per_example`` (the typed field; the previous layout had none)."""
    d = dict(d)
    d.setdefault("key", f"{d['method']}-{d.get('fraction')}-{d.get('seed')}")
    d.setdefault("kind", "self-supervised" if d.get("counterpart") else "supervised")
    metrics = dict(d.get("metrics") or {})
    metrics.setdefault("clean", {"acc": float("nan")})
    per_example = metrics.pop("per_example", None)
    d["metrics"] = metrics
    r = RunRecord.from_legacy(d)
    newer = {k: d[k] for k in ("task_counterpart", "pretrained_on") if k in d}  # fields the dict layout lacked
    if newer:
        r = r.model_copy(update=newer)
    if per_example:
        r = r.model_copy(update={"metrics": r.metrics.model_copy(update={"per_example": per_example})})
    return r


def records(ds) -> list[RunRecord]:
    return [record(d) for d in ds]


def facts(d: dict | None = None) -> StudyFacts:
    """``StudyFacts`` from a dict that may name the arms ``methods`` (as the tests' setups do)."""
    d = dict(d or {})
    if "methods" in d:
        d["arms"] = d.pop("methods")
    return StudyFacts(**d)
