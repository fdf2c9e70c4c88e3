"""Settings loading shared by every `helium` service.

Each service has one frozen dataclass of settings. Values come from, highest
precedence first:

1. command-line flags (only those the user actually gave),
2. `HELIUM_<FIELD>` environment variables (upper-case field name),
3. the `[<section>]` table of a TOML file (`--config FILE` or `HELIUM_CONFIG`),
4. the dataclass defaults.

Values from the environment and TOML are converted to the field's type
(int, float, bool, str, Path, timedelta from seconds, tuple[str, ...] from a
comma list). An unknown key in the TOML table is an error that names it.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["ConfigError", "load_settings"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting that cannot be read; the message names it and where it came from."""


def _convert(name: str, raw: Any, typ: Any, source: str) -> Any:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if raw is None or (isinstance(raw, str) and raw.lower() in ("", "none", "null")):
            return None
        return _convert(name, raw, args[0], source)
    try:
        if typ is bool:
            if isinstance(raw, bool):
                return raw
            s = str(raw).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"not a boolean: {raw!r}")
        if typ is timedelta:
            return raw if isinstance(raw, timedelta) else timedelta(seconds=float(raw))
        if typ is Path:
            return Path(raw).expanduser()
        if typ in (int, float, str):
            return typ(raw)
        if origin is tuple:
            items = raw if isinstance(raw, list | tuple) else [x for x in str(raw).split(",") if x.strip()]
            inner = typing.get_args(typ)[0]
            return tuple(_convert(name, x.strip() if isinstance(x, str) else x, inner, source) for x in items)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} (from {source}): {exc}") from exc
    return raw


def load_settings(
    cls: type[T],
    flags: Mapping[str, Any] | None = None,
    *,
    section: str,
    config_file: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
) -> T:
    """Builds `cls` from flags > HELIUM_* env > TOML [section] > defaults."""
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}

    path = config_file or environ.get("HELIUM_CONFIG")
    if path:
        try:
            table = tomllib.loads(Path(path).read_text()).get(section, {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
        for key, raw in table.items():
            if key not in fields:
                raise ConfigError(f"config file {path}: unknown setting [{section}] {key}")
            values[key] = _convert(key, raw, hints[key], f"{path} [{section}]")

    for name in fields:
        env_key = f"HELIUM_{name.upper()}"
        if env_key in environ:
            values[name] = _convert(name, environ[env_key], hints[name], env_key)

    for name, raw in (flags or {}).items():
        if raw is not None and name in fields:
            values[name] = _convert(name, raw, hints[name], f"--{name.replace('_', '-')}")

    return cls(**values)
