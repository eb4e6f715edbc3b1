"""Usage reports as deltas of cumulative counters, so nothing is lost or counted twice.

The sidecar's counters only grow. A report is `current − last sent`; the "last sent" mark moves
only once a report has gone out, so whatever a dropped connection kept from being sent is simply
part of the next report. Pure: the I/O shell hands in the counters.
"""

from __future__ import annotations

from collections.abc import Mapping

from llmroute_proxy.sync.protocol import UsageReport

# section ("routes" | "targets" | "providers") → name → field → cumulative value.
# A target's errors by kind are fields named "errors.<kind>".
Counters = Mapping[str, Mapping[str, Mapping[str, float]]]
SECTIONS = ("routes", "targets", "providers")


class UsageMark:
    """What has been reported so far."""

    __slots__ = ("_sent",)

    def __init__(self) -> None:
        self._sent: dict[str, dict[str, dict[str, float]]] = {s: {} for s in SECTIONS}

    def report(self, current: Counters, interval: float, *, final: bool = False) -> UsageReport:
        """What grew since the last `commit`; names with nothing new are left out."""
        sections = {section: self._section(section, current.get(section, {})) for section in SECTIONS}
        targets = {name: _nest_errors(fields) for name, fields in sections["targets"].items()}
        return UsageReport(interval, sections["routes"], targets, sections["providers"], final)

    def unsent(self, current: Counters, section: str, key: str) -> dict[str, float]:
        """Per name of `section`, how much of `key` the next report would carry."""
        grown = self._section(section, current.get(section, {}))
        return {name: fields[key] for name, fields in grown.items() if fields.get(key)}

    def commit(self, current: Counters) -> None:
        """The report made from `current` went out."""
        self._sent = {s: {name: dict(fields) for name, fields in current.get(s, {}).items()} for s in SECTIONS}

    def _section(self, section: str, current: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
        sent = self._sent[section]
        out: dict[str, dict[str, float]] = {}
        for name, fields in current.items():
            before = sent.get(name, {})
            grown = {key: _delta(value, before.get(key, 0)) for key, value in fields.items()}
            if any(grown.values()):
                out[name] = grown
        return out


def _delta(now: float, before: float) -> float:
    # A counter that went down was reset (the table dropped a name and it came back): count anew.
    delta = now - before if now >= before else now
    return round(delta, 12) if isinstance(delta, float) else delta


def _nest_errors(fields: Mapping[str, float]) -> dict[str, object]:
    out: dict[str, object] = {k: v for k, v in fields.items() if not k.startswith("errors.")}
    out["errors"] = {k.removeprefix("errors."): v for k, v in fields.items() if k.startswith("errors.") and v}
    return out
