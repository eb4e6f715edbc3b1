"""The kind path of `make e2e` (E2E_CLUSTER=kind) as far as it runs without Docker: the dispatch in run.sh,
the one-line skip, the kind config, and every command it would run, in order, with a fake runner.

It has never run against a real kind cluster on this machine (no Docker daemon, no kind)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from e2e.cluster import kind
from e2e.cluster.kind import Settings, commands, kind_config, missing

REPO = Path(__file__).resolve().parents[2]
DAEMON_DOWN = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"


class FakeRunner:
    """Records every command; answers from a table keyed by the command's first words."""

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str, str]] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.answers = answers or {}

    def __call__(self, argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        for prefix, (rc, out, err) in self.answers.items():
            if tuple(argv[:len(prefix)]) == prefix:
                return subprocess.CompletedProcess(argv, rc, out, err)
        return subprocess.CompletedProcess(argv, 0, "", "")


def everything(tool: str) -> str | None:
    return f"/usr/bin/{tool}"


def test_the_kind_config_is_one_control_plane_node_with_the_api_server_on_loopback() -> None:
    assert json.loads(kind_config(Settings())) == {
        "kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4", "name": "llmroute-e2e",
        "networking": {"apiServerAddress": "127.0.0.1"}, "nodes": [{"role": "control-plane"}]}
    pinned = Settings(node_image="kindest/node:v1.31.2@sha256:" + "a" * 64)
    assert json.loads(kind_config(pinned))["nodes"] == [{"role": "control-plane", "image": pinned.node_image}]


def test_settings_come_from_the_environment_and_refuse_latest() -> None:
    settings = Settings.from_env({"E2E_KIND_NAME": "mine", "E2E_KIND_NODE_IMAGE": "kindest/node:v1.30.0",
                                  "E2E_KIND_TAG": "t1"})
    assert (settings.name, settings.node_image, settings.image, settings.sidecar_image) == (
        "mine", "kindest/node:v1.30.0", "llmroute/llmroute:t1", "llmroute/llmroute-proxy:t1")
    assert Settings.from_env({}) == Settings()
    with pytest.raises(ValueError, match="latest"):
        Settings.from_env({"E2E_KIND_TAG": "latest"})


@pytest.mark.parametrize("absent", [("kind",), ("docker", "kind", "kubectl")])
def test_missing_tools_are_named_in_one_line(absent: tuple[str, ...]) -> None:
    message = missing(lambda tool: None if tool in absent else f"/usr/bin/{tool}", FakeRunner())
    assert message is not None and "\n" not in message and message.endswith(", ".join(absent))


def test_a_docker_without_its_daemon_is_named_in_one_line() -> None:
    runner = FakeRunner({("docker", "info"): (1, "", f"Client:\n Version: 28.2.2\n{DAEMON_DOWN}\n")})
    message = missing(everything, runner)
    assert message == f"E2E_CLUSTER=kind: docker cannot reach its daemon ({DAEMON_DOWN})"
    assert missing(everything, FakeRunner()) is None


@pytest.mark.parametrize("required, rc", [("", 0), ("1", 1)])
def test_without_the_tools_it_runs_nothing_and_exits_0_unless_required(required: str, rc: int,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    runner = FakeRunner()
    assert kind.main({"E2E_REQUIRED": required}, runner, lambda tool: None) == rc
    assert runner.calls == []
    assert capsys.readouterr().err == "e2e: skipped: E2E_CLUSTER=kind needs docker, kind, kubectl; " \
                                      "not on PATH: docker, kind, kubectl\n"


def test_the_commands_build_both_dockerfiles_load_them_and_give_the_scenario_the_kind_kubeconfig(
        tmp_path: Path) -> None:
    steps = commands(Settings(), tmp_path)
    kubeconfig = str(tmp_path / "kubeconfig")
    assert steps["up"] == [["kind", "create", "cluster", "--name", "llmroute-e2e", "--config",
                            str(tmp_path / "kind.json"), "--kubeconfig", kubeconfig, "--wait", "180s"],
                           ["docker", "exec", "llmroute-e2e-control-plane", "sysctl", "-w",
                            "net.ipv4.icmp_ratelimit=0"]]
    assert steps["images"] == [
        ["docker", "build", "-f", str(REPO / "operator" / "Dockerfile"), "-t", "llmroute/llmroute:e2e", str(REPO)],
        ["docker", "build", "-f", str(REPO / "proxy" / "Dockerfile"), "-t", "llmroute/llmroute-proxy:e2e", str(REPO)],
        ["kind", "load", "docker-image", "--name", "llmroute-e2e", "llmroute/llmroute:e2e",
         "llmroute/llmroute-proxy:e2e"]]
    assert steps["scenario"] == [[sys.executable, str(REPO / "e2e" / "scenario" / "chart.py"), "--kubeconfig",
                                  kubeconfig, "--kubectl", "kubectl", "--image", "llmroute/llmroute:e2e",
                                  "--sidecar-image", "llmroute/llmroute-proxy:e2e"]]
    assert steps["down"] == [["kind", "delete", "cluster", "--name", "llmroute-e2e", "--kubeconfig", kubeconfig]]
    for step in steps.values():  # ~/.kube/config is never written or read
        assert all(".kube" not in word for command in step for word in command)


def test_a_run_goes_up_builds_runs_the_scenario_deletes_and_checks(capsys: pytest.CaptureFixture[str]) -> None:
    runner = FakeRunner()
    assert kind.main({}, runner, everything) == 0
    heads = [" ".join(c[:3]) if c[0] != sys.executable else "chart.py" for c in runner.calls]
    assert heads == ["docker info --format", "kind create cluster", "docker exec llmroute-e2e-control-plane",
                     "docker build -f", "docker build -f",
                     "kind load docker-image", "chart.py", "kind delete cluster", "kind get clusters",
                     "docker ps -a"]
    err = capsys.readouterr().err
    assert "e2e: timings (kind): up 0s images 0s scenario 0s down 0s check 0s" in err and "e2e: passed" in err


def test_a_failed_scenario_still_deletes_the_cluster_and_fails() -> None:
    runner = FakeRunner({(sys.executable,): (1, "", "")})
    assert kind.main({}, runner, everything) == 1
    assert runner.calls[-3][:3] == ["kind", "delete", "cluster"]


def test_a_cluster_left_behind_fails_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    runner = FakeRunner({("kind", "get", "clusters"): (0, "other\nllmroute-e2e\n", ""),
                         ("docker", "ps"): (0, "0123abcd\n", "")})
    assert kind.main({}, runner, everything) == 1
    assert "left behind: kind cluster llmroute-e2e, container 0123abcd" in capsys.readouterr().err


def run_sh(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """e2e/run.sh with a PATH holding only what it needs before the dispatch (no docker, kind or kubectl)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("dirname", "bash"):
        if not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(next(Path(p) / tool for p in ("/usr/bin", "/bin") if (Path(p) / tool).exists()))
    return subprocess.run([str(REPO / "e2e" / "run.sh")], capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": str(bin_dir), "PYTHON": sys.executable, "HOME": os.environ.get("HOME", "/"),
                               **env})


def test_run_sh_dispatches_kind_and_says_what_is_missing_in_one_line(tmp_path: Path) -> None:
    skipped = run_sh(tmp_path, E2E_CLUSTER="kind")
    assert skipped.returncode == 0 and skipped.stdout == ""
    assert skipped.stderr == "e2e: skipped: E2E_CLUSTER=kind needs docker, kind, kubectl; not on PATH: " \
                             "docker, kind, kubectl\n"
    assert run_sh(tmp_path, E2E_CLUSTER="kind", E2E_REQUIRED="1").returncode == 1
    unknown = run_sh(tmp_path, E2E_CLUSTER="minikube")
    assert unknown.returncode == 2 and "local (the default) or kind, not 'minikube'" in unknown.stderr
