"""What every method must be, checked without running it: built-in methods by the contract
tests (tests/test_methods.py runs them too), methods from outside the package when they are
loaded (`--method package.module:Class` or an installed entry point), before any work starts."""

from __future__ import annotations

from ..errors import UserError
from .base import HParam, Method


def contract_problems(cls) -> list[str]:
    """Every way `cls` breaks the contract (an empty list: none)."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        return [f"{cls!r} is not a subclass of tune_unlearn.methods.base.Method"]
    problems = []
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        problems.append("its `name` must be a non-empty string")
    hparams = getattr(cls, "hparams", None)
    if not isinstance(hparams, tuple) or not all(isinstance(h, HParam) for h in hparams):
        return problems + ["its `hparams` must be a tuple of HParam (Float, Int, Choice)"]
    names = [h.name for h in hparams]
    if len(set(names)) != len(names):
        problems.append(f"hyperparameter names repeat: {sorted(n for n in set(names) if names.count(n) > 1)}")
    if cls.unlearn is Method.unlearn:
        problems.append("it does not implement unlearn(model, data, hp, ctx)")
    if cls.epochs_hparam is not None and cls.epochs_hparam not in [h.name for h in hparams if h.kind == "int"]:
        problems.append(f"epochs_hparam {cls.epochs_hparam!r} is not one of its integer hyperparameters")
    for a, b in cls.ordered:
        if a not in names or b not in names:
            problems.append(f"ordered pair ({a}, {b}) names an unknown hyperparameter")
    for h in hparams:
        if not h.searched:
            continue
        if h.kind in ("choice", "bool"):
            if h.kind == "choice" and h.default not in h.choices:
                problems.append(f"{h.name}: default {h.default!r} is not among its choices")
        elif h.low is None or h.high is None or not h.low <= h.default <= h.high:
            problems.append(f"{h.name}: default {h.default!r} outside its search range [{h.low}, {h.high}]")
        elif h.log and h.low <= 0:
            problems.append(f"{h.name}: a log search range must stay above 0, got low {h.low}")
    if not problems:
        try:
            cls().resolve()
        except UserError as exc:
            problems.append(f"its defaults fail its own checks: {exc}")
    return problems


def check_method(cls, where: str) -> None:
    """A UserError naming every broken rule, or nothing."""
    problems = contract_problems(cls)
    if problems:
        raise UserError(f"{where} breaks the method contract: {'; '.join(problems)}")
