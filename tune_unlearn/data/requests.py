"""Forget requests: the deletion requests a search tunes on and those it holds out.

A request is a forget set and, optionally, another original model of the same experiment:

    seed: 1            forget.seed: another forget set drawn by the same rule
    classes: [3, 5]    forget.classes: other classes (with rule classes; the pool of the others)
    fraction: 0.05     forget.fraction: another share of D
    train_seed: 1      train.seed: another original model (and its own retrained models)

In a search space they are mappings (`requests: [{seed: 0}, {seed: 1}]`, `holdout: [...]`); on
the command line `KEY=VALUE[,KEY=VALUE]` (`--requests seed=0 seed=1 --holdout seed=2
seed=3,train_seed=1`; several classes as `classes=3+5`). Each request is the experiment with
those keys overridden, so it has its own original and retrained models, cached like any other.

A request's label names what differs from the experiment (`seed1`, `class3`, `seed3_train1`):
it prefixes the request's columns in every report, so it is kept to what MLflow accepts in a
metric name (letters, digits, `_ - . /`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping

from ..errors import UserError
from .experiment import Experiment, apply_overrides

# Request key -> the experiment key it overrides
KEYS = {"seed": "forget.seed", "classes": "forget.classes", "fraction": "forget.fraction", "train_seed": "train.seed"}


@dataclass(frozen=True)
class Request:
    """One forget request: experiment overrides (KEYS' targets -> value) and its label."""

    overrides: tuple[tuple[str, Any], ...]  # (experiment key, value), in KEYS order

    @property
    def label(self) -> str:
        values = dict(self.overrides)
        parts = []
        if "forget.classes" in values:
            parts.append("class" + "-".join(str(c) for c in values["forget.classes"]))
        if "forget.seed" in values:
            parts.append(f"seed{values['forget.seed']}")
        if "forget.fraction" in values:
            parts.append(f"frac{values['forget.fraction']:g}")
        if "train.seed" in values:
            parts.append(f"train{values['train.seed']}")
        return "_".join(parts) or "base"

    @property
    def spec(self) -> str:
        """The command line's KEY=VALUE[,KEY=VALUE] (what parse_request reads back)."""
        short = {target: key for key, target in KEYS.items()}
        return ",".join(f"{short[k]}={'+'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in self.overrides)

    def experiment(self, base: Experiment) -> Experiment:
        """The base experiment with this request's keys, validated (a UserError names the request)."""
        try:
            return apply_overrides(base, dict(self.overrides))
        except UserError as exc:
            raise UserError(f"request {self.label}: {exc}") from None


def parse_request(spec: Mapping | str, where: str) -> Request:
    """A request from a space's mapping or a command line's `KEY=VALUE[,KEY=VALUE]`."""
    if isinstance(spec, str):
        items = {}
        for part in spec.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise UserError(f"{where}: a request is KEY=VALUE[,KEY=VALUE] with keys {', '.join(KEYS)}, got {spec!r}")
            items[key.strip()] = value.strip()
        spec = items
    if not isinstance(spec, Mapping) or not spec:
        raise UserError(f"{where}: a request is a mapping with keys {', '.join(KEYS)}, got {spec!r}")
    values = {}
    for key, value in spec.items():
        if key not in KEYS:
            raise UserError(f"{where}: unknown request key {key!r}; allowed: {', '.join(KEYS)}")
        values[KEYS[key]] = _value(key, value, where)
    return Request(tuple((k, values[k]) for k in KEYS.values() if k in values))


def _value(key: str, value: Any, where: str) -> Any:
    try:
        if key == "classes":
            items = value.split("+") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
            classes = [int(str(c).strip()) for c in items]
            if not classes:
                raise ValueError
            return classes
        if key == "fraction":
            return float(value)
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        kind = {"classes": "class numbers (3 or 3+5)", "fraction": "a number"}.get(key, "a whole number")
        raise UserError(f"{where}: request key {key} takes {kind}, got {value!r}") from None


def parse_requests(specs: Iterable[Mapping | str] | None, where: str) -> list[Request]:
    """Requests from a list of specs, each checked; the same request twice is refused."""
    out: list[Request] = []
    for i, spec in enumerate(specs or []):
        request = parse_request(spec, f"{where} [{i + 1}]")
        if request in out:
            raise UserError(f"{where}: request {request.label} is listed twice")
        out.append(request)
    return out


def default_holdout(tuning: list[Request], base: Experiment) -> list[Request]:
    """Two forget sets nobody tuned on (the next two forget seeds, or with class forgetting the
    next two classes not forgotten in any tuning request) and one other original model (the
    first tuning request with the next training seed)."""
    effective = [dict(r.overrides) for r in tuning]
    if base.forget.rule == "classes":
        used = {c for values in effective for c in values.get("forget.classes", base.forget.classes)}
        n_classes = _num_classes(base)
        free = [c for c in range(n_classes) if c not in used][:2] if n_classes else []
        forget = [(("forget.classes", [c]),) for c in free]
    else:
        top = max(values.get("forget.seed", base.forget.seed) for values in effective)
        forget = [(("forget.seed", top + 1),), (("forget.seed", top + 2),)]
    first = dict(effective[0])
    trains = [values.get("train.seed", base.train.seed) for values in effective]
    first["train.seed"] = max(trains) + 1
    other_original = tuple((k, first[k]) for k in KEYS.values() if k in first)
    return [Request(o) for o in forget] + [Request(other_original)]


def _num_classes(exp: Experiment) -> int | None:
    from .datasets import DATASETS

    return DATASETS[exp.dataset.name].num_classes


def request_experiments(base: Experiment, requests: list[Request]) -> list[tuple[str, Experiment]]:
    """(label, experiment) of every request, each validated."""
    return [(r.label, r.experiment(base)) for r in requests]


def base_request(base: Experiment) -> Request:
    """The experiment's own forget request, named by what identifies it (`seed0`, `class3`)."""
    if base.forget.rule == "classes":
        return Request((("forget.classes", list(base.forget.classes)),))
    return Request((("forget.seed", base.forget.seed),))


def _identity(exp: Experiment) -> str:
    """What makes two requests the same models: the experiment, without its name, and with
    class forgetting without the seed and fraction, which choose nothing there."""
    if exp.forget.rule == "classes":
        exp = replace(exp, forget=replace(exp.forget, seed=0, fraction=0.1))
    return repr(replace(exp, name=""))


def check_requests(tuning: list[Request], holdout: list[Request], base: Experiment) -> None:
    """Every request valid, none made twice, and no held-out request one that the search tunes
    on (compared as experiments: `seed=0` is the experiment's own forget seed 0)."""
    made: dict[str, str] = {}
    for kind, requests in (("tuning", tuning), ("held-out", holdout)):
        for label, exp in request_experiments(base, requests):
            if exp.forget.rule != base.forget.rule:
                raise UserError(f"{kind} request {label} changes the forget rule from {base.forget.rule!r} to "
                                f"{exp.forget.rule!r}; every request of a search uses the experiment's rule")
            same = made.get(_identity(exp))
            if same is not None:
                why = "; a held-out request must be one the search never tunes on" if kind == "held-out" else ""
                if base.forget.rule == "classes":
                    why += " (with whole classes forgotten a forget seed chooses nothing: use classes=...)"
                raise UserError(f"{kind} request {label} makes the same forget set and models as {same}{why}")
            made[_identity(exp)] = f"{kind} request {label}"
