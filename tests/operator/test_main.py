"""The llmroute-operator command line: flags, their environment defaults, what is required, and starting
under a UID that has no name."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from llmroute_operator import main
from llmroute_operator.certs import CertFiles, write_self_signed
from llmroute_operator.main import Operator, Settings, identity, parse
from tests.operator.kopfcluster import Emulator, prepare, running_operator
from tests.operator.test_writer import FakeApi
from tests.ports import free_ports
from tests.syncfakes import FakeReviewer


def test_the_defaults_watch_the_whole_cluster_and_need_a_hub_certificate(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LLMROUTE_HUB_CERT", "LLMROUTE_HUB_KEY", "LLMROUTE_DEV_CERTS", "LLMROUTE_NAMESPACES"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit):
        parse([])
    settings = parse(["--hub-cert", "c.pem", "--hub-key", "k.pem"])
    assert settings == Settings(hub_cert=Path("c.pem"), hub_key=Path("k.pem"))


def test_the_environment_gives_defaults_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMROUTE_DEV_CERTS", "/tmp/dev")
    monkeypatch.setenv("LLMROUTE_NAMESPACES", "team-a, team-b")
    monkeypatch.setenv("LLMROUTE_HUB_PORT", "16443")
    monkeypatch.setenv("LLMROUTE_STATUS_DEBOUNCE_SECONDS", "0.5")
    settings = parse(["--hub-port", "17443", "--log-level", "debug"])
    assert settings.dev_certs == Path("/tmp/dev") and settings.namespaces == ("team-a", "team-b")
    assert settings.hub_port == 17443 and settings.status_debounce_s == 0.5 and settings.log_level == "DEBUG"


@pytest.mark.parametrize(("variable", "value", "said"), [
    ("LLMROUTE_HUB_PORT", "https", "argument --hub-port: not a port (1-65535): 'https'"),
    ("LLMROUTE_WEBHOOK_PORT", "70000", "argument --webhook-port: not a port (1-65535): '70000'"),
    ("LLMROUTE_LEASE_TTL_SECONDS", "0", "argument --lease-ttl: not a positive number of seconds: '0'"),
    ("LLMROUTE_STATUS_DEBOUNCE_SECONDS", "-1", "argument --status-debounce: not a number of seconds of 0 or more"),
    ("LLMROUTE_LOG_LEVEL", "chatty", "argument --log-level: not a log level"),
])
def test_a_bad_environment_value_stops_the_operator_with_a_usage_error_that_names_it(
        variable: str, value: str, said: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(SystemExit) as stopped:
        parse(["--dev-certs", "/tmp/dev"])

    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert said in error and f"(from ${variable})" in error


def test_namespace_flags_replace_the_variables_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMROUTE_NAMESPACES", "team-a,team-b")

    assert parse(["--dev-certs", "/tmp/dev", "--namespace", "team-c"]).namespaces == ("team-c",)
    assert parse(["--dev-certs", "/tmp/dev"]).namespaces == ("team-a", "team-b")


# ---- starting under a UID with no passwd entry (issue 8) ---------------------------------------------------

@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return write_self_signed(tmp_path_factory.mktemp("certs"))


def no_passwd_entry() -> str:
    raise KeyError(f"getpwuid(): uid not found: {os.getuid()}")  # what Python 3.11 raises


def no_user_at_all() -> str:
    raise OSError("No username set in the environment")  # what Python 3.13 raises


@pytest.mark.kmock(cls=Emulator)
@pytest.mark.parametrize("getuser", [no_passwd_entry, no_user_at_all], ids=["KeyError", "OSError"])
async def test_the_operator_starts_when_the_user_cannot_be_named(
        kmock: Emulator, certs: CertFiles, monkeypatch: pytest.MonkeyPatch, getuser: Callable[[], str]) -> None:
    monkeypatch.setattr(getpass, "getuser", getuser)
    monkeypatch.delenv("POD_ID", raising=False)  # kopf's own variable would hide the question
    prepare(kmock)
    async with running_operator(kmock, certs) as cluster:  # ready: kopf's tasks run
        assert cluster.operator.ready.is_set()


def test_the_identity_is_the_pods_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "llmroute-operator-7d9f-x2x4q")
    assert identity() == "llmroute-operator@llmroute-operator-7d9f-x2x4q"
    monkeypatch.delenv("POD_NAME")
    assert identity() == f"llmroute-operator@{socket.gethostname()}"


PASSWD_WITHOUT_US = "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
NSSWITCH_FILES_ONLY = "passwd: files\ngroup: files\nhosts: files\n"  # not systemd's, which makes up root


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("unshare"),
                    reason="needs root and unshare to hide the process's passwd entry in a private mount namespace")
@pytest.mark.kmock(cls=Emulator)
async def test_the_operator_process_runs_where_its_uid_has_no_passwd_entry(kmock: Emulator, tmp_path: Path) -> None:
    """The real condition, for the real process: `llmroute-operator` with no $USER, $LOGNAME or $HOME, whose
    UID the passwd database does not know (a passwd file without it and an nsswitch.conf reading only files,
    bind-mounted in a private mount namespace: the interpreter lives where another UID may not read) — as
    OpenShift or an arbitrary `runAsUser` starts it.
    It becomes ready against the API (kmock) instead of dying in getpass."""
    prepare(kmock)
    hub_port, admin_port = free_ports(2)
    passwd = tmp_path / "passwd"
    passwd.write_text(PASSWD_WITHOUT_US)
    nsswitch = tmp_path / "nsswitch.conf"
    nsswitch.write_text(NSSWITCH_FILES_ONLY)
    (tmp_path / "kubeconfig").write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: kmock, cluster: {{server: '{str(kmock.url).rstrip('/')}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: kmock, context: {cluster: kmock, user: u}}]\ncurrent-context: kmock\n")
    operator = [str(Path(sys.executable).parent / "llmroute-operator"), "--dev-certs", str(tmp_path / "certs"),
                "--hub-host", "127.0.0.1", "--hub-port", str(hub_port),
                "--admin-host", "127.0.0.1", "--admin-port", str(admin_port)]
    script = f'mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/nsswitch.conf && {sys.executable} -c "import getpass; getpass.getuser()" 2>/dev/null ' \
             '&& { echo "getpass still names the user" >&2; exit 3; }; shift 2; exec "$@"'
    process = await asyncio.create_subprocess_exec(
        "unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(passwd), str(nsswitch), *operator,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KUBECONFIG": str(tmp_path / "kubeconfig")},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        ready = await until_ready(f"http://127.0.0.1:{admin_port}/readyz", process)
    finally:
        if process.returncode is None:
            process.terminate()
        assert process.stderr is not None
        log = (await asyncio.wait_for(process.stderr.read(), 30)).decode(errors="replace")
        await asyncio.wait_for(process.wait(), 30)
    assert ready, log[-3000:]


async def until_ready(url: str, process: asyncio.subprocess.Process, timeout: float = 60) -> bool:
    """/readyz answers 200 within `timeout` (False as soon as the process dies)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline and process.returncode is None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return True
            await asyncio.sleep(0.2)
    return False


async def test_the_operator_serves_nothing_before_kopf_has_listed_the_cluster_and_says_why_it_waits(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    monkeypatch.setattr(main, "LISTING_PATIENCE_S", 0.01)
    api = FakeApi()
    operator = Operator(Settings(dev_certs=tmp_path), api, api, FakeReviewer())
    syncing = asyncio.create_task(operator.sync())
    await asyncio.sleep(0.1)
    assert not operator.synced.is_set() and "no table is served until it has" in caplog.text
    operator.listed.set()
    await asyncio.wait_for(syncing, 5)
    assert operator.synced.is_set()


def test_spend_read_back_from_a_routes_status_at_a_restart_reaches_the_lease_book(tmp_path: Path) -> None:
    """The status says 6 of the route's 10 were spent this period and no sidecar says any of it was its own:
    the leases divide the 4 left."""
    from llmroute_operator.contracts import DesiredTable, PodRef

    api = FakeApi()
    operator = Operator(Settings(dev_certs=tmp_path), api, api, FakeReviewer())
    operator.writer.seed(("LLMRoute", "team-a", "chat"),
                         {"spend": {"periodUSD": 6.0, "periodStart": "2026-05-28T00:00:00Z"}})
    assert operator.hub.leases is not None
    pod = PodRef("team-a", "chat-0")
    leases = operator.hub.leases.leases({pod: DesiredTable("v", {}, {}, {"team-a/chat": 10.0})}, now=0,
                                        now_wall=1_779_926_400.0 + 3600)
    assert leases[pod].budgets["chat"].limit_usd == 4.0
