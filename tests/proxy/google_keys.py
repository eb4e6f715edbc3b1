"""Throwaway service-account keys, as GCP issues them, for the Vertex AI tests (generated, never real)."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass(frozen=True)
class TestServiceAccount:
    key_file: str  # the JSON key file's text
    client_email: str
    key_id: str
    private_pem: str
    public_key: rsa.RSAPublicKey


@functools.cache
def service_account(name: str = "llmroute-sidecar", project: str = "sim-project") -> TestServiceAccount:
    """One RSA-2048 key pair per name (generating one takes a while: made once per test run)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    email = f"{name}@{project}.iam.gserviceaccount.com"
    key_id = hashlib.sha1(name.encode()).hexdigest()
    info = {"type": "service_account", "project_id": project, "private_key_id": key_id, "private_key": pem,
            "client_email": email, "client_id": "1234567890",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": "https://oauth2.googleapis.com/token"}
    return TestServiceAccount(orjson.dumps(info).decode(), email, key_id, pem, key.public_key())
