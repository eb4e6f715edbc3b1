"""A renewed serving certificate (cert-manager renews it in the mounted Secret) is served without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from cryptography import x509

from llmroute_operator.certs import write_self_signed
from llmroute_operator.hub import CertificateReloader, hub_ssl_context
from tests.ports import free_ports


async def served_serial(port: int, ca: Path) -> int:
    client = ssl.create_default_context(cafile=str(ca))
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="127.0.0.1")
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    return x509.load_der_x509_certificate(der).serial_number


@contextlib.asynccontextmanager
async def serving(context: ssl.SSLContext) -> AsyncIterator[int]:
    """A TLS listener with `context` on 127.0.0.1; its port."""
    runner = web.AppRunner(web.Application())
    await runner.setup()
    port = free_ports(1)[0]
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        yield port
    finally:
        await runner.cleanup()


async def test_a_renewed_certificate_is_served_to_new_connections_without_a_restart(tmp_path: Path) -> None:
    first = write_self_signed(tmp_path, hosts=("127.0.0.1",))
    context = hub_ssl_context(str(first.cert), str(first.key))
    reloader = CertificateReloader(context, str(first.cert), str(first.key))
    async with serving(context) as port:
        before = await served_serial(port, first.ca)
        assert reloader.check() is False  # nothing changed: nothing loaded
        renewed = write_self_signed(tmp_path, hosts=("127.0.0.1",))  # the same paths, as a Secret update
        assert reloader.check() is True
        after = await served_serial(port, renewed.ca)
        assert after != before and after == x509.load_pem_x509_certificate(renewed.cert.read_bytes()).serial_number


async def test_a_half_written_pair_keeps_the_certificate_being_served_and_is_tried_again(tmp_path: Path) -> None:
    files = write_self_signed(tmp_path / "live", hosts=("127.0.0.1",))
    context = hub_ssl_context(str(files.cert), str(files.key))
    reloader = CertificateReloader(context, str(files.cert), str(files.key))
    async with serving(context) as port:
        before = await served_serial(port, files.ca)
        renewed = write_self_signed(tmp_path / "renewed", hosts=("127.0.0.1",))
        files.cert.write_bytes(renewed.cert.read_bytes())  # the new certificate, the old key: no pair
        assert reloader.check() is False
        assert await served_serial(port, files.ca) == before  # the live context still has its pair
        files.key.write_bytes(renewed.key.read_bytes())
        assert reloader.check() is True
        assert await served_serial(port, renewed.ca) != before
