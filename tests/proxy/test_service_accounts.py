"""Service-account keys: loaded or refused without a word of the key, and signed as google-auth signs them."""

from __future__ import annotations

import datetime
from pathlib import Path
from unittest import mock

import orjson
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from google.auth import _helpers, jwt
from google.oauth2 import service_account as google_service_account

from llmroute_proxy.config import ConfigError, load_table
from llmroute_proxy.scrubbing import MARKER, Scrubber
from llmroute_proxy.service_accounts import (
    SCOPE,
    load_service_account,
    self_signed_jwt,
    service_account_problem,
)
from llmroute_proxy.sync.protocol import TableRejected, compile_payload, table_payload
from tests.proxy.google_keys import service_account

ACCOUNT = service_account()
NOW = 1_900_000_000


def public_pem() -> bytes:
    return ACCOUNT.public_key.public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def test_the_token_is_the_one_google_auth_makes_for_vertex_and_verifies_with_the_public_key() -> None:
    ours = self_signed_jwt(load_service_account(ACCOUNT.key_file), NOW)
    info = orjson.loads(ACCOUNT.key_file)
    theirs_credentials = google_service_account.Credentials.from_service_account_info(
        info, scopes=[SCOPE], always_use_jwt_access=True)
    at = datetime.datetime.fromtimestamp(NOW, datetime.UTC).replace(tzinfo=None)
    with mock.patch.object(_helpers, "utcnow", return_value=at):
        theirs_credentials.refresh(mock.Mock())
    theirs = theirs_credentials.token

    assert jwt.decode_header(ours) == jwt.decode_header(theirs) == {"typ": "JWT", "alg": "RS256", "kid": ACCOUNT.key_id}
    with mock.patch.object(_helpers, "utcnow", return_value=at):
        assert jwt.decode(ours, certs=public_pem(), verify=True) == jwt.decode(theirs, certs=public_pem(), verify=True)
    assert jwt.decode(ours, verify=False) == {"iss": ACCOUNT.client_email, "sub": ACCOUNT.client_email, "iat": NOW,
                                              "exp": NOW + 3600, "scope": SCOPE}


def _info(**changes: object) -> str:
    info = orjson.loads(ACCOUNT.key_file)
    info.update(changes)
    return orjson.dumps({k: v for k, v in info.items() if v is not None}).decode()


@pytest.mark.parametrize(("text", "says"), [
    ("sk-not-a-key-file-0123456789", "is not JSON"),
    ("[1, 2]", "is not a JSON object"),
    (_info(type="authorized_user"), "has type 'authorized_user'"),
    (_info(client_email=None), "misses client_email"),
    (_info(private_key_id=""), "misses private_key_id"),
    (_info(private_key=ACCOUNT.private_pem[:200] + ACCOUNT.private_pem[-40:]), "does not load"),
])
def test_a_key_that_does_not_parse_or_load_is_refused_saying_why_and_never_what_it_holds(text: str,
                                                                                       says: str) -> None:
    problem = service_account_problem(text)

    assert problem is not None and says in problem
    assert ACCOUNT.private_pem[40:72] not in problem and "0123456789" not in problem


def test_the_scrubber_hides_the_private_key_whole_and_by_its_lines() -> None:
    scrubber = Scrubber([ACCOUNT.key_file])
    line = ACCOUNT.private_pem.splitlines()[3]

    assert MARKER in scrubber.scrub(f"upstream said: bad key {line}") and line not in scrubber.scrub(line + " x")
    assert ACCOUNT.private_pem not in scrubber.scrub(f"dump: {ACCOUNT.private_pem}")


VERTEX_CONFIG = """
apiVersion: llmroute.dev/v1alpha1
kind: LLMProvider
metadata: {name: gcp}
spec:
  type: vertex
  endpoints: [{region: us-east5, url: "https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5"}]
  credentials: {env: GCP_KEY}
  models: [{name: gemini-2.5-pro}]
---
apiVersion: llmroute.dev/v1alpha1
kind: LLMRoute
metadata: {name: main}
spec:
  tiers: {default: {targets: [{provider: gcp, model: gemini-2.5-pro}]}}
  defaultTier: default
"""


def test_a_bad_key_is_refused_when_the_file_loads_naming_the_provider_and_not_the_key(tmp_path: Path) -> None:
    path = tmp_path / "llmroute.yaml"
    path.write_text(VERTEX_CONFIG)
    broken = _info(private_key=ACCOUNT.private_pem[:300])

    with pytest.raises(ConfigError) as refused:
        load_table(path, environ={"GCP_KEY": broken})

    message = str(refused.value)
    assert "LLMProvider/gcp" in message or "gcp" in message
    assert "spec.credentials.env" in message and "private_key does not load" in message
    assert ACCOUNT.private_pem[40:72] not in message and ACCOUNT.client_email not in message
    assert load_table(path, environ={"GCP_KEY": ACCOUNT.key_file}).targets()


def test_a_pushed_table_with_a_bad_key_is_rejected_and_says_which_provider(tmp_path: Path) -> None:
    documents = list(yaml.safe_load_all(VERTEX_CONFIG))

    with pytest.raises(TableRejected) as refused:
        compile_payload(table_payload("us-east5", documents, {"gcp": "not a key file at all, 0123456789"}))

    assert "table.credentials.gcp: the service-account key is not JSON" in str(refused.value)
    assert "0123456789" not in str(refused.value)
