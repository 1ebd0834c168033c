"""Experiments: what data, which model, which forget set, which training recipe.

An experiment is a YAML file: one that ships with the package (the repository's
`experiments/settings/`, installed as tune_unlearn.experiment_settings), one in ./experiments/,
or any path. Everything that determines the cached original and retrained models is in here, so
the cache key is derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ..config import NamedFiles, from_mapping, read_yaml, replace_path
from ..errors import UserError, one_of

@dataclass(frozen=True)
class DatasetSpec:
    name: str  # digits | fmnist | cifar10 | cifar100 | imagenet100
    root: str | None = None  # None: the data set's default place (see datasets.DATASETS)
    image_size: int | None = None  # imagenet100: side of the square crop fed to the model
    test_fraction: float = 0.3  # digits only: it has no official test split
    # The validation split: this fraction of the test split (official, or carved as above),
    # stratified by class and seeded by `val_seed`. Trials are scored on it; the test split is
    # kept for final numbers. No model ever trains on either, so the training data stays as in
    # the literature.
    val_fraction: float = 0.5
    val_seed: int = 0
    workers: int = 8  # imagenet100: DataLoader worker processes


@dataclass(frozen=True)
class ModelSpec:
    arch: str = "resnet18"
    width: int = 64  # channels of the first stage; 64 is the standard ResNet-18
    small_input: bool = True  # 3x3 stride-1 stem and no max-pool, for 8-32 px images


# How the forget set is chosen (forget_rules.py). The corrective rules change D itself: the
# forget samples are training data later found to be wrong, so the original depends on them.
FORGET_RULES = ("random", "classes", "mislabeled", "backdoor")
CORRECTIVE_RULES = ("mislabeled", "backdoor")
TRIGGER_CORNERS = ("bottom_right", "bottom_left", "top_right", "top_left")


@dataclass(frozen=True)
class TriggerSpec:
    """The backdoor's trigger (BadNets): a `size` x `size` patch in a corner of the image, every
    channel set to `value` (pixels in [0, 1], before normalisation)."""

    size: int = 2
    corner: str = "bottom_right"
    value: float = 1.0


@dataclass(frozen=True)
class ForgetSpec:
    """random: a seeded `fraction` of D. classes: every sample of `classes`. mislabeled: a seeded
    `fraction` of D (drawn from `classes` when given) carries a wrong label, uniform over the other
    classes. backdoor: a seeded `fraction` of D (drawn from `classes` when given, else from every
    class but `target`) carries the trigger and the label `target`; the forget set is the
    `identified` share of those samples, the rest stay in the retain set."""

    rule: str = "random"  # one of FORGET_RULES
    fraction: float = 0.1  # share of D (random, mislabeled, backdoor)
    classes: tuple[int, ...] = ()  # classes: the forgotten classes; mislabeled, backdoor: where samples are drawn
    seed: int = 0  # seeds the choice of the forget set (and the wrong labels) only
    target: int = 0  # backdoor: the label the trigger calls for
    identified: float = 1.0  # backdoor: share of the poisoned samples the forget set holds, in (0, 1]
    trigger: TriggerSpec = field(default_factory=TriggerSpec)

    @property
    def corrective(self) -> bool:
        """The rule changes D (labels, images): the original model trains on the forget set as
        the rule made it, so it depends on the rule and its seed."""
        return self.rule in CORRECTIVE_RULES

    def describe(self, seed: bool = True) -> str:
        """The forget set in words, for tables and titles (`seed`: name the forget seed)."""
        share = f"{100 * self.fraction:g}%"
        seeded = f" (forget seed {self.seed})" if seed else ""
        pool = f" of classes {list(self.classes)}" if self.classes else ""
        if self.rule == "classes":
            return f"classes {list(self.classes)}"
        if self.rule == "mislabeled":
            return f"{share} of D mislabeled{pool}{seeded}"
        if self.rule == "backdoor":
            t = self.trigger
            known = "" if self.identified == 1 else f", {100 * self.identified:g}% of them identified"
            return (f"{share} of D{pool} poisoned with a {t.size}x{t.size} {t.corner.replace('_', '-')} trigger to "
                    f"class {self.target}{known}{seeded}")
        return f"a random {share}{seeded}"

    def measures(self) -> tuple[str, ...]:
        """The measures this rule adds to every evaluation (metrics.py): the forget set's
        accuracy on its true labels, and the attack success rate of a trigger."""
        return {"mislabeled": ("forget_true_acc",), "backdoor": ("forget_true_acc", "asr")}.get(self.rule, ())


@dataclass(frozen=True)
class TrainSpec:
    """The recipe of the original and the retrained model (SGD, one-cycle schedule)."""

    epochs: int = 20
    batch_size: int = 512
    lr: float = 0.1  # peak of the one-cycle schedule
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    crop_padding: int = 4  # random crop after zero padding; 0 turns it off
    flip: bool = True  # random horizontal flip
    seed: int = 0  # seeds initialisation and batch order
    # How the original model is made. joint: the recipe on all of D. transfer (Disposable
    # Transfer Learning's setting, with forget.rule classes): the recipe on the forget classes
    # (the source task), then `transfer_epochs` at peak `transfer_lr` on the retain classes
    # (the target task). The retrained reference is the target task trained alone either way.
    original: str = "joint"
    transfer_epochs: int = 5
    transfer_lr: float = 0.02


@dataclass(frozen=True)
class EvalSpec:
    batch_size: int = 2048
    mia_seed: int = 0  # seeds the attack's sub-sampling and cross-validation folds


@dataclass(frozen=True)
class LeakageSpec:
    """The Piggyback relearning attack (leakage.py): a mask learned without L1 on a fixed
    `fraction` of D_f for `epochs`, scored on the rest of D_f."""

    fraction: float = 0.5
    epochs: int = 5
    lr: float = 1e-3  # Adam on the mask
    head_lr: float = 1e-2  # Adam on the new classifier
    batch_size: int = 128
    x_init: float = 1e-2
    threshold: float = 5e-3
    seed: int = 0


@dataclass(frozen=True)
class Experiment:
    name: str
    dataset: DatasetSpec
    description: str = ""
    model: ModelSpec = field(default_factory=ModelSpec)
    forget: ForgetSpec = field(default_factory=ForgetSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    leakage: LeakageSpec = field(default_factory=LeakageSpec)
    # Per-method hyperparameter defaults for this experiment: {method: {name: value}}.
    method_defaults: dict = field(default_factory=dict)
    # How many retrained models (training seeds train.seed, train.seed + 1, ...) make the target
    # an unlearning is scored against; each is cached on its own, so K can grow.
    retrained_models: int = 3


# What run, compare and the default search space use unless told otherwise: an embedded
# experiment where forgetting shows sample by sample (10% of the labels wrong: the original
# memorises them, retrained models never do; a random 10% of digits is within noise, and a
# whole class is undone by resetting one row of the classifier).
DEFAULT_EXPERIMENT = "digits_mislabeled"

EXPERIMENT_FILES = NamedFiles("experiments", "TUNE_UNLEARN_EXPERIMENTS", "experiment", "tune_unlearn.experiment_settings",
                              "experiments/settings")


def available_experiments() -> list[str]:
    return EXPERIMENT_FILES.names()


def find_experiment_file(name_or_path: str) -> Path:
    path = EXPERIMENT_FILES.find(name_or_path)
    if path is None:
        raise one_of("experiment", name_or_path, available_experiments() or ["(none found)"])
    return path


def load_experiment(name_or_path: str, overrides: dict | None = None) -> Experiment:
    """Read, override (dotted keys such as 'forget.fraction') and validate an experiment."""
    path = find_experiment_file(name_or_path)
    exp = from_mapping(Experiment, read_yaml(path), str(path.name))
    return apply_overrides(exp, overrides or {})


def apply_overrides(exp: Experiment, overrides: dict) -> Experiment:
    corrective = exp.forget.corrective
    for key, value in overrides.items():
        exp = replace_path(exp, key, value, "experiment override")
    # --forget-classes / --forget-fraction switch between the random and the classes rule; under a
    # corrective rule they set its pool of classes and its share of D.
    if "forget.rule" not in overrides and not corrective:
        if overrides.get("forget.classes") is not None:
            exp = replace(exp, forget=replace(exp.forget, rule="classes"))
        if overrides.get("forget.fraction") is not None:
            exp = replace(exp, forget=replace(exp.forget, rule="random"))
    validate_experiment(exp)
    return exp


def validate_experiment(exp: Experiment) -> None:
    from .datasets import DATASETS

    where = f"experiment {exp.name!r}"
    if exp.dataset.name not in DATASETS:
        raise one_of(f"data set in {where}:", exp.dataset.name, DATASETS)
    if exp.model.arch != "resnet18":
        raise one_of(f"model arch in {where}:", exp.model.arch, ["resnet18"])
    if exp.model.width < 1:
        raise UserError(f"{where}: model.width must be >= 1, got {exp.model.width}")
    validate_forget(exp.forget, exp, where)
    train = exp.train
    for name in ("epochs", "batch_size"):
        if getattr(train, name) < 1:
            raise UserError(f"{where}: train.{name} must be >= 1, got {getattr(train, name)}")
    if train.lr <= 0:
        raise UserError(f"{where}: train.lr must be > 0, got {train.lr}")
    if train.original not in ("joint", "transfer"):
        raise one_of(f"train.original in {where}:", train.original, ["joint", "transfer"])
    if train.original == "transfer" and exp.forget.rule != "classes":
        raise UserError(f"{where}: train.original 'transfer' pretrains on the forget classes; it needs forget.rule classes")
    if train.transfer_epochs < 1 or train.transfer_lr <= 0:
        raise UserError(f"{where}: train.transfer_epochs must be >= 1 and train.transfer_lr > 0")
    leak = exp.leakage
    if not 0.0 < leak.fraction < 1.0 or leak.epochs < 1 or leak.lr <= 0 or leak.head_lr <= 0 or leak.batch_size < 1:
        raise UserError(f"{where}: leakage needs 0 < fraction < 1, epochs >= 1, lr > 0, head_lr > 0, batch_size >= 1")
    if not 0 < leak.threshold <= leak.x_init:
        raise UserError(f"{where}: leakage needs 0 < threshold <= x_init")
    if not 0.0 < exp.dataset.test_fraction < 1.0:
        raise UserError(f"{where}: dataset.test_fraction must lie in (0, 1), got {exp.dataset.test_fraction}")
    if not 0.0 < exp.dataset.val_fraction < 1.0:
        raise UserError(f"{where}: dataset.val_fraction must lie in (0, 1), got {exp.dataset.val_fraction}")
    if exp.retrained_models < 1:
        raise UserError(f"{where}: retrained_models must be >= 1, got {exp.retrained_models}")
    if exp.eval.batch_size < 1:
        raise UserError(f"{where}: eval.batch_size must be >= 1")
    if not isinstance(exp.method_defaults, dict) or not all(
        isinstance(v, dict) for v in exp.method_defaults.values()
    ):
        raise UserError(f"{where}: method_defaults must map method names to mappings")


def validate_forget(forget: ForgetSpec, exp: Experiment, where: str) -> None:
    """The forget rule's settings, checked before any data loads (ImageFolder trees, whose
    classes are known only once read, check the classes again then: data.py)."""
    from .datasets import DATASETS

    info = DATASETS[exp.dataset.name]
    n_classes = info.num_classes
    if forget.rule not in FORGET_RULES:
        raise one_of(f"forget rule in {where}:", forget.rule, FORGET_RULES)
    if forget.rule != "classes" and not 0.0 < forget.fraction < 1.0:
        raise UserError(f"{where}: forget fraction must lie in (0, 1), got {forget.fraction}")
    if forget.rule == "classes" and not forget.classes:
        raise UserError(f"{where}: forget rule 'classes' needs at least one class")
    if n_classes is not None:
        bad = [c for c in forget.classes if not 0 <= c < n_classes]
        if bad:
            raise UserError(f"{where}: forget class {bad[0]} does not exist; allowed: 0..{n_classes - 1}")
        if forget.rule == "classes" and len(set(forget.classes)) >= n_classes:
            raise UserError(f"{where}: cannot forget every class")
    if forget.rule != "backdoor":
        return
    if n_classes is None:
        raise UserError(f"{where}: forget rule 'backdoor' stamps its trigger on in-memory images; allowed data sets: "
                        + ", ".join(name for name, d in DATASETS.items() if d.num_classes is not None))
    if not 0 <= forget.target < n_classes:
        raise UserError(f"{where}: backdoor target class {forget.target} does not exist; allowed: 0..{n_classes - 1}")
    if forget.target in forget.classes:
        raise UserError(f"{where}: backdoor classes (where poisoned samples are drawn) must not include the target "
                        f"class {forget.target}")
    if not 0.0 < forget.identified <= 1.0:
        raise UserError(f"{where}: forget.identified must lie in (0, 1], got {forget.identified}")
    trigger = forget.trigger
    side = exp.dataset.image_size or info.side
    if not 1 <= trigger.size <= side:
        raise UserError(f"{where}: forget.trigger.size must lie in 1..{side} (the image side), got {trigger.size}")
    if trigger.corner not in TRIGGER_CORNERS:
        raise one_of(f"forget.trigger.corner in {where}:", trigger.corner, TRIGGER_CORNERS)
    if not 0.0 <= trigger.value <= 1.0:
        raise UserError(f"{where}: forget.trigger.value must lie in [0, 1], got {trigger.value}")
