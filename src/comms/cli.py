"""Start-up of both programs: settings from flags, env and .env, or one clear line and exit 1.

The command line is built from the settings model itself, so ``--help`` reads
like the settings reference in docs/reference (what it is, its default in words, its env var, its
range) and can never miss a setting. Precedence: flag > environment > .env >
default. Unknown ``AUDIO_SERVER_*`` / ``AUDIO_DEVICE_*`` names (a typo silently
ignored would be worse) stop start-up with the closest real name; a bad value
is reported under the flag or env var the user actually set.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from dotenv import dotenv_values
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)
ENV_FILE = ".env"
EXIT_BAD_SETTINGS = 1


class SettingsError(Exception):
    """A setting is unknown or has a bad value; the message is the one line to print."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line and exit 1, not usage + exit 2
        raise SettingsError(message)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(cls: type[BaseSettings], name: str) -> str:
    return f"{cls.model_config.get('env_prefix', '')}{name}".upper()


def default_text(field: FieldInfo) -> str:
    """The default in words: the field's own ``default_text`` when the value alone would not say it."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if "default_text" in extra:
        return str(extra["default_text"])
    value = field.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if value == "":
        return "empty (off)"
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def range_text(field: FieldInfo) -> str:
    low = high = None
    for constraint in field.metadata:
        low = getattr(constraint, "ge", getattr(constraint, "gt", low))
        high = getattr(constraint, "le", getattr(constraint, "lt", high))
    if low is not None and high is not None:
        return f"{low} to {high}"
    if low is not None:
        return f"≥ {low}" if any(hasattr(c, "ge") for c in field.metadata) else f"> {low}"
    if high is not None:
        return f"≤ {high}"
    return ""


def _choices(field: FieldInfo) -> list[str] | None:
    if typing.get_origin(field.annotation) is typing.Literal:
        return [str(choice) for choice in typing.get_args(field.annotation)]
    return None


def _is_bool(field: FieldInfo) -> bool:
    return field.annotation is bool


def _is_json(field: FieldInfo) -> bool:
    return typing.get_origin(field.annotation) in (list, dict, tuple)


_UNIT_METAVARS = {
    "s": "SECONDS",
    "ms": "MS",
    "bytes": "BYTES",
    "dir": "DIR",
    "path": "PATH",
    "bind": "HOST:PORT",
}


def _metavar(name: str) -> str:
    last = name.rsplit("_", 1)[-1]
    return _UNIT_METAVARS.get(last, last.upper())


Configure = Callable[[argparse.ArgumentParser, argparse.ArgumentParser], None]
"""A program's own arguments: ``(parser, options)``, ``options`` holding every settings flag, for
subcommands to take as a parent so those flags work after the subcommand too (as kubectl's do)."""


def build_parser(
    cls: type[BaseSettings],
    prog: str,
    description: str,
    extra: Sequence[tuple[str, str]] = (),
    configure: Configure | None = None,
) -> argparse.ArgumentParser:
    options = _Parser(add_help=False)  # the settings flags, shared with subcommands (see Configure)
    for name, help_text in extra:
        options.add_argument(name, action="store_true", help=help_text)
    for name, field in cls.model_fields.items():
        what = (field.description or name).rstrip(".")
        parts = [f"{what}.", f"Default: {default_text(field)}."]
        bounds = range_text(field)
        if bounds:
            parts.append(f"Range: {bounds}.")
        choices = _choices(field)
        if choices:
            parts.append(f"One of: {', '.join(choices)} (any case).")
        if _is_json(field):
            parts.append("As JSON.")
        parts.append(f"Env: {env_name(cls, name)}.")
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": " ".join(parts)}
        if _is_bool(field):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = "JSON" if _is_json(field) else _metavar(name)
        options.add_argument(flag(name), **kwargs)
    parser = _Parser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Every option can also be set as an environment variable or in {ENV_FILE} "
        "(flag > environment > .env > default).",
        parents=[options],
    )
    if configure is not None:  # a program's own arguments (e.g. audio-admin's commands)
        configure(parser, options)
    return parser


def unknown_names(cls: type[BaseSettings], sources: Mapping[str, Mapping[str, str | None]]) -> None:
    """Refuse ``PREFIX*`` names that are no setting, suggesting the closest real one."""
    prefix = str(cls.model_config.get("env_prefix", "")).upper()
    known = {env_name(cls, name) for name in cls.model_fields}
    for where, values in sources.items():
        for key in values:
            upper = key.upper()
            if upper.startswith(prefix) and upper not in known:
                close = difflib.get_close_matches(upper, sorted(known), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]}?" if close else f"; see {flag('help')} for the names"
                raise SettingsError(f"unknown setting {key} in {where}{hint}")


def _where(cls: type[BaseSettings], name: str, given: set[str], dotenv: Mapping[str, str | None]) -> str:
    """Name a setting the way the user set it."""
    env = env_name(cls, name)
    if name in given:
        return flag(name)
    if env in os.environ:
        return env
    if env in dotenv:
        return f"{env} (in {ENV_FILE})"
    return f"{flag(name)} / {env}"


def load_settings(
    cls: type[S],
    prog: str,
    argv: Sequence[str],
    description: str = "",
    extra: Sequence[tuple[str, str]] = (),
    configure: Configure | None = None,
) -> tuple[S, argparse.Namespace]:
    """Parse ``argv`` into ``cls``; raise ``SettingsError`` with one clear line on any problem."""
    parser = build_parser(cls, prog, description, extra, configure)
    namespace = parser.parse_args(list(argv))
    env_file = Path(ENV_FILE)
    dotenv = {k.upper(): v for k, v in dotenv_values(env_file).items()} if env_file.is_file() else {}
    unknown_names(cls, {"the environment": os.environ, ENV_FILE: dotenv})
    values = {name: getattr(namespace, name) for name in cls.model_fields if hasattr(namespace, name)}
    for name, value in list(values.items()):
        if _is_json(cls.model_fields[name]) and isinstance(value, str):
            try:
                values[name] = json.loads(value)
            except ValueError:
                raise SettingsError(f"bad setting {flag(name)}: not valid JSON") from None
    try:
        settings = cls(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        where = _where(cls, name, set(values), dotenv) if name in cls.model_fields else "settings"
        raise SettingsError(f"bad setting {where}: {first['msg']}") from None
    return settings, namespace


def parse_settings(
    cls: type[S],
    prog: str,
    argv: Sequence[str] | None,
    description: str = "",
    extra: Sequence[tuple[str, str]] = (),
    configure: Configure | None = None,
) -> tuple[S, argparse.Namespace] | None:
    """``load_settings`` for a program's ``main``: on a problem print one line and return None."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return load_settings(cls, prog, args, description, extra, configure)
    except SettingsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None
