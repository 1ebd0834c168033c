"""The method registry. Adding a method = one module in this package + one line below."""

from __future__ import annotations

from ..errors import one_of
from .base import Method

_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make `cls` available under `cls.name`."""
    if cls.name in _REGISTRY:
        raise ValueError(f"method {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def get_method(name: str) -> Method:
    if name not in _REGISTRY:
        raise one_of("method", name, method_names())
    return _REGISTRY[name]()


# The registry lines: importing a module registers its method.
from . import fanchuan, finetune, gc, kookmin, neggrad_plus, retrain, salun, scrub, selective, ssd  # noqa: E402,F401
