"""Typed configuration: pydantic models, YAML files, presets and dotted command-line overrides.

Every algorithm has one config class composed of parts (model, data, optim, rollout, engine…),
each part defined beside the code that owns it. Help text is written once, as an attribute
docstring under each field (pydantic's `use_attribute_docstrings`), and is what
`rlhfkit config show` prints.

Resolution order, later wins: the class defaults → a preset shipped in `rlhfkit/configs/NAME.yaml`
→ the user's YAML file → `key.sub=value` overrides from the command line. Unknown keys and wrong
types are rejected with a `ConfigError` naming the dotted key and where the value came from.
Derived values (step counts, world size) never go back into a config; trainers compute them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from rlhfkit.errors import UserError

PRESET_DIR = Path(__file__).parent / "configs"

C = TypeVar("C", bound=BaseModel)


class ConfigBase(BaseModel):
    """Base of every config part: unknown keys are errors; help text is the field docstring."""

    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, validate_assignment=True, frozen=False
    )


class ConfigError(UserError, ValueError):
    """A configuration problem, phrased for the user (key, value, source)."""

    kind = "config error"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a config file must hold a mapping of keys, got {type(data).__name__}"
        )
    return data


def preset_path(name: str) -> Path:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(known) or '(none)'}")
    return path


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """`optim.lr=1e-5` → (["optim", "lr"], 1e-5). The value is parsed as YAML (so `true`,
    `[1, 2]` and `null` work); pydantic then converts it to the field's type."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"override {text!r}: expected KEY=VALUE with a dotted key, e.g. optim.lr=1e-5"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _set_dotted(data: dict[str, Any], keys: list[str], value: Any, origin: str) -> None:
    node = data
    for i, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: {'.'.join(keys[: i + 1])} is a value, not a section")
        node = child
    node[keys[-1]] = value


def _origin_of(loc: tuple[Any, ...], overrides: dict[str, str], files: list[Path]) -> str:
    dotted = ".".join(str(p) for p in loc)
    for key, origin in overrides.items():
        if dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + "."):
            return origin
    return ", ".join(str(f) for f in files) if files else "defaults"


def load_config(
    cls: type[C],
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    preset: str | None = None,
    defaults: dict[str, Any] | None = None,
) -> C:
    """Build a validated `cls` from defaults → preset → file → overrides (see module docstring);
    `defaults` are a command's own starting values (e.g. `rlhfkit rloo` sets advantage: rloo)."""
    data: dict[str, Any] = dict(defaults or {})
    files: list[Path] = []
    if preset:
        files.append(preset_path(preset))
        data = merge(data, _read_yaml(files[-1]))
    if path is not None:
        files.append(Path(path))
        data = merge(data, _read_yaml(files[-1]))
    origins: dict[str, str] = {}
    for text in overrides:
        keys, value = parse_override(text)
        origin = f"command line {text!r}"
        _set_dotted(data, keys, value, origin)
        origins[".".join(keys)] = origin
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            if err["type"] == "extra_forbidden":
                msg = f"unknown key (valid keys here: {_valid_keys(cls, err['loc'][:-1])})"
            elif err["type"] == "value_error":  # a validator's own message says what is wrong
                msg = err["msg"].removeprefix("Value error, ")
            else:
                msg = f"{err['msg']} (got {err.get('input')!r})"
            lines.append(f"  {key}: {msg} [from {_origin_of(err['loc'], origins, files)}]")
        if len(lines) == 1:  # one mistake, one line
            raise ConfigError(f"invalid {cls.__name__}: {lines[0].strip()}") from None
        raise ConfigError(f"invalid {cls.__name__}:\n" + "\n".join(lines)) from None


def _valid_keys(cls: type[BaseModel], loc: tuple[Any, ...]) -> str:
    model: Any = cls
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None or not isinstance(field.annotation, type):
            return "?"
        model = field.annotation
    names = getattr(model, "model_fields", None)
    return ", ".join(sorted(names)) if names else "?"


def to_yaml(cfg: BaseModel) -> str:
    """The resolved config as YAML (what a run directory stores as config.yaml)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def describe(cls: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every leaf field, for `rlhfkit config show`."""
    rows: list[tuple[str, str, str]] = []
    for name, field in cls.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(describe(ann, key + "."))
        else:
            default = field.get_default(call_default_factory=True)
            rows.append((key, repr(default), (field.description or "").strip()))
    return rows
