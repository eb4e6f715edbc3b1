"""Every key the sidecar holds, scrubbed from whatever it relays, stores or logs.

Upstreams echo keys: a 401 that quotes the key it refused, a 400 that quotes a bad header, an
in-stream error that repeats the request. Guessing keys by their shape misses opaque keys, so
the sidecar looks for the exact values it holds (it knows every one: it sends them), in the
forms in which they come back:

- the value itself, URL-encoded (`%2B`, `+` for spaces), JSON-escaped (`\\/`);
- inside base64, at each of the three byte alignments a key can have in a longer text
  (HTTP Basic credentials, a base64 request dump);
- cut: a start or an end of at least `FRAGMENT_CHARS` characters, extended over as much of
  the key as follows or precedes it, for keys of at least `FRAGMENT_MIN_KEY` characters;
- a Google service-account key (a JSON key file) also by its private key: the PEM, its base64 body and
  each of its lines;
- masked in the middle as providers print keys (`sk-proj-****…abcd`, `sk-ab...wxyz`): a visible
  start of a held key, a run of `*`, `.` or `…`, then that key's visible end.

Shapes of keys it does not hold are masked as well, because they are cheap to find and a proxy
in between may add its own: `sk-…`/`rk-…`-style and `AIza…` keys, the value after `Bearer`, a
`key=` query parameter, a credential header (`Authorization`, `x-api-key`, `x-goog-api-key`,
`api-key`) written out with its value, and "key provided: …".

Every form becomes `MARKER`. One regex holds all of them (the held forms as a trie, so a
position that cannot start any of them costs one character test), built once per set of keys;
text with no match costs one `search`. Values shorter than `MIN_SECRET_CHARS` are not treated
as keys: placeholder keys such as `ollama` would otherwise mask ordinary words.

Pure: no I/O, no clock; the server builds a `Scrubber` when it installs a table.
"""

from __future__ import annotations

import base64
import functools
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import quote, quote_plus

from llmroute_proxy import aws_access_keys, service_accounts
from llmroute_proxy.errors import FailureKind, UpstreamError
from llmroute_proxy.table import Table

MARKER = "[redacted]"
MIN_SECRET_CHARS = 8
FRAGMENT_CHARS = 8
FRAGMENT_MIN_KEY = 20
_MASK_HEAD_MIN = 3
_MASK_TAIL_MIN = 4
_MASK_CONTEXT = 128  # how far around a mask run its visible start and end are looked for
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~+/=")

# Shapes of credentials, held or not, looked for in the lower-cased text: each starts with a literal
# that `str.find` finds fast; only where it occurs does its pattern run. Group `v` is masked; a
# pattern without one is an anchor that `_shape_span` or `_mask_span` widens.
_VALUE = r"(?P<v>[^\s,;\"'&<>]+)"
_HEADER = r"[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token)\s+)?" + _VALUE
_SHAPES: tuple[tuple[str, re.Pattern[str] | None], ...] = (
    ("bearer", re.compile(r"bearer\s+" + _VALUE)),
    ("authorization", re.compile("authorization" + _HEADER)),
    ("api-key", re.compile("api-key" + _HEADER)),  # also x-api-key, x-goog-api-key
    ("key provided:", re.compile(r"key provided:\s*" + _VALUE)),
    ("key=", re.compile(r"(?:(?<=[?&])|(?<=[?&]api)|(?<=[?&]api[-_]))key=(?P<v>[^&\s\"'#<>]+)")),
    ("access_token=", re.compile(r"(?<=[?&])access_token=(?P<v>[^&\s\"'#<>]+)")),
    ("k-", None), ("xai-", None), ("aiza", None),  # sk-, rk-, pk-, gsk-, xai- and AIza keys
    ("***", None), ("...", None), ("…", None), ("•••", None),  # masks
)
_K_PREFIXES = ("gsk-", "sk-", "rk-", "pk-")
_SHAPE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_*.")
_MASK_CHARS = frozenset("*.…•")
_MASK_LITERALS = frozenset({"***", "...", "…", "•••"})
_LONG_TOKEN = re.compile(r"[A-Za-z0-9_\-+/=*]{24,}")


class Scrubber:
    """Replaces every form of the given secrets, and every credential shape, with `MARKER`.

    Matching ignores case: an upstream that upper- or lower-cases what it quotes still quotes the key.
    """

    __slots__ = ("_anchors", "_held", "_keys")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # a service-account key (JSON) is held whole and by what an echo could quote of it: its private key;
        # an IAM access key (JSON) by its secret and session token
        held = [part for secret in secrets for part in (secret, *service_accounts.key_parts(secret),
                                                        *aws_access_keys.key_parts(secret))]
        originals = {s for s in held if len(s) >= MIN_SECRET_CHARS}
        self._keys: tuple[str, ...] = tuple(sorted({s.lower() for s in originals}, key=len, reverse=True))
        # lower-cased anchor → (lower-cased key, how the anchor sits in it): "exact", "head" or "tail"
        self._anchors: dict[str, list[tuple[str, str]]] = {}
        for original in originals:
            key = original.lower()
            for form in key_forms(original):
                self._anchors.setdefault(form.lower(), []).append((key, "exact"))
            if len(key) >= FRAGMENT_MIN_KEY:
                self._anchors.setdefault(key[:FRAGMENT_CHARS], []).append((key, "head"))
                self._anchors.setdefault(key[-FRAGMENT_CHARS:], []).append((key, "tail"))
        self._held = re.compile(_trie_pattern(self._anchors)) if self._anchors else None

    @property
    def secrets(self) -> int:
        """How many values are scrubbed (for status and tests; never the values)."""
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Scrubber({len(self._keys)} secrets)"

    def scrub(self, text: str) -> str:
        """`text` without any held key or credential shape; the same object when nothing matched."""
        if len(text) < MIN_SECRET_CHARS:
            return text  # too short for a key, a fragment, a mask or a shape with its value
        lowered = _lower(text)
        spans: list[tuple[int, int]] = []
        if self._held is not None:
            for match in self._held.finditer(lowered):
                spans.append(self._held_span(lowered, match.start(), match.end()))
        for literal, pattern in _SHAPES:
            at = lowered.find(literal)
            while at >= 0:
                span = self._shape_span(text, lowered, at, literal, pattern)
                if span is not None:
                    spans.append(span)
                at = lowered.find(literal, at + 1)
        if spans:
            text = _masked(text, spans)
            lowered = _lower(text)
        for key in self._keys:  # belt and braces: no subtlety of the patterns may leave a whole key
            if key in lowered:
                text = re.sub(re.escape(key), MARKER, text, flags=re.IGNORECASE)
        return text

    __call__ = scrub

    def error(self, error: UpstreamError) -> UpstreamError:
        """The error with every text field scrubbed (the same object when none changed).

        A credential failure also loses every long opaque token: a provider that refuses a key
        quotes it, and only there is quoting an unknown token likely to quote a key.
        """
        fields: dict[str, str] = {}
        for name in ("message", "error_type", "code", "param"):
            value = getattr(error, name)
            if isinstance(value, str):
                clean = self.scrub(value)
                if name == "message" and error.kind is FailureKind.AUTH:
                    clean = _LONG_TOKEN.sub(MARKER, clean)
                if clean != value:
                    fields[name] = clean
        if not fields:
            return error
        clean_error: UpstreamError = replace(error, **fields)  # type: ignore[arg-type]
        clean_error.__suppress_context__ = True  # the original (and its text) is not shown with it
        return clean_error

    def json(self, value: Any) -> Any:
        """A JSON-like value with every string in it (keys too) scrubbed; each distinct string once."""
        return self._json(value, {})

    def _json(self, value: Any, seen: dict[str, str]) -> Any:
        if isinstance(value, str):
            clean = seen.get(value)
            if clean is None:
                clean = seen[value] = self.scrub(value)
            return clean
        if isinstance(value, Mapping):
            return {self._json(k, seen) if isinstance(k, str) else k: self._json(v, seen) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._json(item, seen) for item in value]
        return value

    def _held_span(self, text: str, start: int, end: int) -> tuple[int, int]:
        """An anchor widened over the rest of its key: a start forwards, an end backwards."""
        best_start, best_end = start, end
        for key, where in self._anchors[text[start:end]]:
            if where == "head":
                stop = end
                while stop < len(text) and stop - start < len(key) and text[stop] == key[stop - start]:
                    stop += 1
                best_end = max(best_end, stop)
            elif where == "tail":
                begin = start
                while begin > 0 and end - begin < len(key) and text[begin - 1] == key[len(key) - (end - begin) - 1]:
                    begin -= 1
                best_start = min(best_start, begin)
        return best_start, best_end

    def _shape_span(self, text: str, lowered: str, at: int, literal: str,
                    pattern: re.Pattern[str] | None) -> tuple[int, int] | None:
        if pattern is not None:
            match = pattern.match(lowered, at)
            return match.span("v") if match is not None else None
        if literal in _MASK_LITERALS:
            return self._mask_span(text, at, at + len(literal))
        start, prefix = at, literal
        if literal == "k-":
            begin = next((at + 2 - len(p) for p in _K_PREFIXES if lowered.startswith(p, max(0, at + 2 - len(p)))
                          and at + 2 - len(p) >= 0), None)
            if begin is None:
                return None
            start, prefix = begin, lowered[begin:at + 2]
        if start > 0 and text[start - 1].isalnum():
            return None  # inside a word: "network-…" is not an `rk-` key
        if prefix == "aiza" and text[start:start + 4] != "AIza":
            return None
        end = stop = start + len(prefix)
        while stop < len(text) and text[stop] in _SHAPE_CHARS:
            stop += 1
        return (start, stop) if stop - end >= (30 if prefix == "aiza" else 8) else None

    def _mask_span(self, text: str, start: int, end: int) -> tuple[int, int] | None:
        """`head***tail` where head starts a held key and tail ends the same key: the whole token."""
        if not self._keys:
            return None
        while end < len(text) and text[end] in _MASK_CHARS:
            end += 1
        head_start = start
        while head_start > max(0, start - _MASK_CONTEXT) and text[head_start - 1] in _TOKEN_CHARS:
            head_start -= 1
        tail_end = end
        while tail_end < min(len(text), end + _MASK_CONTEXT) and text[tail_end] in _TOKEN_CHARS:
            tail_end += 1
        head, tail = text[head_start:start].lower(), text[end:tail_end].lower()
        if len(head) < _MASK_HEAD_MIN or len(tail) < _MASK_TAIL_MIN:
            return None
        for key in self._keys:
            if len(key) >= FRAGMENT_MIN_KEY and _shown_start(head, key) >= _MASK_HEAD_MIN \
                    and _shown_end(tail, key) >= _MASK_TAIL_MIN:
                return head_start, tail_end
        return None


def _lower(text: str) -> str:
    """`text` lower-cased character by character, so that positions in it are positions in `text`."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def _masked(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with each span (overlapping ones merged) replaced by one `MARKER`."""
    spans.sort()
    out: list[str] = []
    cursor = 0
    start, end = spans[0]
    for next_start, next_end in spans[1:]:
        if next_start <= end:
            end = max(end, next_end)
            continue
        out.append(text[cursor:start])
        out.append(MARKER)
        cursor = end
        start, end = next_start, next_end
    out.append(text[cursor:start])
    out.append(MARKER)
    out.append(text[end:])
    return "".join(out)


def _shown_start(shown: str, key: str) -> int:
    """How long a start of `key` `shown` ends with (what is printed before a mask run)."""
    for cut in range(len(shown)):
        if key.startswith(shown[cut:]):
            return len(shown) - cut
    return 0


def _shown_end(shown: str, key: str) -> int:
    """How long an end of `key` `shown` starts with (what is printed after a mask run)."""
    for cut in range(len(shown), 0, -1):
        if key.endswith(shown[:cut]):
            return cut
    return 0


def key_forms(key: str) -> list[str]:
    """The forms of `key` that are found as they are: itself, escaped, and inside base64."""
    forms = {key, quote(key, safe=""), quote(key, safe="/"), quote_plus(key), key.replace("/", "\\/")}
    raw = key.encode()
    for offset in range(3):
        padded = b"\0" * offset + raw
        full = 4 * (len(padded) // 3)  # characters that depend on whole groups only
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            core = encode(padded).decode()[4 if offset else 0: full]
            if len(core) >= FRAGMENT_CHARS:
                forms.add(core)
    return sorted(forms)


def _trie_pattern(words: Iterable[str]) -> str:
    """One regex alternation of `words` as a trie; at one position the longest word wins."""
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = True
    return _emit(root)


def _emit(node: dict[str, Any]) -> str:
    branches = []
    for char in sorted(c for c in node if c):
        child = node[char]
        run = [char]
        while len(child) == 1 and "" not in child:  # a chain: one literal, no nesting
            (char, child), = child.items()
            run.append(char)
        branches.append(re.escape("".join(run)) + _emit(child))
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{body})?" if "" in node else body


@functools.lru_cache(maxsize=16)
def scrubber_of(secrets: frozenset[str]) -> Scrubber:
    """One compiled scrubber per set of secrets (tables reloaded with the same keys share it)."""
    return Scrubber(secrets)


def table_secrets(table: Table) -> frozenset[str]:
    """Every credential a table carries: each target's key, whatever its provider type."""
    return frozenset(t.credential.reveal() for t in table.targets().values() if t.credential)


class ScrubbingFilter(logging.Filter):
    """A safety net on the loggers: a record's message, traceback and stack leave scrubbed.

    What the sidecar logs is scrubbed where it is made; this catches what is not (a library's
    message, an exception's text in a traceback). Attached to loggers, not handlers, so it holds
    for every handler, the test's included. The message is formatted here, once.
    """

    def __init__(self, scrubber: Callable[[], Scrubber]) -> None:
        super().__init__()
        self._scrubber = scrubber

    def filter(self, record: logging.LogRecord) -> bool:
        scrubber = self._scrubber()
        try:
            message = record.getMessage()
        except Exception:  # a handler would print the broken record with its arguments
            message = f"{record.msg!s} (log arguments not shown: they do not fit the message)"
        clean = scrubber.scrub(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info is not None and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = scrubber.scrub(_FORMATTER.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = scrubber.scrub(record.stack_info)
        return True


_FORMATTER = logging.Formatter()
