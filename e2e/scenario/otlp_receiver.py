"""A tiny OTLP/HTTP receiver for the tier C scenario: counts the spans sidecars export, nothing more.

Runs in a pod of the project's image (chart.py passes this file's text to `python3 -c`): aiohttp and
opentelemetry-proto are already there. POST /v1/traces (protobuf) counts spans by name; POST /v1/metrics and
/v1/logs are accepted and dropped; GET /spans answers {"count": N, "names": {name: n}}.
"""

from __future__ import annotations

import collections

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

names: collections.Counter[str] = collections.Counter()


async def traces(request: web.Request) -> web.Response:
    export = ExportTraceServiceRequest.FromString(await request.read())
    for resource in export.resource_spans:
        for scope in resource.scope_spans:
            names.update(span.name for span in scope.spans)
    return web.Response(body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf")


async def dropped(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(content_type="application/x-protobuf")


async def spans(_: web.Request) -> web.Response:
    return web.json_response({"count": sum(names.values()), "names": dict(names)})


app = web.Application(client_max_size=16 * 1024 * 1024)
app.router.add_post("/v1/traces", traces)
app.router.add_post("/v1/metrics", dropped)
app.router.add_post("/v1/logs", dropped)
app.router.add_get("/spans", spans)
web.run_app(app, host="0.0.0.0", port=4318, print=None, access_log=None)
