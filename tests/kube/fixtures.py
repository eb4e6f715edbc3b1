"""Tier B fixtures: one real kube-apiserver (see apiserver.py) for the whole session, for every tier-B test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.kube.apiserver import ADMIN_TOKEN, ApiServer, kubernetes_bin_dir
from tests.kube.client import Kube


@pytest.fixture(scope="session")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    if os.environ.get("LLMROUTE_SKIP_TIER_B") == "1":
        pytest.skip("LLMROUTE_SKIP_TIER_B=1: the real-API-server tests were asked not to run")
    server = ApiServer(kubernetes_bin_dir(), tmp_path_factory.mktemp("apiserver")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def admin(apiserver: ApiServer) -> Kube:
    return Kube(apiserver.url, ADMIN_TOKEN, apiserver.ssl_context())
