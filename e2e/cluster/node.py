"""A single-node Kubernetes v1.20 on this machine, from Debian packages, for the tier C end-to-end run.

    node.py up        start etcd, kube-apiserver, controller-manager, scheduler, containerd, kubelet and
                      kube-proxy; return when the node is Ready
    node.py import T  import docker-archive tars into the node's containerd (namespace k8s.io)
    node.py kubectl … run the built kubectl against the cluster (inside the node's namespaces)
    node.py exec …    run any command inside the node's namespaces
    node.py down      stop exactly what `up` started and remove what it made
    node.py check     fail if anything is left on the host, or a host sysctl changed

Every workaround comes from /work/shared/testing.md ("A real single-node Kubernetes from Debian packages").
One thing goes further than that recipe: the whole cluster runs in one private *network* namespace as well as a
private mount namespace (`unshare --mount --net --propagation private`, held by one `sleep` process). So its
iptables rules, bridge, veths, `ip_forward` and `route_localnet` exist only in that namespace and vanish with
it; the host's iptables are never written, and pods have no route out of the node at all (no egress, no NAT
to the outside). Inside, every listener is on 127.0.0.1 except the API server, which pods reach through the
`kubernetes` Service at the bridge's address. The host sysctls the kubelet rewrites (`vm.overcommit_memory`,
`kernel.panic`, `kernel.panic_on_oops`) are shadowed by bind-mounted plain files in the mount namespace,
as are `/run`, `/var/lib` and `/var/log`.

State lives in a fresh directory each run ($E2E_STATE, default /tmp/llmroute-e2e); certificates are cached in
~/.cache/llmroute/e2e-certs. Stdlib + `cryptography` (the project's venv).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from controlplane import apiserver_argv, etcd_argv, write_service_account_keys

HERE = Path(__file__).resolve().parent
STATE = Path(os.environ.get("E2E_STATE", "/tmp/llmroute-e2e"))
BASELINE = Path(str(STATE) + ".baseline.json")
CACHE = Path(os.environ.get("LLMROUTE_CACHE", Path.home() / ".cache" / "llmroute"))
CERTS = CACHE / "e2e-certs"

CGROUP_ROOT = "llmroute-e2e"            # the kubelet's --cgroup-root: every pod cgroup lives under it
BRIDGE = "llmr0"
POD_CIDR = "10.244.0.0/24"
NODE_IP = "10.244.0.1"                  # the bridge's address: the API server's advertise address
SERVICE_CIDR = "10.96.0.0/24"
API_PORT = 6443
PAUSE_IMAGE = "localhost/llmroute-pause:static"
ADMIN_TOKEN_FILE = "admin.token"
APT_PACKAGES = ("containerd", "runc", "containernetworking-plugins", "iptables", "etcd-server")

# Host sysctls the kubelet or kube-proxy write; shadowed by files in the mount namespace, checked at the end.
SHADOWED_SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops",
                    "net/ipv4/conf/all/route_localnet")
CHECKED_SYSCTLS = (*SHADOWED_SYSCTLS, "net/ipv4/ip_forward")
# Paths the node components hard-code; they must never appear on the host because of us.
HOST_PATHS = ("/run/containerd", "/run/netns", "/var/lib/cni", "/var/log/pods", "/var/lib/kubelet",
              "/var/lib/containerd", "/var/log/containers")


def log(msg: str) -> None:
    print(f"node: {msg}", file=sys.stderr, flush=True)


class NodeError(Exception):
    pass


# ---------------------------------------------------------------------------------------------- host facts

def binaries() -> Path:
    """The cached Kubernetes binaries (run.sh runs build-binaries.sh first; this never starts a build)."""
    found = sorted(p for p in CACHE.glob("kubernetes-*/bin") if (p / "kubelet").exists() and (p / "kubectl").exists())
    if not found:
        raise NodeError(f"no Kubernetes binaries under {CACHE}: run e2e/cluster/build-binaries.sh")
    return found[-1]


def ensure_packages() -> None:
    missing = [p for p in APT_PACKAGES
               if "install ok installed" not in subprocess.run(
                   ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True).stdout]
    if not missing:
        return
    log(f"installing Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True,
                   env=env, stdout=subprocess.DEVNULL)


def read_sysctls() -> dict[str, str]:
    return {s: Path("/proc/sys", s).read_text().strip() for s in CHECKED_SYSCTLS}


def host_snapshot() -> dict[str, object]:
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {"sysctls": read_sysctls(),
            "links": sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines()),
            "paths": [p for p in HOST_PATHS if os.path.lexists(p)]}


def cgroup_hierarchies() -> list[Path]:
    return sorted(p for p in Path("/sys/fs/cgroup").iterdir() if (p / "cgroup.procs").exists())


def ns_inode(pid: int, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1] or None


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


# ---------------------------------------------------------------------------------------------- certificates

def _certs() -> None:
    """A CA, the API server's serving cert, the kubelet's serving cert, the API server's client cert for the
    kubelet, and the service-account key pair; made once, reused while valid for more than a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if (CERTS / "done").exists():
        ca_cert = x509.load_pem_x509_certificate((CERTS / "ca.crt").read_bytes())
        if ca_cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1):
            return
    shutil.rmtree(CERTS, ignore_errors=True)
    CERTS.mkdir(parents=True, mode=0o700)
    now = datetime.datetime.now(datetime.UTC)

    def key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def write_key(name: str, k: rsa.RSAPrivateKey) -> None:
        path = CERTS / name
        path.touch(mode=0o600)
        path.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    ca_key = key()
    ca = (x509.CertificateBuilder().subject_name(name("llmroute-e2e-ca")).issuer_name(name("llmroute-e2e-ca"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    (CERTS / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    write_key("ca.key", ca_key)

    def leaf(base: str, subject: x509.Name, hosts: tuple[str, ...], usage: ExtendedKeyUsageOID) -> None:
        k = key()
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.subject)
             .public_key(k.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=30))
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if hosts:
            sans: list[x509.GeneralName] = []
            for h in hosts:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(h)))
                except ValueError:
                    sans.append(x509.DNSName(h))
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        (CERTS / f"{base}.crt").write_bytes(b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        write_key(f"{base}.key", k)

    service_ip = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))
    leaf("apiserver", name("kube-apiserver"),
         ("127.0.0.1", "localhost", NODE_IP, service_ip, "kubernetes", "kubernetes.default",
          "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"), ExtendedKeyUsageOID.SERVER_AUTH)
    leaf("kubelet", name("localhost"), ("localhost", "127.0.0.1"), ExtendedKeyUsageOID.SERVER_AUTH)
    leaf("apiserver-kubelet-client", name("kube-apiserver-kubelet-client", "system:masters"), (),
         ExtendedKeyUsageOID.CLIENT_AUTH)
    write_service_account_keys(CERTS)
    (CERTS / "done").touch()
    log(f"certificates written to {CERTS}")


# ---------------------------------------------------------------------------------------------- configuration

TOKEN_USERS = {  # name -> (user, groups); tokens are random per run
    "admin": ("e2e-admin", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", ""),
    "scheduler": ("system:kube-scheduler", ""),
    "kubelet": ("system:node:localhost", "system:nodes"),
    "kube-proxy": ("system:kube-proxy", ""),
}


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=mode)
    path.write_text(text)
    return path


def _configs() -> None:
    cfg = STATE / "config"
    rows = []
    for component, (user, groups) in TOKEN_USERS.items():
        token = os.urandom(24).hex()
        rows.append(f'{token},{user},{user},"{groups}"' if groups else f"{token},{user},{user}")
        _write(cfg / f"{component}.kubeconfig", json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "e2e",
            "clusters": [{"name": "e2e", "cluster": {"server": f"https://127.0.0.1:{API_PORT}",
                                                     "certificate-authority": str(CERTS / "ca.crt")}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": user}}]}, indent=1), 0o600)
        if component == "admin":
            _write(cfg / ADMIN_TOKEN_FILE, token, 0o600)
    _write(cfg / "tokens.csv", "\n".join(rows) + "\n", 0o600)

    # CNI: one bridge, host-local addresses, no masquerade (pods get no egress), no portmap (no ipset here).
    _write(cfg / "cni" / "10-llmroute-e2e.conflist", json.dumps({
        "cniVersion": "0.4.0", "name": "llmroute-e2e",
        "plugins": [{"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
                     "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                              "routes": [{"dst": "0.0.0.0/0"}]}}]}, indent=1))

    _write(cfg / "containerd.toml", f"""\
version = 2
root = "{STATE}/containerd/root"
state = "{STATE}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{STATE}/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{STATE}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "10010"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cfg}/cni"
""")

    _write(cfg / "kubelet.yaml", json.dumps({
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": "127.0.0.1", "port": 10250, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
        "tlsCertFile": str(CERTS / "kubelet.crt"), "tlsPrivateKeyFile": str(CERTS / "kubelet.key"),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(CERTS / "ca.crt")}},
        "authorization": {"mode": "AlwaysAllow"},
        "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{CGROUP_ROOT}", "failSwapOn": False,
        "makeIPTablesUtilChains": False, "resolvConf": str(cfg / "resolv.conf"),
        "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%",
                         "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False, "maxPods": 30,
    }, indent=1))
    _write(cfg / "resolv.conf", "# no cluster DNS and no egress: names resolve from /etc/hosts only\n")

    _write(cfg / "kube-proxy.yaml", json.dumps({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(cfg / "kube-proxy.kubeconfig")},
        "mode": "iptables", "hostnameOverride": "localhost", "bindAddress": "127.0.0.1",
        "healthzBindAddress": "127.0.0.1:10256", "metricsBindAddress": "127.0.0.1:10249",
        "clusterCIDR": POD_CIDR,
        # Service traffic between two pods on the same bridge is SNATed to the bridge so replies come back
        # through the node's conntrack; this is inside the node's namespace only (nothing leaves it).
        "iptables": {"masqueradeAll": True, "syncPeriod": "30s", "minSyncPeriod": "1s"},
        # 0 = leave the kernel's conntrack settings alone (they are global to the machine).
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }, indent=1))


def _ns_init_script() -> Path:
    root = STATE / "root"
    lines = ["set -eu",
             "ip link set lo up",
             f"ip link add {BRIDGE} type bridge",
             f"ip addr add {NODE_IP}/{POD_CIDR.split('/')[1]} dev {BRIDGE}",
             f"ip link set {BRIDGE} up",
             # The node's own processes reach Services too (the API server calls webhooks at their cluster
             # IPs; kube-proxy's OUTPUT rules DNAT them to pods), which needs a route to the service range.
             f"ip route add {SERVICE_CIDR} dev {BRIDGE}",
             # A pod's new connection to a Service with no ready endpoint (not DNATed to a pod) is refused
             # (if kube-proxy has not refused it already), not left to wait on ARP for the cluster IP...
             f"iptables -w -A FORWARD -d {SERVICE_CIDR} -m conntrack --ctstate NEW "
             "-j REJECT --reject-with icmp-port-unreachable",
             # ...and at once every time: by default the kernel sends one ICMP error per second to a peer, so a
             # sidecar retrying a dead provider's Service (ejection off, chart.py's failover) waits for its SYN's
             # retransmission, ~1 s a request. This namespace's own setting, like ip_forward.
             "echo 0 > /proc/sys/net/ipv4/icmp_ratelimit",
             "echo 1 > /proc/sys/net/ipv4/ip_forward   # this network namespace's own"]
    for s in SHADOWED_SYSCTLS:
        shadow = root / "sysctl" / s.replace("/", ".")
        lines.append(f"cat /proc/sys/{s} > {shadow} && mount --bind {shadow} /proc/sys/{s}")
    for d in ("run", "var/lib", "var/log"):
        lines.append(f"mount --bind {root / d.replace('/', '-')} /{d}")
    lines += ["mkdir -p /run/netns /var/log/pods", f"touch {STATE}/ns-ready", "exec sleep infinity"]
    for d in ("sysctl", "run", "var-lib", "var-log"):
        (root / d).mkdir(parents=True, exist_ok=True)
    return _write(STATE / "ns-init.sh", "\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------- processes

def _pids() -> dict[str, dict[str, object]]:
    path = STATE / "pids.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _record(name: str, proc_pid: int, argv: list[str]) -> None:
    pids = _pids()
    pids[name] = {"pid": proc_pid, "argv": argv}
    (STATE / "pids.json").write_text(json.dumps(pids, indent=1))


def _start(name: str, argv: list[str], holder: int | None = None) -> int:
    """Starts a daemon detached from us (its own session), logging to logs/NAME.log. With `holder`, inside the
    holder's mount and network namespaces (nsenter execs the program, so the PID is the daemon's)."""
    full = ["nsenter", "-t", str(holder), "-m", "-n", "--", *argv] if holder else argv
    logf = open(STATE / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - handed to the daemon
    proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=STATE)
    logf.close()
    _record(name, proc.pid, argv)
    return proc.pid


def _alive(name: str, entry: dict[str, object]) -> bool:
    """The recorded process is still ours: same PID *and* the same command line (PIDs wrap here)."""
    line = cmdline(int(entry["pid"]))  # type: ignore[call-overload]
    return line == entry["argv"]


def in_node(argv: list[str], wd: str | None = None, **kw: object) -> subprocess.CompletedProcess[str]:
    holder = int(_pids()["holder"]["pid"])  # type: ignore[call-overload]
    where = [f"--wd={wd}"] if wd else []   # else the holder's directory
    return subprocess.run(["nsenter", "-t", str(holder), "-m", "-n", *where, "--", *argv], text=True, **kw)  # type: ignore[call-overload]


def _wait(what: str, probe: list[str], timeout: float, watch: list[str]) -> None:
    """Polls `probe` (run inside the node) until it exits 0; fails early if a daemon in `watch` died."""
    deadline = time.monotonic() + timeout
    pids = _pids()
    while True:
        if in_node(probe, capture_output=True).returncode == 0:
            return
        for name in watch:
            if not _alive(name, pids[name]):
                raise NodeError(f"{name} exited while waiting for {what}; see {STATE}/logs/{name}.log")
        if time.monotonic() > deadline:
            raise NodeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


def _http_probe(url: str, token: bool = False) -> list[str]:
    head = (f"h={{'Authorization': 'Bearer ' + open('{STATE}/config/{ADMIN_TOKEN_FILE}').read()}}"
            if token else "h={}")
    code = (f"import ssl,urllib.request as u;{head};"
            f"c=ssl.create_default_context(cafile='{CERTS}/ca.crt');"
            f"r=u.urlopen(u.Request('{url}',headers=h),timeout=2,context=c);assert r.status==200")
    return [sys.executable, "-c", code]


# ---------------------------------------------------------------------------------------------- up

def up() -> None:
    t0 = time.monotonic()
    if STATE.exists() and _pids():
        raise NodeError(f"{STATE} holds a cluster: run `node.py down` first")
    ensure_packages()
    bin_dir = binaries()
    _certs()
    shutil.rmtree(STATE, ignore_errors=True)
    (STATE / "logs").mkdir(parents=True)
    if not BASELINE.exists():
        BASELINE.write_text(json.dumps(host_snapshot(), indent=1))
    _configs()
    cfg = STATE / "config"

    script = _ns_init_script()
    holder = _start("holder", ["unshare", "--mount", "--net", "--propagation", "private", "sh", str(script)])
    deadline = time.monotonic() + 10
    while not (STATE / "ns-ready").exists():
        # Dead or a zombie; not an empty cmdline, which is also what an exec in progress shows (unshare
        # exec'ing sh, sh exec'ing sleep): a run failed on that at once with an empty holder.log.
        if time.monotonic() > deadline or _state(holder) == "Z":
            raise NodeError(f"the node's namespaces did not come up; see {STATE}/logs/holder.log")
        time.sleep(0.05)
    # nsenter must find `sleep` (the exec'd holder), not the shell that was setting up the mounts.
    deadline = time.monotonic() + 5
    while (cmdline(holder) or [""])[0] != "sleep":
        if time.monotonic() > deadline:
            raise NodeError("the namespace holder did not settle")
        time.sleep(0.05)
    _record("holder", holder, cmdline(holder) or [])
    (STATE / "namespaces.json").write_text(json.dumps(
        {"mnt": ns_inode(holder, "mnt"), "net": ns_inode(holder, "net")}))

    for hierarchy in cgroup_hierarchies():
        d = hierarchy / CGROUP_ROOT
        d.mkdir(exist_ok=True)
        for f in ("cpuset.cpus", "cpuset.mems"):   # a new cpuset cgroup starts empty; copy the parent's
            if (d / f).exists() and not (d / f).read_text().strip():
                (d / f).write_text((hierarchy / f).read_text())

    _start("etcd", etcd_argv(STATE / "etcd", 2379, 2380, name="e2e", metrics_port=2381), holder)
    _start("containerd", ["containerd", "--config", f"{cfg}/containerd.toml"], holder)
    _wait("etcd", _http_probe("http://127.0.0.1:2381/health"), 30, ["etcd"])
    _start("kube-apiserver", apiserver_argv(
        bin_dir / "kube-apiserver", etcd_port=2379, port=API_PORT, tokens=cfg / "tokens.csv",
        service_account_keys=(CERTS / "sa.key", CERTS / "sa.pub"), service_cidr=SERVICE_CIDR, extra=[
            "--bind-address=0.0.0.0", f"--advertise-address={NODE_IP}",
            f"--tls-cert-file={CERTS}/apiserver.crt", f"--tls-private-key-file={CERTS}/apiserver.key",
            f"--client-ca-file={CERTS}/ca.crt", "--authorization-mode=Node,RBAC", "--anonymous-auth=false",
            f"--kubelet-client-certificate={CERTS}/apiserver-kubelet-client.crt",
            f"--kubelet-client-key={CERTS}/apiserver-kubelet-client.key",
            "--kubelet-preferred-address-types=Hostname,InternalIP",
            "--enable-admission-plugins=NodeRestriction", "--allow-privileged=true", "--event-ttl=10m"]), holder)
    _wait("the API server", _http_probe(f"https://127.0.0.1:{API_PORT}/readyz", token=True), 60,
          ["kube-apiserver", "etcd"])
    _start("kube-controller-manager", [
        f"{bin_dir}/kube-controller-manager", f"--kubeconfig={cfg}/controller-manager.kubeconfig",
        "--bind-address=127.0.0.1", "--port=0", "--leader-elect=false",
        f"--service-account-private-key-file={CERTS}/sa.key", f"--root-ca-file={CERTS}/ca.crt",
        "--use-service-account-credentials",
        f"--cluster-signing-cert-file={CERTS}/ca.crt", f"--cluster-signing-key-file={CERTS}/ca.key",
        "--controllers=*,-nodeipam,-cloud-node-lifecycle,-route,-service",
        "--profiling=false"], holder)
    _start("kube-scheduler", [f"{bin_dir}/kube-scheduler", f"--kubeconfig={cfg}/scheduler.kubeconfig",
                              "--bind-address=127.0.0.1", "--port=0", "--leader-elect=false",
                              "--profiling=false"], holder)
    _wait("containerd", ["test", "-S", f"{STATE}/containerd.sock"], 30, ["containerd"])
    _start("kubelet", [
        f"{bin_dir}/kubelet", f"--config={cfg}/kubelet.yaml", f"--kubeconfig={cfg}/kubelet.kubeconfig",
        "--container-runtime=remote", f"--container-runtime-endpoint=unix://{STATE}/containerd.sock",
        "--hostname-override=localhost", f"--node-ip={NODE_IP}", "--root-dir=/var/lib/kubelet",
        "--v=1"], holder)
    _start("kube-proxy", [f"{bin_dir}/kube-proxy", f"--config={cfg}/kube-proxy.yaml"], holder)
    kubectl = [f"{bin_dir}/kubectl", f"--kubeconfig={cfg}/admin.kubeconfig"]
    _wait("node Ready", [*kubectl, "wait", "--for=condition=Ready", "node/localhost", "--timeout=2s"], 90,
          ["kubelet", "containerd", "kube-apiserver"])
    # Pods wait for their service account's token; the controller-manager makes the default ones.
    _wait("the default service account", [*kubectl, "get", "serviceaccount", "default"], 30,
          ["kube-controller-manager"])
    (STATE / "kubectl").write_text(json.dumps(kubectl))
    log(f"node Ready in {time.monotonic() - t0:.1f} s (state {STATE})")


# ---------------------------------------------------------------------------------------------- down

def _kill(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if Path(f"/proc/{p}").exists() and _state(p) != "Z"]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def _ours(namespaces: dict[str, str]) -> list[int]:
    """Every process that belongs to this cluster: in its mount or network namespace, in its cgroup, or a
    containerd shim serving its socket."""
    sock = f"{STATE}/containerd.sock"
    found = []
    for pid in all_pids():
        if pid == os.getpid():
            continue
        try:
            if (namespaces and (ns_inode(pid, "mnt") == namespaces["mnt"]
                                or ns_inode(pid, "net") == namespaces["net"])):
                found.append(pid)
                continue
            if f"/{CGROUP_ROOT}/" in Path(f"/proc/{pid}/cgroup").read_text():
                found.append(pid)
                continue
        except OSError:
            continue
        line = cmdline(pid) or []
        if any("containerd-shim" in a for a in line[:1]) and sock in line:
            found.append(pid)
    return found


def down() -> None:
    t0 = time.monotonic()
    pids = _pids()
    ns_file = STATE / "namespaces.json"
    namespaces = json.loads(ns_file.read_text()) if ns_file.exists() else {}
    # The kubelet first (it would restart containers), then the containers, then the control plane.
    order = ["kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager", "kube-apiserver",
             "containerd", "etcd", "holder"]
    kubelet = [int(e["pid"]) for n, e in pids.items() if n == "kubelet" and _alive(n, e)]  # type: ignore[call-overload]
    _kill(kubelet, signal.SIGKILL)
    _wait_gone(kubelet, 5)
    _kill(_cgroup_procs(), signal.SIGKILL)   # every container process, by cgroup
    recorded = [int(pids[n]["pid"]) for n in order if n in pids and _alive(n, pids[n])]  # type: ignore[call-overload]
    _kill(recorded, signal.SIGTERM)
    left = _wait_gone(recorded, 10)
    _kill(left, signal.SIGKILL)
    # Whatever is still in the namespaces or cgroups (shims, stragglers) — all ours by construction.
    for _ in range(20):
        stray = _ours(namespaces)
        if not stray:
            break
        _kill(stray, signal.SIGKILL)
        _wait_gone(stray, 2)
    _remove_cgroups()
    keep = os.environ.get("E2E_KEEP_LOGS")
    if keep:
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(STATE / "logs", keep)
    _rm_state()
    log(f"down in {time.monotonic() - t0:.1f} s")


def _cgroup_dirs() -> list[Path]:
    """Every cgroup under the node's root, deepest first; runc and the kubelet remove some concurrently."""
    found: list[Path] = []
    for hierarchy in cgroup_hierarchies():
        for dirpath, _dirs, _files in os.walk(hierarchy / CGROUP_ROOT):
            found.append(Path(dirpath))
    return sorted(found, key=lambda p: -len(p.parts))


def _cgroup_procs() -> list[int]:
    pids: list[int] = []
    for d in _cgroup_dirs():
        try:
            pids += [int(p) for p in (d / "cgroup.procs").read_text().split()]
        except OSError:
            pass
    return pids


def _remove_cgroups() -> None:
    deadline = time.monotonic() + 10
    while True:
        busy = []
        for d in _cgroup_dirs():
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                busy.append(d)
        if not busy:
            return
        if time.monotonic() > deadline:
            raise NodeError(f"cgroups still busy: {', '.join(map(str, busy[:3]))}")
        _kill(_cgroup_procs(), signal.SIGKILL)
        time.sleep(0.2)


def _rm_state() -> None:
    if not STATE.exists():
        return
    # The overlay snapshots were only ever mounted in the node's mount namespace, which is gone: plain files.
    subprocess.run(["rm", "-rf", "--one-file-system", str(STATE)], check=True)


# ---------------------------------------------------------------------------------------------- check

def check() -> None:
    problems = []
    leftover = _ours({})
    for pid in all_pids():
        line = cmdline(pid) or []
        if pid != os.getpid() and any(str(STATE) in a for a in line) and pid not in leftover:
            leftover.append(pid)
    problems += [f"process {p} left: {' '.join(cmdline(p) or [])[:120]}" for p in leftover]
    mounts = Path("/proc/self/mountinfo").read_text()
    problems += [f"mount left: {m.split()[4]}" for m in mounts.splitlines()
                 if str(STATE) in m or "/kubelet/" in m or "/run/netns/" in m]
    problems += [f"cgroup left: {h / CGROUP_ROOT}" for h in cgroup_hierarchies() if (h / CGROUP_ROOT).exists()]
    problems += [f"cgroup left: {h / 'kubepods'}" for h in cgroup_hierarchies() if (h / "kubepods").exists()]
    for tool in ("iptables-save", "ip6tables-save"):
        if shutil.which(tool):
            rules = subprocess.run([tool], capture_output=True, text=True).stdout
            problems += [f"{tool}: {r}" for r in rules.splitlines() if "KUBE-" in r or "CNI-" in r]
    if STATE.exists():
        problems.append(f"state dir left: {STATE}")
    if BASELINE.exists():
        before = json.loads(BASELINE.read_text())
        now = host_snapshot()
        for s, v in before["sysctls"].items():
            if now["sysctls"][s] != v:  # type: ignore[index]
                problems.append(f"sysctl {s.replace('/', '.')} changed: {v} -> {now['sysctls'][s]}")  # type: ignore[index]
        problems += [f"link left: {x}" for x in set(now["links"]) - set(before["links"])]  # type: ignore[arg-type]
        problems += [f"path left: {p}" for p in set(now["paths"]) - set(before["paths"])]  # type: ignore[arg-type]
    else:
        problems.append(f"no baseline {BASELINE}: was `up` run?")
        now = host_snapshot()
        problems += [f"link left: {x}" for x in now["links"] if x.startswith(("veth", BRIDGE, "cni"))]  # type: ignore[union-attr]
    if problems:
        for p in problems:
            log(f"check: {p}")
        raise NodeError(f"{len(problems)} thing(s) left behind")
    BASELINE.unlink(missing_ok=True)
    log("check: nothing left (processes, mounts, cgroups, links, iptables, host paths, sysctls)")


# ---------------------------------------------------------------------------------------------- main

def main(argv: list[str]) -> int:
    cmd, rest = (argv[0], argv[1:]) if argv else ("", [])
    try:
        if cmd == "up":
            up()
        elif cmd == "down":
            down()
        elif cmd == "check":
            check()
        elif cmd == "kubectl":
            return in_node([*json.loads((STATE / "kubectl").read_text()), *rest]).returncode
        elif cmd == "exec":   # in the caller's directory, so relative paths (.venv/bin/python) work
            return in_node(rest, wd=os.getcwd()).returncode
        elif cmd == "import":
            for tar in rest:
                in_node(["ctr", "--address", f"{STATE}/containerd.sock", "-n", "k8s.io", "images", "import", tar], check=True, stdout=subprocess.DEVNULL)
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (NodeError, subprocess.CalledProcessError) as exc:
        log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
