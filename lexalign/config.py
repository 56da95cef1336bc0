"""YAML -> dataclass configs with one precedence rule and one error format.

Precedence: dataclass defaults < YAML file < ``key=value`` overrides from the command line.
Unknown keys are errors. Every problem (type errors, unknown keys, cross-field rules from a
config's ``problems()`` method) is collected and reported at once, each naming the key, the value,
where it came from (file:line or the command line) and what was expected.

A stage config is a plain dataclass tree. Sections that hold a TRL trainer's arguments are typed
``dict[str, Any]`` and marked with ``trl_section("trl.SFTConfig")``: their keys are checked against
TRL's own config class, so TRL's fields are reused rather than re-declared.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from lexalign.errors import LexalignError

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    key: str
    message: str
    value: Any = None
    where: str = ""

    def __str__(self) -> str:
        location = f"{self.where}: " if self.where else ""
        value = "" if self.value is None else f" = {self.value!r}"
        return f"{location}{self.key}{value}: {self.message}"


class ConfigError(LexalignError, ValueError):
    """Raised with every problem found in a config, never just the first."""

    def __init__(self, problems: list[Problem], source: str = "") -> None:
        self.problems = problems
        header = f"invalid config{f' {source}' if source else ''} ({len(problems)} problem{'s' * (len(problems) != 1)}):"
        super().__init__("\n".join([header] + [f"  - {p}" for p in problems]))


def trl_section(class_path: str, default: dict[str, Any] | None = None) -> Any:
    """A dict field whose keys must be fields of a TRL config class (e.g. ``trl.SFTConfig``)."""
    return field(default_factory=lambda: dict(default or {}), metadata={"trl_class": class_path})


def problem_if(condition: bool, key: str, value: Any, message: str) -> list[Problem]:
    """Small helper for ``problems()`` methods: one Problem when the condition holds."""
    return [Problem(key, message, value)] if condition else []


def is_share(value: Any, *, one_included: bool = False) -> bool:
    """A number in [0, 1) ([0, 1] with ``one_included``); a YAML true/false is none, though Python counts it 1/0."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return 0 <= value < 1 or (one_included and value == 1)


def share_problems(key: str, share: Any) -> list[Problem]:
    """A cap on a share of the data: a number in [0, 1), or null to keep the data's mix."""
    return problem_if(share is not None and not is_share(share), key, share,
                      "a share in [0, 1), or null to keep the data's mix")


# --------------------------------------------------------------------------- YAML with line numbers


class _Loader(yaml.SafeLoader):
    """YAML 1.2 scalars: ``5e-3`` is a number (YAML 1.1 reads a string) and only true/false are booleans
    (YAML 1.1 turns ``eval_strategy: no`` into False)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _key_lines(node: yaml.Node, prefix: str, lines: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            lines[key] = key_node.start_mark.line + 1
            _key_lines(value_node, key, lines)


def read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Parse a YAML mapping; return it with the line number of every key path."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem("config", "file not found; pass an existing YAML file", str(path))]) from None
    except UnicodeDecodeError as err:
        line = path.read_bytes().count(b"\n", 0, err.start) + 1
        raise ConfigError([Problem("config", "not UTF-8 text; save the file as UTF-8", where=f"{path}:{line}")]) from None
    except OSError as err:  # a directory, no permission...
        raise ConfigError([Problem("config", f"cannot read the file: {err.strerror or err}", str(path))]) from None
    try:
        data = _load(text)
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError([Problem("yaml", f"not valid YAML: {err.problem}", where=where)]) from None
    except yaml.YAMLError as err:  # e.g. a control character the YAML reader refuses (no problem_mark)
        raise ConfigError([Problem("yaml", f"not valid YAML: {str(err).splitlines()[0]}", where=str(path))]) from None
    except RecursionError:
        raise ConfigError([Problem("yaml", "nested too deeply to be a config", where=str(path))]) from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError([Problem("config", "the file must hold a YAML mapping of keys to values", where=str(path))])
    lines: dict[str, int] = {}
    _key_lines(node, "", lines)
    return data, lines


# --------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=3`` -> ("a.b", 3). Values are parsed as YAML scalars/lists (``x=[1,2]``, ``y=null``)."""
    if "=" not in text:
        raise ConfigError([Problem(text, "a command-line override must look like key=value (e.g. training.max_steps=20)", where="command line")])
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError([Problem(text, "empty key in override", where="command line")])
    try:
        value = _load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> set[str]:
    """Set dotted keys in place; returns the set of keys that came from the command line."""
    keys = set()
    for text in overrides:
        key, value = parse_override(text)
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
        keys.add(key)
    return keys


# --------------------------------------------------------------------------- dataclass building


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, problems: list[Problem]) -> Any:
    """Check ``value`` against a type hint; return the (possibly converted) value."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            trial: list[Problem] = []
            converted = _coerce(value, arg, key, trial)
            if not trial:
                return converted
        problems.append(Problem(key, f"expected {_type_name(tp)}", value))
        return value
    if origin is Literal:
        if value not in args:
            problems.append(Problem(key, f"expected one of {', '.join(repr(a) for a in args)}", value))
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.append(Problem(key, f"expected a mapping of {tp.__name__} fields", value))
            return tp()
        return _build(tp, value, key, problems)
    if origin in (list, tuple):
        if not isinstance(value, list):
            problems.append(Problem(key, f"expected a list of {_type_name(args[0]) if args else 'values'}", value))
            return value
        item_type = args[0] if args else Any
        return [_coerce(item, item_type, f"{key}[{i}]", problems) for i, item in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            problems.append(Problem(key, "expected a mapping", value))
        return value
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(Problem(key, "expected true or false", value))
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(Problem(key, "expected an integer", value))
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(Problem(key, "expected a number", value))
            return value
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            problems.append(Problem(key, "expected a string", value))
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            problems.append(Problem(key, "expected a path", value))
            return value
        return Path(value)
    return value


def _build(cls: type[T], data: dict[str, Any], prefix: str, problems: list[Problem]) -> T:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in known:
            problems.append(Problem(full, f"unknown key; expected one of: {', '.join(sorted(known))}", value))
            continue
        f = known[key]
        trl_class = f.metadata.get("trl_class")
        if trl_class:
            value = _check_trl_section(value, trl_class, full, problems)
        kwargs[key] = _coerce(value, hints[key], full, problems)
    try:
        return cls(**kwargs)
    except TypeError as err:
        problems.append(Problem(prefix or cls.__name__, f"missing required keys: {err}"))
        return None  # type: ignore[return-value]


def _check_trl_section(value: Any, class_path: str, key: str, problems: list[Problem]) -> Any:
    if not isinstance(value, dict):
        problems.append(Problem(key, f"expected a mapping of {class_path} arguments", value))
        return {}
    module_name, _, class_name = class_path.rpartition(".")
    trl_cls = getattr(importlib.import_module(module_name), class_name)
    fields = {f.name: f for f in dataclasses.fields(trl_cls)}
    allowed = set(fields)
    hints = typing.get_type_hints(trl_cls)
    checked = {}
    for name, item in value.items():
        if name == "hub_token":  # the Trainer pickles its arguments into every checkpoint (training_args.bin)
            problems.append(Problem(f"{key}.{name}", "a token does not belong in a config: it would be saved in "
                                    "every checkpoint; set HF_TOKEN in the environment instead", "***"))
            continue
        if name not in allowed:
            close = sorted(n for n in allowed if n.split("_")[0] == str(name).split("_")[0])[:5]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            problems.append(Problem(f"{key}.{name}", f"not an argument of {class_path}{hint}", item))
            continue
        checked[name] = _coerce(item, hints.get(name, Any), f"{key}.{name}", problems)
        # a value outside the argument's declared choices would otherwise pass, and some (the sampler's
        # train_sampling_strategy) fall back silently to a default deep inside the trainer
        choices = [getattr(c, "value", c) for c in fields[name].metadata.get("choices") or []]
        if choices and isinstance(checked[name], str) and checked[name] not in choices:
            problems.append(Problem(f"{key}.{name}", f"one of: {', '.join(map(str, choices))}", item))
    return checked


def _locate(problems: list[Problem], lines: dict[str, int], path: Path | None, cli_keys: set[str]) -> list[Problem]:
    located = []
    for p in problems:
        if p.where:
            located.append(p)
            continue
        base_key = p.key.split("[")[0]
        where = ""
        if base_key in cli_keys:
            where = "command line"
        elif path is not None:
            probe = base_key
            while probe and probe not in lines:
                probe = probe.rpartition(".")[0]
            where = f"{path}:{lines[probe]}" if probe else str(path)
        located.append(dataclasses.replace(p, where=where))
    return located


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build ``cls`` from defaults, a YAML file and ``key=value`` overrides; validate everything.

    Raises ConfigError listing every problem. A config (or any nested section) may define
    ``problems(self) -> list[Problem]`` for cross-field rules.
    """
    path = Path(path) if path is not None else None
    data, lines = read_yaml(path) if path is not None else ({}, {})
    cli_keys = apply_overrides(data, list(overrides or []))
    problems: list[Problem] = []
    config = _build(cls, data, "", problems)
    if config is not None:
        typed_keys = {p.key for p in problems}
        problems.extend(p for p in collect_problems(config) if not _under_any(p.key, typed_keys))
    if problems:
        raise ConfigError(_locate(problems, lines, path, cli_keys), source=str(path) if path else "")
    return config


def _under_any(key: str, typed_keys: set[str]) -> bool:
    """``key`` is one of ``typed_keys`` or an item or field of one (``tags[0]``, ``inner.size``): a value of the
    wrong type is reported once, not again by every cross-field rule that iterated over it."""
    return any(key == typed or key.startswith((f"{typed}[", f"{typed}.")) for typed in typed_keys)


def collect_problems(config: Any, prefix: str = "") -> list[Problem]:
    """Run ``problems()`` of a config and of every nested dataclass section, prefixing their keys."""
    found: list[Problem] = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            found.extend(collect_problems(value, f"{prefix}{f.name}."))
    if hasattr(config, "problems"):
        try:
            own = config.problems()
        except (TypeError, ValueError, AttributeError):
            own = []  # a value of the wrong type, already reported, broke a cross-field rule
        for p in own:
            found.append(dataclasses.replace(p, key=f"{prefix}{p.key}"))
    return found


def to_dict(config: Any) -> dict[str, Any]:
    """A YAML-safe dict of a config (paths as strings)."""

    def clean(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return clean(dataclasses.asdict(config))


def dump_yaml(config: Any, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
