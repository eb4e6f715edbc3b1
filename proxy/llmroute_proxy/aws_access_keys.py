"""An IAM access key given as a Bedrock provider's credential: JSON, as AWS prints one.

A Bedrock provider's key is either an Amazon Bedrock API key (a plain string, sent as a bearer token)
or an IAM access key, with which each request is signed (SigV4). The access key is the JSON object
`aws iam create-access-key` prints (`{"AccessKey": {"AccessKeyId", "SecretAccessKey", …}}`), or the inner
object alone; member names are read with either first letter's case (`accessKeyId` too), and
`SessionToken` is taken for temporary keys. Any JSON object is taken for one, so a mistyped member is
refused when the table is loaded rather than sent as a bearer token.

`AwsCredentials` is the one type of an AWS key here and wherever the sidecar holds one: given so, or
fetched for the pod (`server/aws_credentials`), and what the SigV4 signer signs with (`providers/aws_sigv4`).

Pure; nothing here ever puts a key, or any part of one, in a message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson


class AccessKeyError(ValueError):
    """The credential is not a usable access key; the message says why, never what it holds."""


@dataclass(frozen=True, slots=True)
class AwsCredentials:
    """An access key, with its session token when it is temporary (an assumed role's, a pod's);
    `expires` in epoch seconds (None: a long-term key)."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    expires: float | None = None

    def secrets(self) -> tuple[str, ...]:
        """What of them must never be shown: for the scrubber."""
        return (self.access_key_id, self.secret_access_key, *((self.session_token,) if self.session_token else ()))


def is_access_key(text: str) -> bool:
    """Whether a Bedrock credential is given as an IAM access key (JSON) rather than an API key."""
    return text.lstrip().startswith("{")


def load_access_key(text: str) -> AwsCredentials:
    try:
        info = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise AccessKeyError("is not JSON: expected an IAM access key as `aws iam create-access-key` prints "
                             "it, or an Amazon Bedrock API key (not JSON)") from None
    if not isinstance(info, dict):
        raise AccessKeyError("is not a JSON object: expected an IAM access key")
    inner = _member(info, "AccessKey")
    if isinstance(inner, dict):
        info = inner
    key_id, secret, token = (_member(info, name) for name in ("AccessKeyId", "SecretAccessKey", "SessionToken"))
    missing = [name for name, value in (("AccessKeyId", key_id), ("SecretAccessKey", secret))
               if not isinstance(value, str) or not value]
    if missing:
        found = ", ".join(sorted(name for name in info if isinstance(name, str) and len(name) < 40)) or "none"
        raise AccessKeyError(f"misses {', '.join(missing)} (members found: {found})")
    if token is not None and not isinstance(token, str):
        raise AccessKeyError("has a SessionToken that is not a string")
    return AwsCredentials(key_id, secret, token or None)


def access_key_problem(text: str) -> str | None:
    """Why `text` is not a usable access key, or None."""
    try:
        load_access_key(text)
    except AccessKeyError as problem:
        return str(problem)
    return None


def key_parts(text: str) -> list[str]:
    """What of an access key a log or an echo could quote, for the scrubber: its secret and session token.
    Empty for a credential that is no such key."""
    if not is_access_key(text):
        return []
    try:
        key = load_access_key(text)
    except AccessKeyError:
        return []
    return [key.secret_access_key, *((key.session_token,) if key.session_token else ())]


def _member(info: dict[str, Any], name: str) -> Any:
    """`info[name]`, or under the name with its first letter lower-cased (`accessKeyId`)."""
    return info[name] if name in info else info.get(name[0].lower() + name[1:])
