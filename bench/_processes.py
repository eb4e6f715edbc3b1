"""Starting and stopping the processes a benchmark measures: pinned to a core, each stopped by PID."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinning_available() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def llmroute_command() -> list[str]:
    found = os.environ.get("LLMROUTE_PROXY") or str(ROOT / ".venv" / "bin" / "llmroute-proxy")
    if not Path(found).exists():
        found = shutil.which("llmroute-proxy") or found
    return [found]


class Harness:
    """Starts processes pinned to a core, and stops every one of them (by PID) on the way out."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.pin = pinning_available()
        self._procs: list[subprocess.Popen[bytes]] = []

    def pinned(self, core: int, command: Sequence[str]) -> list[str]:
        return ["taskset", "-c", str(core), *command] if self.pin else list(command)

    def spawn(self, name: str, core: int, command: Sequence[str], env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")  # a restarted process appends
        proc = subprocess.Popen(self.pinned(core, command), stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        log.close()
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc in self._procs:
            self._procs.remove(proc)

    def close(self) -> None:
        for proc in reversed(list(self._procs)):
            self.stop(proc)

    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs if proc.poll() is None]

    def log_tail(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


@contextlib.contextmanager
def harness(prefix: str = "llmroute-bench-") -> Iterator[Harness]:
    """A work directory and a harness; SIGTERM is turned into an exit so that cleanup runs."""
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        h = Harness(Path(tmp))
        try:
            yield h
        finally:
            h.close()
            signal.signal(signal.SIGTERM, previous)
