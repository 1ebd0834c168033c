"""The method registry. Adding a method to this package = one module + one line below; a method
from outside it is named `--method package.module:Class`, or declared by an installed package
in the entry-point group `tune_unlearn.methods` (its entry point's name is what `--method`
takes). Either kind is checked by the same contract (contract.py) before it runs."""

from __future__ import annotations

import importlib
from importlib.metadata import EntryPoint, entry_points

from ..errors import UserError, one_of
from .base import Method
from .contract import check_method

ENTRY_POINT_GROUP = "tune_unlearn.methods"

_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make `cls` available under `cls.name`."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"method {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def installed() -> dict[str, EntryPoint]:
    """Methods that installed packages declare (entry-point group tune_unlearn.methods)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def method_names() -> list[str]:
    """The built-in and the installed methods (`module:Class` names are found when asked for)."""
    return sorted(set(_REGISTRY) | set(installed()))


def _external(name: str) -> type[Method]:
    """The class a `module:Class` name or an installed method's entry point names, contract checked."""
    where = f"method {name!r}"
    try:
        if ":" in name:
            module, _, attr = name.partition(":")
            cls = getattr(importlib.import_module(module), attr)
        else:
            cls = installed()[name].load()
    except (ImportError, AttributeError) as exc:
        raise UserError(f"{where} cannot be loaded: {type(exc).__name__}: {exc}") from None
    check_method(cls, where)
    return cls


def get_method(name: str) -> Method:
    if name not in _REGISTRY:
        if ":" not in name and name not in installed():
            raise one_of("method", name, [*method_names(), "(or package.module:Class)"])
        _REGISTRY[name] = _external(name)
    method = _REGISTRY[name]()
    method.name = name  # what runs, configs and results record: for an outside method, how it was found
    return method


# The registry lines: importing a module registers its method.
from . import fanchuan, finetune, gc, kookmin, neggrad_plus, retrain, salun, scrub, selective, ssd  # noqa: E402,F401
