"""Search spaces: YAML files in `search_spaces/`, validated completely before Ray starts.

    description: what this space is for
    method: selective              # a registered method
    experiment: digits             # the experiment it applies to by default (--experiment overrides)
    experiment_overrides: {}       # e.g. {forget.fraction: 0.02}
    num_samples: 16                # trials (--num-samples overrides)
    objective:                     # weights of the composite objective (see objective.py)
      {test: 1.0, forget: 1.0, mia: 0.5, time: 0.05, leak: 0.0}
    params:                        # searched hyperparameters
      lam:         {type: loguniform, low: 1.0e-9, high: 1.0e-3}
      decay:       {type: uniform, low: 0.0, high: 0.9}
      ft_epochs:   {type: int, low: 0, high: 4}          # bounds inclusive
      mask_epochs: {type: logint, low: 5, high: 100}
      layer_scope: {type: choice, values: [layer4, layer3+layer4, all, fc]}
    fixed:                         # everything else not at the method's default
      mask_lr: 5.0e-4
    requests: [{seed: 0}, {seed: 1}]   # forget requests tuned on (data/requests.py; default: the experiment's own)
    holdout: [{seed: 2}, {seed: 3, train_seed: 1}]   # never tuned on; [] for none (default: see default_holdout)
    aggregate: mean                # one objective from several requests: mean or worst
    holdout_top: 3                 # the best configurations re-run on the held-out requests (and the defaults)

Rejected with a message listing what is allowed: unknown keys, parameter names the method does
not have, empty or inverted ranges, log ranges touching zero, values outside the method's
bounds, and ranges that let an ordered pair (threshold <= x_init) be violated.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import NamedFiles, from_mapping, read_yaml
from ..errors import UserError, one_of
from ..data.experiment import DEFAULT_EXPERIMENT
from ..methods import get_method
from ..methods.base import HParam, Method
from ..data.requests import Request, parse_requests
from ..evaluation.objective import AGGREGATES, Weights

PARAM_TYPES = ("uniform", "loguniform", "int", "logint", "choice")


@dataclass(frozen=True)
class ParamSpec:
    type: str
    low: float | None = None
    high: float | None = None
    values: tuple[Any, ...] = ()

    def contains(self, value: Any) -> bool:
        if self.type == "choice":
            return value in self.values
        return isinstance(value, (int, float)) and self.low <= value <= self.high

    def bounds(self) -> tuple[Any, Any]:
        """Smallest and largest value this parameter can take (choices: min/max if ordered)."""
        if self.type == "choice":
            return min(self.values), max(self.values)
        return self.low, self.high


@dataclass(frozen=True)
class SpaceFile:
    method: str
    experiment: str = DEFAULT_EXPERIMENT
    description: str = ""
    experiment_overrides: dict = field(default_factory=dict)
    num_samples: int = 16
    objective: dict = field(default_factory=dict)
    params: dict | None = None  # None: the ranges the method declares (its searched ones, less `fixed`)
    fixed: dict = field(default_factory=dict)
    requests: tuple[Any, ...] = ()
    holdout: tuple[Any, ...] | None = None
    aggregate: str = "mean"
    holdout_top: int = 3


@dataclass(frozen=True)
class SearchSpace:
    name: str
    method: str
    experiment: str
    description: str
    experiment_overrides: dict
    num_samples: int
    weights: Weights
    params: dict[str, ParamSpec]
    fixed: dict[str, Any]  # typed values, only those not at the method's default
    requests: tuple[Request, ...] = ()  # tuned on; empty: the experiment's own forget request
    holdout: tuple[Request, ...] | None = None  # held out; None: default_holdout
    aggregate: str = "mean"  # objective.AGGREGATES
    holdout_top: int = 3

    def tune_space(self) -> dict:
        """The searched parameters as Ray Tune domains (OptunaSearch converts them)."""
        from ray import tune

        out = {}
        for name, p in self.params.items():
            if p.type == "uniform":
                out[name] = tune.uniform(p.low, p.high)
            elif p.type == "loguniform":
                out[name] = tune.loguniform(p.low, p.high)
            elif p.type == "int":
                out[name] = tune.randint(int(p.low), int(p.high) + 1)  # Tune's upper bound is exclusive
            elif p.type == "logint":
                out[name] = tune.lograndint(int(p.low), int(p.high) + 1)
            else:
                out[name] = tune.choice(list(p.values))
        return out

    def start_point(self, hparams: dict) -> dict | None:
        """The searched values of `hparams` (a method's resolved defaults) when every one lies
        inside this space: the trial a search runs first. None when one falls outside."""
        point = {name: hparams[name] for name in self.params}
        return point if all(self.params[n].contains(v) for n, v in point.items()) else None

    def max_value(self, name: str, method: Method) -> Any:
        """The largest value `name` can take in this space (searched, fixed or default)."""
        if name in self.params:
            return self.params[name].bounds()[1]
        return self.fixed.get(name, method.hparam(name).default)


SPACE_FILES = NamedFiles("search_spaces", "TUNE_UNLEARN_SPACES", "search-space", "tune_unlearn.search_spaces", "search_spaces")


def available_spaces() -> list[str]:
    return SPACE_FILES.names()


def find_space_file(name_or_path: str) -> Path | None:
    return SPACE_FILES.find(name_or_path)


def load_space(name_or_path: str) -> SearchSpace:
    path = find_space_file(name_or_path)
    if path is None:
        raise one_of("search space", name_or_path, available_spaces())
    raw = from_mapping(SpaceFile, read_yaml(path), path.name)
    return validate_space(raw, path.stem, path.name)


def beside(method: Method) -> Path | None:
    """A method from outside the package: `<its class's name>.yaml` next to its module file."""
    module = sys.modules.get(type(method).__module__)
    if module is None or not getattr(module, "__file__", None) or type(method).__module__.startswith("tune_unlearn."):
        return None
    path = Path(module.__file__).with_name(f"{type(method).name}.yaml")
    return path if path.is_file() else None


def method_space(method_name: str) -> SearchSpace:
    """A method's own space: `search_spaces/<method>.yaml`, or `default.yaml` when that is the
    method's (selective); for a method from outside the package, `<name>.yaml` beside its module
    (its `method:` key may be left out); else the ranges the method declares (searched ones
    searched, the rest at their defaults)."""
    method = get_method(method_name)
    outside = beside(method)
    if outside is not None:
        data = read_yaml(outside)
        if data.get("method", method_name) not in (method_name, type(method).name):
            raise UserError(f"{outside}: method {data['method']!r} is not {method_name!r}")
        raw = from_mapping(SpaceFile, {**data, "method": method_name}, outside.name)
        return validate_space(raw, type(method).name, str(outside))
    if ":" not in method_name and find_space_file(method_name) is not None:
        return load_space(method_name)
    if find_space_file("default") is not None:
        default = load_space("default")
        if default.method == method_name:
            return default
    return validate_space(SpaceFile(method=method_name), method_name, f"method {method_name}")


def _declared_spec(h: HParam) -> dict:
    if h.kind == "choice":
        return {"type": "choice", "values": list(h.choices)}
    if h.kind == "bool":
        return {"type": "choice", "values": [False, True]}
    kind = ("log" if h.log else "") + ("int" if h.kind == "int" else "uniform")
    return {"type": kind, "low": h.low, "high": h.high}


def validate_space(raw: SpaceFile, name: str, where: str) -> SearchSpace:
    method = get_method(raw.method)
    allowed = ", ".join(h.name for h in method.hparams)
    if raw.num_samples < 1:
        raise UserError(f"{where}: num_samples must be >= 1, got {raw.num_samples}")
    params: dict[str, ParamSpec] = {}
    declared = {h.name: _declared_spec(h) for h in method.hparams if h.searched and h.name not in raw.fixed}
    for pname, spec in (declared if raw.params is None else raw.params).items():
        if pname not in {h.name for h in method.hparams}:
            raise UserError(f"{where}: method {method.name!r} has no hyperparameter {pname!r}; allowed: {allowed}")
        params[pname] = _check_param(method.hparam(pname), from_mapping(ParamSpec, spec, f"{where}: params.{pname}"),
                                     f"{where}: params.{pname}")
    fixed = {}
    for pname, value in raw.fixed.items():
        if pname not in {h.name for h in method.hparams}:
            raise UserError(f"{where}: method {method.name!r} has no hyperparameter {pname!r}; allowed: {allowed}")
        if pname in params:
            raise UserError(f"{where}: {pname!r} is both searched (params) and fixed")
        try:
            fixed[pname] = method.hparam(pname).coerce(value)
        except UserError as exc:
            raise UserError(f"{where}: fixed: {exc}") from None
    weights = Weights().updated(raw.objective, f"{where}: objective")
    if raw.aggregate not in AGGREGATES:
        raise one_of(f"aggregate in {where}:", raw.aggregate, AGGREGATES)
    if raw.holdout_top < 1:
        raise UserError(f"{where}: holdout_top must be >= 1, got {raw.holdout_top}")
    holdout = None if raw.holdout is None else tuple(parse_requests(raw.holdout, f"{where}: holdout"))
    space = SearchSpace(name, method.name, raw.experiment, raw.description, dict(raw.experiment_overrides),
                        raw.num_samples, weights, params, fixed, tuple(parse_requests(raw.requests, f"{where}: requests")),
                        holdout, raw.aggregate, raw.holdout_top)
    for a, b in method.ordered:
        a_max = space.max_value(a, method)
        b_min = space.params[b].bounds()[0] if b in space.params else space.fixed.get(b, method.hparam(b).default)
        if a_max > b_min:
            raise UserError(f"{where}: {a} can reach {a_max:g} but {b} can be as low as {b_min:g}; "
                            f"the ranges must keep {a} <= {b}")
    # The fixed values and each range's ends must pass the method's own checks.
    method.resolve(fixed, {p: spec.bounds()[0] for p, spec in params.items()})
    return space


def _check_param(h: HParam, p: ParamSpec, where: str) -> ParamSpec:
    if p.type not in PARAM_TYPES:
        raise one_of(f"type in {where}:", p.type, PARAM_TYPES)
    if p.type == "choice":
        if not p.values:
            raise UserError(f"{where}: a choice needs at least one value")
        if p.low is not None or p.high is not None:
            raise UserError(f"{where}: a choice takes 'values', not low/high")
        return ParamSpec("choice", values=tuple(_coerce(h, v, where) for v in p.values))
    if h.kind not in ("float", "int"):
        raise UserError(f"{where}: {h.name} is a {h.kind} hyperparameter; use type: choice")
    if p.values:
        raise UserError(f"{where}: type {p.type} takes low/high, not values")
    if p.low is None or p.high is None:
        raise UserError(f"{where}: type {p.type} needs both low and high")
    if p.type in ("int", "logint") and h.kind != "int":
        raise UserError(f"{where}: {h.name} is not an integer hyperparameter; use uniform or loguniform")
    if p.type in ("uniform", "loguniform") and h.kind == "int":
        raise UserError(f"{where}: {h.name} is an integer hyperparameter; use int or logint")
    low, high = _coerce(h, p.low, where), _coerce(h, p.high, where)
    if not low < high:
        raise UserError(f"{where}: empty or inverted range [{low}, {high}]; low must be below high")
    if p.type.startswith("log") and low <= 0:
        raise UserError(f"{where}: a log range must stay above zero, got low = {low}")
    return ParamSpec(p.type, low, high)


def _coerce(h: HParam, value: Any, where: str) -> Any:
    try:
        return h.coerce(value)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
