"""Service-account tokens made with the test API server's own signing key (tests/kube/apiserver.py writes it).

`resign` takes a real token (from TokenRequest), changes its claims and signs it again with the key the
API server signs with, so the only thing wrong with it is the change: an expiry in the past, another
namespace, another pod. The API server verifies such a token like one it issued itself.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def claims(token: str) -> dict[str, Any]:
    """The token's claims, unverified."""
    decoded: dict[str, Any] = json.loads(_unb64(token.split(".")[1]))
    return decoded


def resign(token: str, key_file: Path, **changes: Any) -> str:
    """`token` with its claims updated by `changes` (a dict value replaces the whole claim), RS256-signed
    with the private key in `key_file`; the header (its `kid`) is kept."""
    header, _, _ = token.split(".")
    body = {**claims(token), **changes}
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    signed = f"{header}.{_b64(json.dumps(body, separators=(',', ':')).encode())}"
    signature = key.sign(signed.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signed}.{_b64(signature)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
