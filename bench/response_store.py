"""Does the Responses store's memory cap bound what it really holds? Counted bytes against memory.

Two parts, in one run:

- in process: `--entries` responses of the shape the sidecar stores (a Response object, the
  conversation it continues, the request's input items) put into a `ResponseStore` large enough
  to keep them all; per entry, the bytes the store counts against what tracemalloc saw allocated
  and what RSS grew by (this is how `ENTRY_OVERHEAD_BYTES` is measured), then the same store
  with a cap of a quarter of that: counted bytes and RSS growth stay under the cap;
- the sidecar: a fake OpenAI upstream and two `llmroute-proxy serve`, one with a Responses store
  of `--cap-mib` and one with a cap of 0 (keeps nothing: the baseline), the same `--requests`
  `/v1/responses` requests (half streamed) against each, in steps. After each step: the store's
  entries and counted MiB from `/status`, both sidecars' RSS, and the difference between them
  against the counted bytes and the cap. The store fills to its cap and evicts half-way.

Run: `.venv/bin/python bench/response_store.py [--entries 20000] [--requests 24000] [--cap-mib 16]
[--steps 6] [--concurrency 16]`. About a minute. Everything started here is stopped on exit.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tracemalloc
import urllib.request
from typing import Any

import orjson

from _processes import Harness, harness
from llmroute_proxy.server.response_store import ENTRY_OVERHEAD_BYTES, ResponseStore
from overhead import HERE, LOAD_CORE, PYTHON, rss_mb, start_llmroute, start_upstream

MIB = 1024 * 1024


def sample_entry(i: int) -> tuple[str, bytes, list[dict[str, Any]]]:
    """A stored response as the sidecar keeps one for a short text turn: ~1.5 KiB in all."""
    response_id = f"resp_{i:048x}"
    answer = f"Hello there, this is answer number {i}, in a few words of text. " * 3
    response = orjson.dumps({
        "id": response_id, "object": "response", "created_at": 1764000000 + i, "status": "completed",
        "model": "fake-gpt", "output": [{"type": "message", "id": f"msg_{i:048x}", "status": "completed",
                                          "role": "assistant", "content": [
                                              {"type": "output_text", "text": answer, "annotations": []}]}],
        "usage": {"input_tokens": 12, "output_tokens": 30, "total_tokens": 42,
                  "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}},
        "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "store": True, "metadata": {}})
    conversation = [{"type": "message", "id": f"msg_{i:047x}i", "status": "completed", "role": "user",
                     "content": [{"type": "input_text", "text": "Say hello in five words please."}]},
                    orjson.loads(response)["output"][0]]  # the request's input item, then the answer's
    return response_id, response, conversation


def rss_self_bytes() -> int:
    return int(rss_mb(os.getpid()) * MIB)


def measure(kind: str, entries: int) -> dict[str, float]:
    """One measurement in this (fresh) process: what `entries` entries cost, kept the `kind` way."""
    samples = [sample_entry(i) for i in range(entries)]
    counted = sum(len(response) + len(orjson.dumps(conversation)) + len(response_id)
                  + ENTRY_OVERHEAD_BYTES for response_id, response, conversation in samples)
    cap = counted // 4 if kind == "capped" else 1 << 40
    store = ResponseStore(max_bytes=cap, ttl_s=3600)
    kept: list[tuple[bytes, ...]] = []
    gc.collect()
    if kind == "traced":
        tracemalloc.start()
    rss0, traced0 = rss_self_bytes(), tracemalloc.get_traced_memory()[0]
    for response_id, response, conversation in samples:
        if kind == "orjson":  # the previous layout: the documents as orjson.dumps returned them
            kept.append((orjson.dumps(orjson.loads(response)), orjson.dumps(conversation)))
        else:
            store.put(response_id, response, conversation, 0.0, (0, 1))
    gc.collect()
    return {"rss": rss_self_bytes() - rss0, "traced": tracemalloc.get_traced_memory()[0] - traced0,
            "counted": counted, "cap": cap, "store_bytes": store.bytes, "kept": store.status(0.0)["entries"] or len(kept)}


def in_process(entries: int) -> None:
    print(f"\nIn process (each figure from a fresh process): {entries:,} entries of the sidecar's shape "
          f"(ENTRY_OVERHEAD_BYTES = {ENTRY_OVERHEAD_BYTES})")
    got = {}
    for kind in ("full", "traced", "capped", "orjson"):
        done = subprocess.run([PYTHON, __file__, "--measure", kind, "--entries", str(entries)],
                              capture_output=True, text=True, timeout=300)
        got[kind] = orjson.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
        if got[kind] is None:
            raise SystemExit(f"measuring {kind} failed: {done.stderr[-400:]}")
    full, traced, capped, old = got["full"], got["traced"], got["capped"], got["orjson"]
    counted = full["counted"]
    content = counted - entries * ENTRY_OVERHEAD_BYTES  # the bytes objects and the ids' characters
    print(f"  counted by the store:   {counted / entries:7.0f} B/entry ({content / entries:.0f} content "
          f"+ {ENTRY_OVERHEAD_BYTES} overhead)")
    print(f"  tracemalloc:            {traced['traced'] / entries:7.0f} B/entry "
          f"(overhead measured: {(traced['traced'] - content) / entries:.0f} B beyond the content)")
    print(f"  RSS growth:             {full['rss'] / entries:7.0f} B/entry "
          f"(overhead measured: {(full['rss'] - content) / entries:.0f} B beyond the content, malloc's "
          f"included) = {full['rss'] / counted:.2f} × counted")
    print(f"  as orjson returns them: {old['rss'] / entries:7.0f} B/entry = {old['rss'] / counted:.2f} × counted "
          f"(the previous layout: orjson's bytes keep their whole growth buffer)")
    print(f"  cap {capped['cap'] / MIB:.1f} MiB: {capped['kept']:,} kept, counted {capped['store_bytes'] / MIB:.1f} "
          f"MiB, RSS growth {capped['rss'] / MIB:.1f} MiB = {capped['rss'] / capped['cap']:.2f} × the cap")


def store_status(admin: str) -> dict[str, Any]:
    with urllib.request.urlopen(admin + "/status", timeout=5) as response:
        status: dict[str, Any] = orjson.loads(response.read())["responses_store"]
        return status


def load(h: Harness, base: str, requests: int, concurrency: int, stream: bool) -> dict[str, Any]:
    command = [PYTHON, str(HERE / "_load.py"), "--url", base + "/v1/responses", "-c", str(concurrency),
               "-n", str(requests), "--seconds", "120", "--warmup", "0", *(["--stream"] if stream else [])]
    done = subprocess.run(h.pinned(LOAD_CORE, command), capture_output=True, text=True, timeout=180)
    try:
        result: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
        return result
    except (IndexError, orjson.JSONDecodeError):
        raise SystemExit(f"load failed: {(done.stdout + done.stderr)[-400:]}") from None


def sidecars(h: Harness, args: argparse.Namespace) -> None:
    cap = args.cap_mib * MIB
    print(f"\nThe sidecar: {args.requests:,} /v1/responses requests (half streamed, {args.concurrency} at a time) "
          f"against a store of {args.cap_mib} MiB and a baseline that keeps nothing (cap 0)")
    upstream = start_upstream(h)
    stored = start_llmroute(h, upstream, "with-store", ["--responses-store-bytes", str(cap)])
    baseline = start_llmroute(h, upstream, "baseline", ["--responses-store-bytes", "0"])
    print(f"  RSS at ready: with store {rss_mb(stored.proc.pid):.1f} MB, baseline {rss_mb(baseline.proc.pid):.1f} MB")
    header = (f"  {'requests':>9} {'entries':>8} {'counted MiB':>12} {'RSS store MiB':>14} {'RSS base MiB':>13} "
              f"{'diff MiB':>9} {'diff ÷ counted':>15} {'diff ÷ cap':>11} {'RSS ÷ base':>11} {'errors':>7}")
    print(header)
    step = max(2, args.requests // args.steps)
    sent = errors = 0
    for _ in range(args.steps):
        for sidecar in (stored, baseline):
            for stream in (False, True):
                result = load(h, sidecar.base, step // 2, args.concurrency, stream)
                errors += int(result.get("errors", 0))
        sent += step
        status = store_status(stored.admin)
        with_store, base = rss_mb(stored.proc.pid), rss_mb(baseline.proc.pid)
        diff = with_store - base
        counted = status["bytes"] / MIB
        print(f"  {sent:>9,} {status['entries']:>8,} {counted:>12.1f} {with_store:>14.1f} {base:>13.1f} "
              f"{diff:>9.1f} {diff / counted if counted else 0:>15.2f} {diff * MIB / cap:>11.2f} "
              f"{with_store / base:>11.2f} {errors:>7}", flush=True)
    status = store_status(stored.admin)
    print(f"  store at the end: {status['stored']:,} stored, {status['evicted']:,} evicted, {status['entries']:,} kept, "
          f"{status['bytes'] / MIB:.1f} of {status['max_bytes'] / MIB:.0f} MiB counted; peak RSS with store "
          f"{rss_mb(stored.proc.pid, 'VmHWM'):.1f} MB, baseline {rss_mb(baseline.proc.pid, 'VmHWM'):.1f} MB")
    print("  (MiB = 2^20 bytes, RSS included; diff = RSS with the store − RSS of the baseline.)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=20_000, help="entries put in process (default 20,000)")
    parser.add_argument("--requests", type=int, default=24_000, help="requests sent to each sidecar")
    parser.add_argument("--cap-mib", type=int, default=16, help="the sidecar's store cap in MiB (default 16)")
    parser.add_argument("--steps", type=int, default=6, help="RSS is read after each of this many steps")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--in-process-only", action="store_true")
    parser.add_argument("--measure", choices=("full", "traced", "capped", "orjson"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(orjson.dumps(measure(args.measure, args.entries)).decode())
        return
    in_process(args.entries)
    if not args.in_process_only:
        with harness() as h:
            sidecars(h, args)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: every process this bench started has been stopped")
