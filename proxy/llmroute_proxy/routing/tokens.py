"""What a prompt is made of: an estimate of its size in tokens, and whether it holds code.

Both run on the request path of every request whose route has a size or code rule, so
neither may load a tokenizer: the sidecar fronts several providers whose tokenizers differ
anyway, and a rule threshold needs a good estimate, not an exact count.

The token estimate counts, in one `bytes.translate` plus a dozen C-level `bytes.count`
passes, the features that drive BPE pre-tokenisation: where words start, where runs of
punctuation start, camelCase humps, digits, line breaks, runs of spaces, non-ASCII bytes.
The weights were fitted (least squares on relative error) against o200k_base counts of
licence texts, package READMEs, Python/C/JS source and JSON, and are checked by
`tests/proxy/routing/test_tokens.py` on held-out text.

Long texts are judged from evenly spaced windows, so the cost per request stays flat
while the token estimate stays proportional to the length. For code this means a long
prompt counts as code when it is fenced or when code is a noticeable part of it, not
when one line of code hides somewhere in pages of prose.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

_TOKEN_SAMPLE = (2048, 16)  # characters, windows: within ~7 % of the whole text's estimate
_CODE_SAMPLE = (4096, 8)  # wider windows keep whole lines for the line-anchored checks


def _byte_class(byte: int) -> int:
    char = chr(byte)
    if "a" <= char <= "z":
        return ord("a")
    if "A" <= char <= "Z":
        return ord("A")
    if "0" <= char <= "9":
        return ord("0")
    if char == " ":
        return ord(" ")
    if char in "\n\r\t\v\f":
        return ord("\n")
    if byte < 0x80:
        return ord(".")
    return ord("c") if byte < 0xC0 else ord("u")


_CLASSES = bytes(_byte_class(b) for b in range(256))
_SPACE_OR_NOT = bytes(ord(" ") if b == ord(" ") else ord("x") for b in range(256))

# (pattern in the class string, weight): fitted against o200k_base.
_WEIGHTS: tuple[tuple[bytes, float], ...] = (
    (b"a", 0.12),  # lower-case letters: long words cost more than one token
    (b"A", 0.31),  # upper-case letters
    (b"0", 1.00),  # digits: numbers split into groups of at most three
    (b"\n", 0.42),  # line breaks
    (b"c", 0.33),  # UTF-8 continuation bytes: non-Latin scripts
    (b" a", 0.65),  # a word after a space
    (b".a", 0.39),  # a word after punctuation (`self.name`, `"key`)
    (b"a.", 0.83),  # punctuation after a word
    (b" .", 1.37),  # punctuation after a space
    (b"aA", 0.29),  # camelCase humps
    (b"a0", 3.09),  # digits glued to letters: identifiers, hashes, base64
)
_SPACE_RUN_WEIGHT = 0.16  # runs of two or more spaces: indentation, alignment


ESTIMATE_TOLERANCE = 0.15
"""How far `estimate_tokens` may be from a real tokenizer's count, either way."""


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate of `text`'s length in tokens (within ~15 % of o200k_base)."""
    if not text:
        return 0
    sample = _evenly_spaced_sample(text, *_TOKEN_SAMPLE)
    return max(1, round(_weighted_features(sample) * len(text) / len(sample)))


def _evenly_spaced_sample(text: str, size: int, windows: int) -> str:
    """`text` itself when short; else windows spread over it, to bound the work per request."""
    if len(text) <= size:
        return text
    width = size // windows
    stride = (len(text) - width) / (windows - 1)
    return "".join(text[int(i * stride): int(i * stride) + width] for i in range(windows))


def _weighted_features(text: str) -> float:
    raw = text.encode("utf-8", "surrogatepass")
    classes = raw.translate(_CLASSES)
    total = sum(classes.count(pattern) * weight for pattern, weight in _WEIGHTS)
    return total + raw.translate(_SPACE_OR_NOT).count(b"x  ") * _SPACE_RUN_WEIGHT


_STRONG = 2
_WEAK = 1
_CODE_SCORE = 2  # one strong signal, or two weak ones (prose shows a weak one now and then)
_LINE_WINDOW = 512  # longer lines (minified code, base64) are not inspected past this
_CANDIDATES_CHECKED = 64  # bounds the confirming work on text that repeats a candidate

_IDENT = r"[A-Za-z_$][\w$]*"

# Line-start keyword → (weight, regex confirming the whole line from its first character).
_LINE_SIGNALS: dict[str, tuple[int, re.Pattern[str]]] = {
    keyword: (weight, re.compile(pattern))
    for keywords, weight, pattern in (
        (("#include",), _STRONG, r"[ \t]*#include[ \t]*[<\"]"),
        (("#define",), _STRONG, r"[ \t]*#define[ \t]+\w"),
        (("#if", "#ifdef", "#ifndef"), _STRONG, r"[ \t]*#(?:ifn?def[ \t]+\w|if[ \t]+(?:defined|!?\w+[ \t]*$))"),
        (("#!",), _STRONG, r"#!/\w"),
        (("def", "async"), _STRONG, rf"[ \t]*(?:async[ \t]+)?def[ \t]+{_IDENT}[ \t]*\("),
        (("class", "export", "public", "abstract", "final", "data"), _STRONG,
         rf"[ \t]*(?:(?:export|public|abstract|final|data)[ \t]+)*(?:class[ \t]+{_IDENT}[ \t]*(?:[(:{{]|extends\b"
         rf"|implements\b|$)|(?:default[ \t]+)?(?:async[ \t]+)?function\b[ \t]*[\w$]*[ \t]*\(|const[ \t]+{_IDENT}[ \t]*=)"),
        (("import", "from"), _STRONG,
         r"[ \t]*(?:import[ \t]+[\w.]+(?:[ \t]+as[ \t]+\w+)?(?:[ \t]*,[ \t]*[\w.]+)*[ \t]*;?[ \t]*$"
         r"|from[ \t]+[\w.]+[ \t]+import[ \t]+[\w*(]|import[ \t]+[\w{}*, \t]{1,120}[ \t]from[ \t]+['\"]"
         r"|import[ \t]+['\"])"),
        (("function",), _STRONG, r"[ \t]*(?:async[ \t]+)?function\b[ \t]*[\w$]*[ \t]*\("),
        (("fn", "pub"), _STRONG, r"[ \t]*(?:pub(?:\([\w ]+\))?[ \t]+)?(?:async[ \t]+)?fn[ \t]+\w+[ \t]*[(<]"),
        (("func",), _STRONG, r"[ \t]*func[ \t]+(?:\([^)\n]{0,80}\)[ \t]*)?\w+[ \t]*[(\[]"),
        (("package",), _STRONG, r"[ \t]*package[ \t]+[\w.]+[ \t]*;?[ \t]*$"),
        (("for",), _STRONG, r"[ \t]*for(?:[ \t]+\w+(?:[ \t]*,[ \t]*\w+)*[ \t]+in[ \t][^\n]{1,200}:[ \t]*$"
                            r"|[ \t]*\([^\n;]{0,80};[^\n;]{0,80};)"),
        (("if", "elif", "while"), _WEAK, r"[ \t]*(?:el)?(?:if|while)[ \t]*(?:\([^\n]{1,200}\)[ \t]*\{?|[ \t][^\n]{1,200}:)[ \t]*$"),
        (("return",), _WEAK, r"[ \t]*return[ \t]+[^\n]{1,120}[;)\]}\w\"'][ \t]*$"),
        (("let", "const", "var"), _WEAK,
         rf"[ \t]*(?:let[ \t]+(?:mut[ \t]+)?|const[ \t]+|var[ \t]+){_IDENT}[ \t]*(?::[^=\n]{{1,40}})?=[^=]"),
    )
    for keyword in keywords
}
_STATEMENT = re.compile(rf"[ \t]*(?:{_IDENT}(?:[.\[][^\n=]{{0,80}})?[ \t]*(?:[-+*/%|&]?=|\+\+|--)[^\n]*"
                        rf"|return\b[^\n]*|{_IDENT}(?:\.{_IDENT})*\([^\n]*\)[ \t]*);[ \t]*$")
_ATTRIBUTE_ASSIGNMENT = re.compile(rf"[ \t]*{_IDENT}(?:\.{_IDENT}|\[[^\]\n]{{1,40}}\])+[ \t]*=[ \t]*[^\s=]")
_SQL_SELECT = re.compile(r"SELECT[ \t\n]+(?:DISTINCT[ \t\n]+)?[\w*.,()\t\n ]{1,300}?[ \t\n]FROM[ \t\n]+\w")

# Each scan starts with one literal character, which lets the regex engine jump from
# one occurrence of it to the next; a single regex with many alternatives would test
# every character against a set, several times slower. Lookbehinds sit after the literal
# for the same reason. Every repetition is bounded or stopped by the line's end: no
# catastrophic backtracking.
_LINE_START = re.compile(
    r"\n[ \t]*(?:(?:#include|#define|#ifn?def|#if|#!|def|async|class|export|public|abstract|final|data"
    r"|import|from|function|fn|pub|func|package|for|if|elif|while|return|let|const|var)(?=[ \t(<{!/:])"
    r"|[A-Za-z_$][\w$]*[.\[][^\n=]{0,80}=)"
)
_STATEMENT_END = re.compile(r";(?=[ \t]*\n)")
_BLOCK_OPENER = re.compile(r"\)[ \t]*\{(?=[ \t]*\n)")
_SELECT = re.compile(r"SELECT(?=[ \t\n])")
_INSERT = re.compile(r"INSERT INTO [\w\"`]")
_CREATE = re.compile(r"CREATE TABLE [\w\"`]")
_EQUALITY = re.compile(r"=(?:(?<=[\w)\]'\"] =)=(?= [\w(\"'\[-])|(?<=[\w)\]'\"]=)=(?=[\w(\"'\[-])"
                       r"|(?<=[\w)\]'\"] !=)(?= [\w(\"'\[-])|(?<=[\w)\]'\"]!=)(?=[\w(\"'\[-])"
                       r"|>(?=[ \t]?[\w({\['\"]))")
_AND = re.compile(r"&&(?=[ \t]?[\w(!])")
_OR = re.compile(r"\|\|(?<=[\w)\]] \|\|)(?= [\w(!])")


def _line_start_weight(text: str, candidate: re.Match[str]) -> int:
    found = candidate.group()
    line_start = candidate.start() + 1
    if found.endswith("="):
        return _WEAK if _line_matches(_ATTRIBUTE_ASSIGNMENT, text, line_start) else 0
    weight, pattern = _LINE_SIGNALS[found.lstrip()]
    return weight if _line_matches(pattern, text, line_start) else 0


def _statement_weight(text: str, candidate: re.Match[str]) -> int:
    line_start = text.rfind("\n", 0, candidate.start()) + 1
    return _WEAK if _line_matches(_STATEMENT, text, line_start) else 0


def _select_weight(text: str, candidate: re.Match[str]) -> int:
    end = min(len(text), candidate.start() + _LINE_WINDOW)
    return _STRONG if _SQL_SELECT.match(text, candidate.start(), end) else 0


def _strong(text: str, candidate: re.Match[str]) -> int:
    return _STRONG


def _weak(text: str, candidate: re.Match[str]) -> int:
    return _WEAK


_SCANS: tuple[tuple[re.Pattern[str], Callable[[str, re.Match[str]], int]], ...] = (
    (_BLOCK_OPENER, _strong),
    (_INSERT, _strong),
    (_CREATE, _strong),
    (_SELECT, _select_weight),
    (_LINE_START, _line_start_weight),
    (_STATEMENT_END, _statement_weight),
    (_EQUALITY, _weak),
    (_AND, _weak),
    (_OR, _weak),
)


def contains_code(text: str) -> bool:
    """Whether `text` holds source code: a fence, or syntax that prose seldom shows."""
    if "```" in text:
        return True
    sample = "\n" + _evenly_spaced_sample(text, *_CODE_SAMPLE) + "\n"
    score = 0
    for scan, weigh in _SCANS:
        for checked, candidate in enumerate(scan.finditer(sample)):
            score += weigh(sample, candidate)
            if score >= _CODE_SCORE:
                return True
            if checked >= _CANDIDATES_CHECKED:
                break
    return False


def _line_matches(pattern: re.Pattern[str], text: str, line_start: int) -> bool:
    line_end = text.find("\n", line_start)
    if line_end < 0:
        line_end = len(text)
    return pattern.match(text, line_start, min(line_end, line_start + _LINE_WINDOW)) is not None


def embedding_input_tokens(value: Any) -> int:
    """An embeddings request's `input` in tokens (validated: a text, or an array of texts, token ids
    or arrays of token ids): the texts estimated, the token ids counted."""
    if isinstance(value, str):
        return estimate_tokens(value)
    items = value if isinstance(value, list) else ()
    return sum(estimate_tokens(item) if isinstance(item, str) else len(item) if isinstance(item, list) else 1
               for item in items)


def prompt_text(messages: list[Any]) -> str:
    """Every text the model reads from `messages`, joined by line breaks; images ignored."""
    parts: list[str] = []
    for message in messages:
        if isinstance(message, Mapping):
            collect_message_texts(message, parts)
    return "\n".join(parts)


def collect_message_texts(message: Mapping[str, Any], parts: list[str]) -> None:
    """The texts of one message (or delta) into `parts`: its content, and its tool calls' names and arguments."""
    content = message.get("content")
    if isinstance(content, str):
        parts.append(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping):
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
            elif isinstance(part, str):
                parts.append(part)
    for call in message.get("tool_calls") or ():
        if isinstance(call, Mapping):
            _collect_function(call.get("function"), parts)
    _collect_function(message.get("function_call"), parts)


def _collect_function(function: Any, parts: list[str]) -> None:
    if not isinstance(function, Mapping):
        return
    for key in ("name", "arguments"):
        value = function.get(key)
        if isinstance(value, str):
            parts.append(value)
