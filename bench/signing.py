"""What signing a Bedrock request costs the sidecar, per request, next to sending it a bearer token.

Run: `.venv/bin/python bench/signing.py [--rounds N] [--body-bytes 2048]`. Times, in this process, what
`_send` adds to an attempt's request for each way a Bedrock target authenticates:
- `bearer`: an Amazon Bedrock API key, already in the request's headers (the baseline: a dict copy,
  as the signed paths make one too);
- `sigv4`: SigV4 with a cached signing key (`providers/aws_sigv4.sign`, what an access key or the pod's
  credentials cost once fetched): two SHA-256s (the body, the canonical request) and one HMAC;
- `sigv4, new day`: the same with the signing key derived anew (four more HMACs: once a day per key);
and prints each in µs per request and as a ratio to `bearer`. Fetching the pod's credentials is I/O,
once an hour at most, and not measured here.
"""

from __future__ import annotations

import argparse

from _timing import per_call_us
from llmroute_proxy.aws_access_keys import AwsCredentials
from llmroute_proxy.providers import aws_sigv4
from llmroute_proxy.providers.aws_sigv4 import sign

URL = "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-sonnet-4-5-20250929-v1:0/invoke"
HEADERS = {"content-type": "application/json", "accept": "application/json"}
CREDENTIALS = AwsCredentials("ASIAEXAMPLEEXAMPLE01", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                             "IQoJb3JpZ2luX2VjEXAMPLE" * 20)
NOW = 1_780_000_000.0



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5000)
    parser.add_argument("--body-bytes", type=int, default=2048, help="the request body's size (a short chat)")
    args = parser.parse_args()
    body = (b'{"messages":[{"role":"user","content":"' + b"x" * args.body_bytes)[:args.body_bytes - 3] + b'"}]}'
    bearer = {**HEADERS, "authorization": "Bearer ABSKQmVkcm9ja0FQSUtleS1FWEFNUExF"}

    def fresh_day() -> dict[str, str]:
        aws_sigv4._signing_key.cache_clear()
        return sign("POST", URL, HEADERS, body, CREDENTIALS, "us-east-1", "bedrock", NOW)

    timings = {
        "bearer": per_call_us(lambda: {**bearer}, args.rounds),
        "sigv4": per_call_us(lambda: sign("POST", URL, HEADERS, body, CREDENTIALS, "us-east-1", "bedrock", NOW),
                             args.rounds),
        "sigv4, new day": per_call_us(fresh_day, max(1, args.rounds // 5)),
    }
    print(f"Bedrock request authentication, {len(body)}-byte body, µs per request (best of 7 batches)")
    print(f"  {'how':<16}{'µs/request':>12}{'÷ bearer':>10}")
    for name, us in timings.items():
        print(f"  {name:<16}{us:>12.2f}{us / timings['bearer']:>10.1f}")


if __name__ == "__main__":
    main()
