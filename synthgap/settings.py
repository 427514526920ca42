"""Typed settings: a dataclass per section of a config file, each value checked key by key and type
by type, so a typo or a wrong type is one line naming where it was given, never a silently ignored
setting. The study's config files (synthgap/study/config.py) and the commands' `--set KEY=VALUE`
both check through here."""

from __future__ import annotations

import difflib
import tomllib
import typing

from synthgap.errors import UserError


def nearest(word: str, choices) -> str:
    """"did you mean 'x'? " for the choice closest to `word`, or ""."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}? " if close else ""


def hints(cls) -> dict:
    """A settings dataclass's field types by name."""
    return typing.get_type_hints(cls)


def type_name(hint) -> str:
    if typing.get_origin(hint) is list:
        return f"list of {type_name(typing.get_args(hint)[0])}"
    if typing.get_origin(hint) is dict:
        return f"a table of {type_name(typing.get_args(hint)[1])}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            dict: "a table"}[hint]


def checked(value, hint, where: str):
    """`value` as the type `hint` (int, float, bool, str, a list of one of them or a table of
    them by name), or UserError naming `where`."""
    if typing.get_origin(hint) is list:
        if isinstance(value, list):
            elem = typing.get_args(hint)[0]
            return [checked(v, elem, where) for v in value]
    elif typing.get_origin(hint) is dict:
        if isinstance(value, dict):
            elem = typing.get_args(hint)[1]
            return {k: checked(v, elem, f"{where}.{k}") for k, v in value.items()}
    elif hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise UserError(f"{where} = {value!r} is not {type_name(hint)}")


def check_keys(cls, values: dict, where) -> dict:
    """`values` with every key a field of `cls` and every value of its type; `where(key)` names
    the place a key was given, for the error."""
    valid = hints(cls)
    out = {}
    for key, value in values.items():
        if key not in valid:
            raise UserError(f"{where(key)} unknown key {key!r}; {nearest(key, valid)}"
                            f"valid keys: {', '.join(sorted(valid))}")
        out[key] = checked(value, valid[key], f"{where(key)} {key}")
    return out


def parse_value(text: str, hint):
    """A `--set` value: TOML (1000, 0.5, true, "text", [1, 2]), else the bare text as a string. A
    bare value for a list field is a one-element list."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    if hint is str and not isinstance(value, str):
        value = text.strip()
    if typing.get_origin(hint) is list and not isinstance(value, list):
        value = [value]
    return value


def apply_sets(values: dict, cls, sets, prefix: str = "") -> dict:
    """`KEY=VALUE` overrides of one section's values (typed by `cls`); `prefix` names the section in
    errors."""
    valid = hints(cls)
    for item in sets or []:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq:
            raise UserError(f"--set {item!r} is not key=value (e.g. --set {prefix}steps=500)")
        if key not in valid:
            raise UserError(f"--set: unknown key {prefix + key!r}; {nearest(key, valid)}"
                            f"valid keys: {', '.join(prefix + k for k in sorted(valid))}")
        values[key] = checked(parse_value(text, valid[key]), valid[key], f"--set {prefix}{key}")
    return values

