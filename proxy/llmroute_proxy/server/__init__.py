"""The I/O shell of the sidecar: aiohttp apps, the attempt loop, upstream calls, telemetry."""
