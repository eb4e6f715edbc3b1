"""Reading the spans a stack's sidecar exported to an in-memory exporter, one test at a time."""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.proxy.stack import Stack


def spans_from_now(stack: Stack, exporter: InMemorySpanExporter) -> Callable[[], list[ReadableSpan]]:
    """A reader of the spans finished from now on: the exporter is batched, so a span an earlier test
    ended may still be on its way, and is flushed out first."""
    stack.sidecar.telemetry.flush()
    exporter.clear()

    def finished() -> list[ReadableSpan]:
        stack.sidecar.telemetry.flush()
        return list(exporter.get_finished_spans())
    return finished
