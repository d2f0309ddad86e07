"""Name -> component registries, and the errors a user can fix.

A YAML section such as ``model: {type: resnet1d, dropout: 0.2}`` is built by
``MODELS.build(section, "model", in_leads=12, num_classes=5)``: ``type`` picks the
registered class or function, the remaining keys must be arguments of it, and
the keyword arguments passed by the caller are facts derived from the data,
which a user must not set.
"""
from __future__ import annotations

import collections.abc
import difflib
import inspect
import logging
import typing
from typing import Any, Callable, Iterable


log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A mistake in a config file, an override or a command-line argument."""


class DataError(ValueError):
    """Files that are missing, malformed, inconsistent with the config or cannot be written:
    datasets, checkpoints, run and report folders."""


def hint(word: Any, choices: Iterable[str]) -> str:
    """'; did you mean 'x'?' when a close match exists, else the list of valid choices."""
    choices = sorted(str(c) for c in choices)
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f"; choose from: {', '.join(choices)}" if choices else ""


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:      # e.g. int | Literal["auto"]: "int or 'auto'"
        return " or ".join(map(repr, typing.get_args(annotation)))
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def check_type(value: Any, annotation: Any, where: str) -> Any:
    """Validate ``value`` against a type annotation and return it (ints widen to float).

    PyYAML reads ``1e-3`` as a string (YAML 1.1), so a string that parses as a
    number is accepted where a float is expected.
    """
    if annotation is inspect.Parameter.empty or annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        errors = []
        for option in args:
            try:
                return check_type(value, option, where)
            except ConfigError as err:
                errors.append(err)
        wanted = " or ".join("null" if a is type(None) else _type_name(a) for a in args)
        raise ConfigError(f"{where}: expected {wanted}, got {value!r}")
    if origin is typing.Literal:
        if isinstance(value, bool) and ("on" if value else "off") in args:
            return "on" if value else "off"     # YAML 1.1 reads on/off (and yes/no) as booleans
        if value in args:
            return value
        raise ConfigError(f"{where}: {value!r} is not allowed{hint(value, map(str, args))}")
    if annotation is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin in (list, tuple, collections.abc.Sequence) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_type = args[0] if args else Any
        return [check_type(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
    else:
        return value
    raise ConfigError(f"{where}: expected {_type_name(annotation)}, got {value!r}")


class Registry:
    """Maps names used in YAML to classes or factory functions of one kind."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable] = {}
        self._renamed: dict[str, dict[str, str]] = {}
        self._warned: set[tuple[str, str, str]] = set()

    def register(self, name: str | None = None, renamed: dict[str, str] | None = None):
        """``renamed``: {old setting: new setting} of settings renamed since configs were written with
        the old names (user YAML, --opts, the config.yaml and checkpoints of earlier runs); ``resolve``
        reads an old name as the new one, with a deprecation warning."""
        def add(obj: Callable) -> Callable:
            key = name or obj.__name__
            if key in self._entries:
                raise KeyError(f"{self.kind} '{key}' is registered twice")
            self._entries[key] = obj
            self._renamed[key] = dict(renamed or {})
            return obj
        return add

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: Any, where: str) -> Callable:
        if name is None:
            raise ConfigError(f"{where}.type: missing; choose from: {', '.join(self.names())}")
        if not isinstance(name, str) or name not in self._entries:
            raise ConfigError(f"{where}.type: unknown {self.kind} '{name}'{hint(name, self._entries)}")
        return self._entries[name]

    def settings(self, name: str) -> dict[str, inspect.Parameter]:
        target = self._entries[name]
        sig = inspect.signature(target.__init__ if inspect.isclass(target) else target)
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
        params = {}
        for key, p in sig.parameters.items():
            if key == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            params[key] = p.replace(annotation=hints.get(key, p.annotation))
        return params

    def resolve(self, cfg: Any, where: str, derived: Iterable[str] = ()) -> dict:
        """Check a section against the component's signature; return it with defaults filled in.

        ``derived`` names arguments that come from the data (num_classes, ...):
        they may not be set in the config and are left out of the result.
        """
        if not isinstance(cfg, dict):
            raise ConfigError(f"{where}: expected a mapping with a 'type' key, got {cfg!r}")
        name = cfg.get("type")
        self.get(name, where)
        cfg = self._translate_renamed(cfg, name, where)
        params = self.settings(name)
        derived = set(derived)
        resolved = {"type": name}
        for key, value in cfg.items():
            if key == "type":
                continue
            if key in derived:
                raise ConfigError(f"{where}.{key}: is set from the data; remove it from the config")
            if key not in params:
                raise ConfigError(f"{where}.{key}: not a setting of {self.kind} '{name}'"
                                  f"{hint(key, [p for p in params if p not in derived])}")
            resolved[key] = check_type(value, params[key].annotation, f"{where}.{key}")
        for key, p in params.items():
            if key in derived or key in resolved:
                continue
            if p.default is inspect.Parameter.empty:
                raise ConfigError(f"{where}.{key}: required by {self.kind} '{name}'; add it to the config")
            resolved[key] = list(p.default) if isinstance(p.default, tuple) else p.default
        return resolved

    def _translate_renamed(self, cfg: dict, name: str, where: str) -> dict:
        """``cfg`` with the old names of renamed settings replaced by the new ones (warned once per process)."""
        cfg = dict(cfg)
        for old, new in self._renamed[name].items():
            if old not in cfg:
                continue
            if new in cfg:
                raise ConfigError(f"{where}.{old}: is the old name of {where}.{new}, which is set too; "
                                  f"keep only {where}.{new}")
            cfg[new] = cfg.pop(old)
            if (where, name, old) not in self._warned:
                self._warned.add((where, name, old))
                log.warning("%s.%s is deprecated for %s '%s': read as %s.%s; rename it in the config",
                            where, old, self.kind, name, where, new)
        return cfg

    def build(self, cfg: dict, where: str, **derived: Any) -> Any:
        kwargs = self.resolve(cfg, where, derived)
        name = kwargs.pop("type")
        return self._entries[name](**kwargs, **derived)


DATASETS = Registry("dataset")
MODELS = Registry("model")
LOSSES = Registry("loss")
OPTIMIZERS = Registry("optimizer")
SCHEDULERS = Registry("scheduler")
SAMPLERS = Registry("sampler")
AUGMENTATIONS = Registry("augmentation")
