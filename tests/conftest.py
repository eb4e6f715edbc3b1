"""Shared fixtures for every test tier."""

from tests.kube.fixtures import admin, apiserver  # noqa: F401 - the tier-B fixtures, for tests/kube and tests/crds
