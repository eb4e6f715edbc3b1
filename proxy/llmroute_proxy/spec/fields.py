"""Reading resource documents field by field, collecting every error with its exact path.

The generic half of the `spec` package: typed getters for one mapping of a document (`Fields`), where each
problem becomes a `SpecError` naming the document and the field, with what was expected, what
was found and, for a typo, what was meant. Pure: no I/O.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from enum import Enum
from typing import Any, TypeVar

_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|h|m|s))+")  # ASCII digits, as in the CRD
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_HINT = "a duration such as '500ms', '2s', '1m' or '1h'"
_E = TypeVar("_E", bound=Enum)


@dataclass(frozen=True, slots=True)
class SpecError:
    kind: str  # LLMProvider, LLMRoute, or "" for a problem with the file or an unrecognised document
    name: str  # metadata.name, "<document N>" when it has none, or the file
    path: str  # inside the document: spec.tiers.fast.targets[1].provider
    message: str

    def __str__(self) -> str:
        where = f"{self.kind}/{self.name}" if self.kind else self.name
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


def parse_duration(text: str) -> float | None:
    """Seconds in `500ms`, `2s`, `1.5m`, `1h`, `1m30s`; None when it is not such a string."""
    if not _DURATION.fullmatch(text):
        return None
    return sum(float(amount) * _UNIT_SECONDS[unit] for amount, unit in _DURATION_PART.findall(text))



class Sink:
    __slots__ = ("errors", "kind", "name")

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        self.errors: list[SpecError] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(SpecError(self.kind, self.name, path, message))





class Fields:
    """One mapping of a document. Unknown keys are reported as soon as it is opened."""

    __slots__ = ("data", "path", "redact", "sink")

    def __init__(self, sink: Sink, path: str, value: object, allowed: Sequence[str],
                 *, redact: bool = False) -> None:
        self.sink = sink
        self.path = path
        self.redact = redact  # never echo values (credentials)
        self.data: Mapping[Any, Any] = value if isinstance(value, Mapping) else {}
        if not isinstance(value, Mapping):
            sink.error(path, f"expected a mapping, found {describe(value, redact)}")
            return
        for key in value:
            if key not in allowed:
                self._unknown(key, allowed)

    def _unknown(self, key: object, allowed: Sequence[str]) -> None:
        if self.redact:
            self.sink.error(self.path, f"unknown field (expected one of: {', '.join(allowed)})")
            return
        hint = did_you_mean(str(key), allowed) or f" (expected one of: {', '.join(allowed)})"
        self.sink.error(join_path(self.path, str(key)), f"unknown field '{key}'{hint}")

    def at(self, key: str) -> str:
        return join_path(self.path, key)

    def error(self, key: str, message: str) -> None:
        self.sink.error(self.at(key), message)

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def require(self, key: str) -> Any:
        value = self.data.get(key)
        if value is None:
            self.error(key, "missing required field")
        return value

    def _value(self, key: str, required: bool) -> Any:
        return self.require(key) if required else self.data.get(key)

    def _wrong(self, key: str, expected: str, value: object) -> None:
        hint = ""
        if expected == "a string" and isinstance(value, bool | int | float | date):
            hint = " (quote it in YAML to keep it a string)"
        self.error(key, f"expected {expected}, found {describe(value, self.redact)}{hint}")

    def string(self, key: str, *, required: bool = False) -> str | None:
        value = self._value(key, required)
        if value is None:
            return None
        if not isinstance(value, str):
            self._wrong(key, "a string", value)
            return None
        if not value.strip():
            self.error(key, "must not be empty")
            return None
        return value

    def integer(self, key: str, *, minimum: int | None = None, maximum: int | None = None,
                required: bool = False) -> int | None:
        value = self._value(key, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self._wrong(key, "an integer", value)
            return None
        return value if self._in_range(key, value, minimum, maximum) else None

    def number(self, key: str, *, minimum: float | None = None, maximum: float | None = None,
               positive: bool = False, required: bool = False) -> float | None:
        value = self._value(key, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self._wrong(key, "a number", value)
            return None
        if positive and value <= 0:
            self.error(key, f"must be greater than 0, found {value}")
            return None
        return float(value) if self._in_range(key, value, minimum, maximum) else None

    def _in_range(self, key: str, value: float, minimum: float | None, maximum: float | None) -> bool:
        if minimum is not None and value < minimum:
            self.error(key, f"must be at least {minimum}, found {value}")
            return False
        if maximum is not None and value > maximum:
            self.error(key, f"must be at most {maximum}, found {value}")
            return False
        return True

    def boolean(self, key: str) -> bool | None:
        value = self.data.get(key)
        if value is None or isinstance(value, bool):
            return value
        self._wrong(key, "true or false", value)
        return None

    def duration(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            self.error(key, f"expected {_DURATION_HINT}, found {describe(value)}; "
                            f"durations need a unit, e.g. '{value}s'")
            return None
        seconds = parse_duration(value) if isinstance(value, str) else None
        if seconds is None:
            self.error(key, f"expected {_DURATION_HINT}, found {describe(value)}")
            return None
        if seconds <= 0:
            self.error(key, f"must be longer than 0, found '{value}'")
            return None
        return seconds

    def choice(self, key: str, choices: Sequence[str], *, required: bool = False) -> str | None:
        value = self._value(key, required)
        if value is None:
            return None
        if isinstance(value, str) and value in choices:
            return value
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        self.error(key, f"expected one of: {', '.join(choices)}; found {describe(value)}{hint}")
        return None

    def enum(self, key: str, choices: type[_E], *, required: bool = False) -> _E | None:
        value = self.choice(key, [str(member.value) for member in choices], required=required)
        return None if value is None else choices(value)

    def mapping(self, key: str, allowed: Sequence[str], *, required: bool = False,
                redact: bool = False) -> Fields | None:
        value = self._value(key, required)
        return None if value is None else Fields(self.sink, self.at(key), value, allowed, redact=redact)

    def items(self, key: str, *, required: bool = False, nonempty: bool = False) -> list[tuple[str, Any]]:
        """The list's items with their paths; [] when absent or not a list."""
        value = self._value(key, required)
        if value is None:
            return []
        if not isinstance(value, list):
            self._wrong(key, "a list", value)
            return []
        if nonempty and not value:
            self.error(key, "must not be empty")
        return [(f"{self.at(key)}[{i}]", item) for i, item in enumerate(value)]

    def strings(self, key: str, *, nonempty: bool = False) -> list[tuple[str, str]]:
        out = []
        for path, item in self.items(key, nonempty=nonempty):
            if isinstance(item, str) and item.strip():
                out.append((path, item))
            else:
                self.sink.error(path, "must not be empty" if isinstance(item, str) else
                                f"expected a string, found {describe(item)}")
        return out


def join_path(path: str, key: str) -> str:
    part = key if _SIMPLE_KEY.fullmatch(key) else f'"{key}"'
    if not path:
        return part
    return f"{path}.{part}" if _SIMPLE_KEY.fullmatch(key) else f"{path}[{part}]"


def describe(value: object, redact: bool = False) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, bool):
        kind, shown = "a boolean", "true" if value else "false"
    elif isinstance(value, int):
        kind, shown = "an integer", str(value)
    elif isinstance(value, float):
        kind, shown = "a number", str(value)
    elif isinstance(value, str):
        kind, shown = "a string", quoted(value)
    elif isinstance(value, date):
        kind, shown = "a date", value.isoformat()
    else:
        return type(value).__name__
    return kind if redact else f"{kind} ({shown})"


def quoted(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "...'"


def did_you_mean(word: str, options: Iterable[str]) -> str:
    by_lower = {option.lower(): option for option in options}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean '{by_lower[close[0]]}'?)" if close else ""


def unknown_ref(what: str, value: str, known: Collection[str]) -> str:
    listed = ", ".join(known) if known else "none"
    return f"unknown {what} '{value}' (known: {listed})"


@dataclass(slots=True)
class Opened:
    """A document whose header has been read: its kind, name, error sink and spec mapping."""

    kind: str | None  # a known kind, else None
    name: str
    sink: Sink
    spec: object
    parse: bool  # header valid enough to read the spec


_T = TypeVar("_T")


def or_default(value: _T | None, default: _T) -> _T:
    return default if value is None else value
