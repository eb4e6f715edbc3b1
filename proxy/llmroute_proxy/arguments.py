"""Value types for the command lines (`llmroute-proxy`, `llmroute-operator`).

Each flag's environment default is given to argparse as a string, which argparse converts with the
flag's type as it converts the flag itself: a bad variable is then a usage error (exit 2) that says
which variable and what is wrong with it, never a traceback while the parser is built.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def from_env(variable: str, convert: Callable[[str], T], fallback: str) -> dict[str, Any]:
    """`add_argument` keywords for a flag whose default is `variable` (else `fallback`), converted by
    `convert` as the flag itself is; a refusal of the variable's value names the variable."""
    def checked(text: str) -> T:
        try:
            return convert(text)
        except argparse.ArgumentTypeError as error:
            if os.environ.get(variable) == text:
                raise argparse.ArgumentTypeError(f"{error} (from ${variable})") from None
            raise

    checked.__name__ = convert.__name__  # argparse names the type in some messages
    return {"type": checked, "default": os.environ.get(variable, fallback)}


def positive_int(text: str) -> int:
    value = _whole(text)
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return value


def whole_number(text: str) -> int:
    """A whole number, 0 included."""
    value = _whole(text)
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"not a whole number of 0 or more: {text!r}")
    return value


def port(text: str) -> int:
    value = _whole(text)
    if value is None or not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port (1-65535): {text!r}")
    return value


def positive_seconds(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def seconds(text: str) -> float:
    """A number of seconds, 0 included."""
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"not a number of seconds of 0 or more: {text!r}")
    return value


def log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"not a log level ({', '.join(LOG_LEVELS)}): {text!r}")
    return level


def _whole(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _number(text: str) -> float:
    """The finite number `text` says, else NaN (which no comparison admits)."""
    try:
        value = float(text)
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan
