"""Typed configuration from YAML: dataclasses built from mappings, unknown keys rejected.

Every YAML file the project reads (experiments, search spaces, run configs) goes through
`from_mapping`, so a typo is an error that names the key and lists the allowed ones instead of
a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import UserError


class NamedFiles:
    """YAML files a user names without a path (`--experiment digits`, `--space default`):
    looked up in $<env>, ./<folder> and the files shipped inside the package (`package`:
    pyproject.toml maps the repository's folder of them, `source`, into it), in that order."""

    def __init__(self, folder: str, env: str, what: str, package: str, source: str):
        self.folder, self.env, self.what, self.package, self.source = folder, env, what, package, source

    def shipped(self) -> list[Path]:
        """Where the installed package keeps its own files of this kind (a wheel or an
        editable install alike: the import system knows where the package lives)."""
        import importlib.util

        try:
            spec = importlib.util.find_spec(self.package)
        except ModuleNotFoundError:
            spec = None
        if spec:
            return [Path(p) for p in (spec.submodule_search_locations or [])]
        # Not installed (a checkout on PYTHONPATH, as on a GPU machine without pip access): the
        # repository's own folder beside the package.
        checkout = Path(__file__).resolve().parent.parent / self.source
        return [checkout] if checkout.is_dir() else []

    def dirs(self) -> list[Path]:
        dirs = [Path.cwd() / self.folder, *self.shipped()]
        if os.environ.get(self.env):
            dirs.insert(0, Path(os.environ[self.env]))
        unique: list[Path] = []
        for d in dirs:
            if d.resolve() not in [u.resolve() for u in unique]:
                unique.append(d)
        return unique

    def names(self) -> list[str]:
        return sorted({p.stem for d in self.dirs() for p in d.glob("*.yaml")})

    def find(self, name_or_path: str) -> Path | None:
        """The file: a path is taken as it is (an error if missing); a name is looked up, None
        if no folder has it."""
        path = Path(name_or_path)
        if path.suffix in (".yaml", ".yml") or os.sep in name_or_path:
            if not path.is_file():
                raise UserError(f"no such {self.what} file: {name_or_path}")
            return path.resolve()
        for d in self.dirs():
            if (d / f"{name_or_path}.yaml").is_file():
                return (d / f"{name_or_path}.yaml").resolve()
        return None


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing file or a syntax error is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def write_yaml(path: str | Path, data: Mapping) -> None:
    Path(path).write_text(yaml.safe_dump(to_plain(data), sort_keys=False))


def to_plain(value: Any) -> Any:
    """Dataclasses, tuples and numpy scalars to plain YAML/JSON-safe Python values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    return value


def parse_scalar(text: str) -> Any:
    """A command-line value ('1e-7', 'true', 'layer4', '[1, 2]') as YAML would read it, with
    the YAML 1.1 quirk fixed that reads '1e-7' (no dot) as a string."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in "eE.") else int(value)
        except ValueError:
            return value
    return value


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type, or raise a UserError naming `where`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, where)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0])
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, where)
    if origin is tuple:
        (item,) = typing.get_args(hint)[:1]
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        return tuple(coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, str):
            value = parse_scalar(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, str):
            value = parse_scalar(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return value
    if hint is Any:
        return value
    raise TypeError(f"unsupported annotation {hint!r} at {where}")


def from_mapping(cls, data: Mapping | None, where: str):
    """Build dataclass `cls` from `data`: unknown keys and missing required keys are errors."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise UserError(f"{where}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: coerce(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if missing:
        raise UserError(f"{where}: missing required key {missing[0]!r}")
    return cls(**kwargs)


def replace_path(obj, dotted: str, raw_value: Any, where: str, _prefix: str = ""):
    """Return a copy of nested frozen dataclass `obj` with field `a.b.c` set (typed)."""
    head, _, rest = dotted.partition(".")
    fields = {f.name for f in dataclasses.fields(obj)}
    full = _prefix + dotted
    if head not in fields:
        allowed = ", ".join(_prefix + f for f in sorted(fields))
        raise UserError(f"{where}: unknown key {full!r}; allowed: {allowed}")
    current = getattr(obj, head)
    if rest:
        if not dataclasses.is_dataclass(current):
            raise UserError(f"{where}: {_prefix + head!r} has no sub-keys (got {full!r})")
        return dataclasses.replace(obj, **{head: replace_path(current, rest, raw_value, where, f"{_prefix}{head}.")})
    hint = typing.get_type_hints(type(obj))[head]
    return dataclasses.replace(obj, **{head: coerce(raw_value, hint, f"{where} {full}")})
