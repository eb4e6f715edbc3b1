"""The last good table on disk, so a sidecar serves it across operator outages and its own restarts.

The file holds provider credentials: it is written 0600 into a 0700 directory (the chart makes
LLMROUTE_STATE_DIR memory-backed), atomically (temporary file, fsync, rename), and never logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("llmroute.sync")

FILE_NAME = "last-table.json"


@dataclass(frozen=True, slots=True)
class Persisted:
    version: str
    payload: Mapping[str, Any]


class TableStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / FILE_NAME

    def save(self, version: str, payload: Mapping[str, Any]) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        body = orjson.dumps({"version": version, "table": payload})
        temporary = self.path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)  # O_CREAT's mode is only for new files
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)

    def load(self) -> Persisted | None:
        """None when there is none, or it cannot be used (logged without its content)."""
        try:
            body = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("persisted table %s unusable (%s); waiting for the operator", self.path,
                        type(exc).__name__)
            return None
        if not (isinstance(body, dict) and isinstance(body.get("version"), str)
                and isinstance(body.get("table"), dict)):
            log.warning("persisted table %s has the wrong shape; waiting for the operator", self.path)
            return None
        return Persisted(body["version"], body["table"])

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
