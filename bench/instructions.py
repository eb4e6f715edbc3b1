"""CPU instructions per request, llmroute beside the bare proxy: a figure the machine's load cannot move.

On a shared 2-core VM, throughput and CPU time move by 10-30 % from run to run, more when other jobs
run; counts of executed instructions do not. Each proxy runs under valgrind's callgrind (no pinning:
the count does not depend on the core) in front of the same fake upstream; after a warm-up,
callgrind's counters are zeroed, an exact number of requests is sent (`_load.py -n`), and the
counters are dumped. Instructions are not time (cache misses and syscalls are not in them), so read
this beside `overhead.py`; it is what to compare when a change must show it made the work smaller.
Each proxy runs with `PYTHONHASHSEED=0`, so two runs of one build count the same work.

    .venv/bin/python bench/instructions.py [--requests 300] [--points ns,st,rs,rs_st] [--targets bare,llmroute]

Points `rs` and `rs_st` send the same prompt to `/v1/responses` (non-streaming, streaming) on the same
route and upstream: llmroute only (the bare proxy speaks chat completions), printed as Responses ÷
chat completions beside `ns` and `st`, the cost of the Responses translation in instructions.
`ons`, `ost`, `ors`, `ors_st` are the same four on a route whose provider is of type `openai`, where
Responses requests are sent natively to the upstream's own `/v1/responses` and relayed.

Needs `valgrind` (`apt-get install -y valgrind`), which provides `callgrind_control`. About 3 minutes:
a proxy under callgrind runs ~50x slower, and llmroute takes ~30 s to start there.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson

from _processes import Harness, free_port, harness, llmroute_command
from overhead import (
    CHAT_PATH,
    HERE,
    PYTHON,
    RESPONSES_PATH,
    SIDECAR_CONFIG,
    chat_works,
    start_upstream,
    wait_until,
)

# point -> (path, streamed, route): streams of 20 content events from the upstream, as overhead.py
POINTS = {"ns": (CHAT_PATH, False, None), "st": (CHAT_PATH, True, None),
          "rs": (RESPONSES_PATH, False, None), "rs_st": (RESPONSES_PATH, True, None),
          "ons": (CHAT_PATH, False, "openai"), "ost": (CHAT_PATH, True, "openai"),
          "ors": (RESPONSES_PATH, False, "openai"), "ors_st": (RESPONSES_PATH, True, "openai")}
VERSUS = {"rs": "ns", "rs_st": "st", "ors": "ons", "ors_st": "ost"}
"""A Responses point -> the chat completions point it is compared with (same route, same upstream).
The `o` points take the route whose provider is of type `openai`: Responses requests go to the
upstream's own /v1/responses there (native), where the others are translated to chat completions."""
WARMUP = 60
CONCURRENCY = 8
START_TIMEOUT_S = 240.0


def under_callgrind(out: Path, command: list[str]) -> list[str]:
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no", *command]


def start(h: Harness, target: str, upstream: str) -> tuple[str, subprocess.Popen[bytes], Path]:
    port = free_port()
    profile = h.workdir / f"{target}.callgrind"
    if target == "bare":
        command = [PYTHON, str(HERE / "_bare_proxy.py"), "--port", str(port), "--upstream", upstream]
        env: dict[str, str] = {}
    else:
        config = h.workdir / "llmroute.yaml"
        config.write_text(SIDECAR_CONFIG.format(upstream=upstream))
        # the console script is a Python file: run it with the interpreter, so callgrind follows no exec
        command = [PYTHON, *llmroute_command(), "serve", "--config", str(config), "--host", "127.0.0.1",
                   "--port", str(port), "--admin-port", str(free_port())]
        env = {"FAKE_API_KEY": "sk-fake"}
    # string hashing decides dict and set layouts: an unseeded run moves the count by up to 5 %
    proc = h.spawn(target, 1, under_callgrind(profile, command), env={**env, "PYTHONHASHSEED": "0"})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(proc, lambda: chat_works(base, False) and chat_works(base, True), START_TIMEOUT_S, poll_s=0.5)
    except RuntimeError as error:
        raise SystemExit(f"{target} did not start under callgrind: {error}\n{h.log_tail(target)}") from None
    return base, proc, profile


def serves(target: str, point: str) -> bool:
    """Only llmroute speaks the Responses API and has routes; the bare proxy relays chat completions."""
    return target != "bare" or point in ("ns", "st")


def load(base: str, point: str, requests: int) -> int:
    """Send exactly `requests` requests (CONCURRENCY at a time); the number answered."""
    path, stream, route = POINTS[point]
    command = [PYTHON, str(HERE / "_load.py"), "--url", base + path, "-c", str(CONCURRENCY),
               "-n", str(requests), "--seconds", "600", "--warmup", "0", *(["--stream"] if stream else []),
               *(["-H", f"x-llmroute-route: {route}"] if route else [])]
    done = subprocess.run(command, capture_output=True, check=False, timeout=900)
    result = orjson.loads(done.stdout.splitlines()[-1]) if done.stdout.strip() else {}
    if result.get("errors"):
        raise SystemExit(f"{result['errors']} of {requests} requests failed: {result}")
    ok: int = result.get("ok", 0)
    return ok


def instructions(proc: subprocess.Popen[bytes], profile: Path) -> int:
    """Dump callgrind's counters and return the instructions counted since they were last zeroed."""
    before = set(profile.parent.glob(profile.name + "*"))
    subprocess.run(["callgrind_control", "--dump", str(proc.pid)], capture_output=True, check=True, timeout=120)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for dump in sorted(set(profile.parent.glob(profile.name + "*")) - before):
            for line in dump.read_text(errors="replace").splitlines():
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
        time.sleep(0.2)
    raise SystemExit("callgrind wrote no dump")


def measure(h: Harness, target: str, upstream: str, points: list[str], requests: int) -> dict[str, float]:
    base, proc, profile = start(h, target, upstream)
    per_request: dict[str, float] = {}
    for point in points:
        if not serves(target, point):
            continue
        load(base, point, WARMUP)
        subprocess.run(["callgrind_control", "--zero", str(proc.pid)], capture_output=True, check=True, timeout=120)
        answered = load(base, point, requests)
        per_request[point] = instructions(proc, profile) / max(answered, 1)
    h.stop(proc)
    return per_request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="measured requests per point and target")
    parser.add_argument("--points", default="ns,st,rs,rs_st",
                        help="ns (non-streaming), st (streaming), rs and rs_st (the same on /v1/responses); "
                             "ons, ost, ors, ors_st: the same four on the route whose provider is of type openai")
    parser.add_argument("--targets", default="bare,llmroute", help="bare must come with llmroute for the ratio")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("instructions.py needs valgrind (apt-get install -y valgrind)")
    points = [p for p in args.points.split(",") if p]
    targets = [t for t in args.targets.split(",") if t]
    if set(points) - set(POINTS) or set(targets) - {"bare", "llmroute"}:
        parser.error(f"--points takes {', '.join(POINTS)}; --targets takes bare, llmroute")
    with harness("llmroute-instructions-") as h:
        upstream = start_upstream(h)
        figures = {target: measure(h, target, upstream, points, args.requests) for target in targets}
    print(report(figures, targets, points, args.requests))


def report(figures: dict[str, dict[str, float]], targets: list[str], points: list[str], requests: int) -> str:
    both = "bare" in figures and "llmroute" in figures
    lines = [f"\ninstructions per request ({requests} requests per point, {CONCURRENCY} at a time, under callgrind)",
             f"  {'point':8} " + "".join(f"{t:>14}" for t in targets) + ("   bare ÷ llmroute" if both else "")]
    for point in points:
        row = "".join(f"{figures[t][point]:>14,.0f}" if point in figures[t] else f"{'-':>14}" for t in targets)
        if both and point in figures["bare"]:
            row += f"   {figures['bare'][point] / figures['llmroute'][point]:.2f}"
        lines.append(f"  {point:8} {row}")
    llmroute = figures.get("llmroute", {})
    for point, versus in VERSUS.items():
        if point in llmroute and versus in llmroute:
            extra = llmroute[point] - llmroute[versus]
            lines.append(f"  llmroute {point} ÷ {versus} (Responses ÷ chat completions): "
                         f"{llmroute[point] / llmroute[versus]:.3f} ({extra:+,.0f} instructions per request)")
    return "\n".join(lines)

if __name__ == "__main__":
    main()
