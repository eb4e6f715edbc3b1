"""The status the operator computes fits the CRDs' status schemas: the API server would store all of it.

A status field the schema lacks is silently pruned by the API server (and `kubectl get` then shows an
empty column); a value of the wrong type makes the whole status write fail. So every status document the
operator's status computer makes in a busy world (ACKs, a NACK, spend past the alert, a degraded
provider, a route that is not accepted) is checked against `status` of its CRD.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema

from tests.crds.apiserver import list_type_errors, prune, schema_for
from tests.operator.resources import route
from tests.operator.test_status import PODS, World, failing


def busy_world() -> World:
    broken = route(budget_usd=5.0)
    broken["metadata"]["name"] = "broken"
    broken["spec"]["defaultTier"] = "nope"
    world = World(broken)
    world.connect_all()
    world.book.acked(PODS[0], world.version(PODS[0]))
    world.book.nacked(PODS[1], world.version(PODS[1]), "bad table")
    world.spend(PODS[0], 9.5)
    failing(world, PODS[2], 10, 8)
    world.compute()
    world.now += 1
    world.compute()
    return world


def status_problems(kind: str, status: dict[str, Any]) -> list[str]:
    schema = schema_for(kind)["properties"]["status"]
    pruned: list[str] = []
    prune(copy.deepcopy(status), schema, ".status", pruned)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft4Validator(schema).iter_errors(status)]
    return [*(f"{p}: not in the schema (pruned)" for p in pruned), *errors,
            *list_type_errors(status, schema, ".status")]


def test_every_status_the_operator_computes_fits_its_crd() -> None:
    world = busy_world()
    kinds = {kind for kind, _, _ in world.statuses}
    assert kinds == {"LLMRoute", "LLMProvider"}
    problems = {ref: status_problems(ref[0], status) for ref, status in world.statuses.items()}
    assert problems == {ref: [] for ref in world.statuses}


def test_the_busy_world_fills_every_status_field() -> None:
    """So that the check above saw each field of the schemas at least once."""
    world = busy_world()
    for kind in ("LLMRoute", "LLMProvider"):
        schema = schema_for(kind)["properties"]["status"]["properties"]
        seen = {key for (k, _, _), status in world.statuses.items() if k == kind for key in status}
        assert seen == set(schema), kind
