"""What scrubbing keys costs: building a scrubber per table, and scrubbing one text.

Run: `.venv/bin/python bench/scrubbing.py [--rounds N] [--keys 5]`. Builds a `Scrubber` for
`--keys` provider keys of realistic shapes and lengths (what a table reload costs), then times
`scrub` on texts the sidecar scrubs: a provider's error message without a key (the common case:
the answer is one `search` and a few `str.find`s), the same message echoing a key, an access-log
line, a 4 KiB error body, and `/status` as a whole (`Scrubber.json`). Only failures, log records
and `/status` are scrubbed; a successful request costs nothing.
"""

from __future__ import annotations

import argparse
import random
import string
from typing import Any

from _timing import per_call_us
from llmroute_proxy.scrubbing import Scrubber

ERROR = ("The server had an error while processing your request. Sorry about that! You can retry your request, "
         "or contact us through our help center at help.openai.com if the error persists. (Please include the "
         "request ID req_5b1d2a9c0e7f4c3b8a6d in your message.)")
ACCESS = ('{"route":"main","model":"auto","tier":"small","rule":"cheap-tasks","experiment":null,'
          '"target":"openai/gpt-4o-mini@eu","provider":"openai","upstream_model":"gpt-4o-mini","stream":false,'
          '"attempts":1,"tried":[{"target":"openai/gpt-4o-mini@eu","status":200,"outcome":"ok","ms":412.5}],'
          '"status":200,"latency_ms":413.1,"input_tokens":812,"output_tokens":97,"cost_usd":0.000180}')


def keys(count: int, rng: random.Random) -> list[str]:
    alphabet = string.ascii_letters + string.digits
    shapes = [("sk-proj-", 156), ("sk-ant-api03-", 95), ("AIza", 35), ("", 32), ("", 40)]
    return [prefix + "".join(rng.choice(alphabet) for _ in range(length))
            for prefix, length in (shapes[i % len(shapes)] for i in range(count))]


def status_document(count: int) -> dict[str, Any]:
    """A /status with `count` targets and 50 recent decisions, as the admin plane serves it."""
    targets = [{"id": f"p{i}/model-{i}@eu", "provider": f"p{i}", "type": "openai", "model": f"model-{i}",
                "region": "eu", "host": "api.example.com", "state": "closed", "requests": 1200,
                "last_error": "rate_limited: Rate limit reached for requests" if i % 2 else None}
               for i in range(count)]
    decisions = [{"route": "main", "model": "auto", "tier": "small", "rule": "cheap-tasks", "target": "p1/model-1@eu",
                  "attempts": [{"target": "p0/model-0@eu", "status": 429, "reason": "Rate limit reached"},
                               {"target": "p1/model-1@eu", "status": 200, "reason": "ok"}], "status": 200}
                 for _ in range(50)]
    return {"version": "0.1.0", "targets": targets, "decisions": decisions}



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2000, help="calls per timed batch")
    parser.add_argument("--keys", type=int, default=5, help="how many keys the scrubber holds")
    args = parser.parse_args()
    held = keys(args.keys, random.Random(1))
    build = per_call_us(lambda: Scrubber(held), max(1, args.rounds // 100))
    scrubber = Scrubber(held)
    cases = {
        "error message, no key": ERROR,
        "error message, key echoed": ERROR.replace("req_5b1d2a9c0e7f4c3b8a6d", held[0]),
        "access-log line": ACCESS,
        "4 KiB error body": (ERROR + " ") * (4096 // (len(ERROR) + 1)),
    }
    print(f"Scrubber with {args.keys} keys: built in {build / 1000:.2f} ms (once per table)")
    for name, text in cases.items():
        print(f"  {name:<28} {len(text):>6} chars  {per_call_us(lambda t=text: scrubber.scrub(t), args.rounds):8.1f} µs")
    document = status_document(20)
    print(f"  {'/status, 20 targets':<28} {'':>6}        {per_call_us(lambda: scrubber.json(document), 20):8.1f} µs")


if __name__ == "__main__":
    main()
