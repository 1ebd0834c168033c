"""What an unlearning method is: its hyperparameters (default, valid bounds and default search
range side by side) and one `unlearn` call. The runner owns timing, evaluation and reporting.

A method never imports Ray, Optuna or argparse and never touches files: it gets a model (the
original's weights, on the device), the retain and forget parts, resolved hyperparameters and
a context, and changes the model in place.

A method's declaration (name, hparams, ordered, epochs_hparam, uses_forget, check) imports
without torch, so that the command line refuses a bad method or value before torch loads: method
modules import torch and the training helpers inside `unlearn` and the functions it calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from ..config import parse_scalar
from ..errors import UserError, one_of
from ..data.experiment import TrainSpec

if TYPE_CHECKING:  # annotations only: see above
    from torch import nn

    from ..data.parts import Part
    from ..runtime import Runtime


@dataclass(frozen=True)
class HParam:
    """One hyperparameter. `low`/`high`/`log` (or `choices`) is the default search range;
    `min`/`max` are the hard bounds any value must respect (inclusive). `searched=False` keeps
    it fixed at its default in the method's default search space."""

    name: str
    kind: str  # float | int | choice | bool
    default: Any
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()
    min: float | None = None
    max: float | None = None
    searched: bool = True
    help: str = ""

    def coerce(self, value: Any) -> Any:
        """The typed, checked value, or a UserError naming it and what is allowed."""
        where = f"hyperparameter {self.name}"
        if isinstance(value, str) and self.kind != "choice":
            value = parse_scalar(value)
        if self.kind == "choice":
            if value not in self.choices:
                raise one_of(f"value for {where}:", value, self.choices)
            return value
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise UserError(f"{where} must be true or false, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where} must be a number, got {value!r}")
        if self.kind == "int":
            if int(value) != value:
                raise UserError(f"{where} must be an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise UserError(f"{where} = {value!r} is out of range; allowed: {self.bounds_text()}")
        return value

    def bounds_text(self) -> str:
        lo = "-inf" if self.min is None else f"{self.min:g}"
        hi = "inf" if self.max is None else f"{self.max:g}"
        return f"[{lo}, {hi}]"

    def range_text(self) -> str:
        if self.kind == "choice":
            return "{" + ", ".join(map(str, self.choices)) + "}"
        if self.kind == "bool":
            return "{true, false}"
        return f"[{self.low:g}, {self.high:g}]{' log' if self.log else ''}"


def Float(name, default, low, high, *, log=False, min=None, max=None, searched=True, help=""):
    return HParam(name, "float", float(default), float(low), float(high), log, (), min, max, searched, help)


def Int(name, default, low, high, *, log=False, min=None, max=None, searched=True, help=""):
    return HParam(name, "int", int(default), low, high, log, (), min, max, searched, help)


def Choice(name, default, choices, *, searched=True, help=""):
    return HParam(name, "choice", default, choices=tuple(choices), searched=searched, help=help)


@dataclass
class UnlearnData:
    """What a method may see: the retain set, the forget set, and all of D. Never the test split."""

    retain: Part
    forget: Part
    train: Part
    num_classes: int


@dataclass
class Context:
    runtime: Runtime
    batch_size: int  # the training recipe's batch size
    eval_batch_size: int
    recipe: TrainSpec
    new_model: Callable[[], nn.Module]  # a freshly initialised model of the experiment, on the device
    # Called by the method at the end of each epoch: (phase, epoch from 0, logs, evaluate).
    # `evaluate=True` marks a model state worth evaluating and reporting (the runner pauses
    # the unlearning clock while it does so).
    epoch_end: Callable[[str, int, dict, bool], None] = field(default=lambda *a: None)


class Method:
    """Base class of unlearning methods. Subclasses set the class attributes and `unlearn`."""

    name: ClassVar[str]
    hparams: ClassVar[tuple[HParam, ...]]
    # Does the method read the forget set? (finetune and retrain must not)
    uses_forget: ClassVar[bool] = True
    # The integer hyperparameter counting the epochs reported with evaluate=True, i.e. the
    # budget ASHA schedules over; None when the method reports no per-epoch states.
    epochs_hparam: ClassVar[str | None] = None
    # Pairs (a, b) that must satisfy a <= b in every run, and in every search space over them.
    ordered: ClassVar[tuple[tuple[str, str], ...]] = ()

    def check(self, hp: dict) -> None:
        """Constraints between hyperparameters; raise UserError. Subclasses extend it."""
        for a, b in self.ordered:
            if hp[a] > hp[b]:
                raise UserError(f"hyperparameter {a} = {hp[a]!r} exceeds {b} = {hp[b]!r}; allowed: {a} <= {b}")

    def early_stopping_refusal(self, hp: dict, searched: set[str]) -> str | None:
        """Why a scheduler that stops trials on their per-epoch reports (ASHA) cannot judge this
        method at `hp` with `searched` hyperparameters, or None. Subclasses whose result is not
        their last reported state say so."""
        return None

    def unlearn(self, model: nn.Module, data: UnlearnData, hp: dict, ctx: Context) -> dict:
        """Change `model` in place; return statistics worth reporting (numbers)."""
        raise NotImplementedError

    @classmethod
    def hparam(cls, name: str) -> HParam:
        for h in cls.hparams:
            if h.name == name:
                return h
        raise one_of(f"hyperparameter of method {cls.name!r}:", name, [h.name for h in cls.hparams])

    @classmethod
    def defaults(cls) -> dict:
        return {h.name: h.default for h in cls.hparams}

    def resolve(self, *layers: dict) -> dict:
        """Defaults overridden by each mapping in turn (experiment defaults, a config file,
        --set values), type-checked and bounds-checked, then cross-checked by `check`."""
        hp = self.defaults()
        for layer in layers:
            for name, value in (layer or {}).items():
                hp[name] = self.hparam(name).coerce(value)
        self.check(hp)
        return hp
