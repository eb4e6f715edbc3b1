"""The chart scenario's own logic, without a cluster: its arguments (the local node by default, any
cluster by kubeconfig, as the kind path runs it) and how it reads `kubectl get -o wide`."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import pytest

SCENARIO = Path(__file__).resolve().parents[2] / "e2e" / "scenario"

# Printer columns of crds/llmroutes.yaml with -o wide: a heading with a space, and <none> where nothing is.
ROUTES = """\
NAME    ACCEPTED   SYNCED   SPEND %   TABLE              DEGRADED   AGE
chat    True       1/1      0.4       3f2a9c0d1e2b3c4d   True       5m
other   False      0/0      <none>    <none>             False      5m
"""


@pytest.fixture
def chart(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ModuleType:
    """e2e/scenario/chart.py as the script sees itself (kit beside it), with its state directory in tmp."""
    monkeypatch.setenv("E2E_STATE", str(tmp_path / "state"))
    monkeypatch.syspath_prepend(str(SCENARIO))
    for name in ("kit", "chart"):
        monkeypatch.delitem(__import__("sys").modules, name, raising=False)
    return importlib.import_module("chart")


def test_by_default_the_scenario_runs_on_the_local_node(chart: ModuleType, tmp_path: Path) -> None:
    options = chart.parse(["--image", "localhost/llmroute:0123abcd"])
    assert options.kubeconfig == tmp_path / "state" / "config" / "admin.kubeconfig"
    assert (options.image, options.sidecar_image, options.kubectl) == (
        "localhost/llmroute:0123abcd", "localhost/llmroute:0123abcd", "kubectl")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "kubectl").write_text(json.dumps(["/cache/bin/kubectl", "--kubeconfig=x"]))
    assert chart.parse(["--image", "localhost/llmroute:0123abcd"]).kubectl == "/cache/bin/kubectl"  # the node's


def test_given_a_kubeconfig_and_images_it_runs_on_that_cluster(chart: ModuleType, tmp_path: Path) -> None:
    options = chart.parse(["--kubeconfig", "/tmp/kind/kubeconfig", "--kubectl", "kubectl", "--image",
                           "llmroute/llmroute:e2e", "--sidecar-image", "llmroute/llmroute-proxy:e2e"])
    assert options == chart.Options("llmroute/llmroute:e2e", "llmroute/llmroute-proxy:e2e",
                                     Path("/tmp/kind/kubeconfig"), "kubectl")
    values = chart.values(options.image, options.sidecar_image, "http://10.96.0.50:4318")
    assert values["image"] == {"repository": "llmroute/llmroute", "tag": "e2e", "pullPolicy": "Never"}
    assert values["injection"]["image"] == {"repository": "llmroute/llmroute-proxy", "tag": "e2e"}
    assert values["injection"]["imagePullPolicy"] == "Never"


@pytest.mark.parametrize("ref", ["llmroute/llmroute", "registry.example:5000/llmroute"])
def test_an_image_without_a_tag_is_refused(chart: ModuleType, ref: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        chart.parse(["--image", ref])
    assert "needs a tag" in capsys.readouterr().err


def test_kubectl_tables_are_read_by_their_headings(chart: ModuleType) -> None:
    rows = chart.columns(ROUTES)
    assert rows["chat"] == {"NAME": "chat", "ACCEPTED": "True", "SYNCED": "1/1", "SPEND %": "0.4",
                            "TABLE": "3f2a9c0d1e2b3c4d", "DEGRADED": "True", "AGE": "5m"}
    assert rows["other"]["SPEND %"] == "<none>" and rows["other"]["DEGRADED"] == "False"
    assert chart.columns("") == {}
