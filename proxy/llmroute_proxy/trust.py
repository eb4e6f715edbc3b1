"""Which certificate authorities verify a provider's TLS.

By default, the system's: OpenSSL's default paths, which honour the standard `SSL_CERT_FILE` and
`SSL_CERT_DIR` variables (read when the sidecar starts). An LLMProvider may name its own CAs
(`spec.tls.caBundle`, or `spec.tls.caFile` in standalone mode); then those alone verify its
endpoints, so a private gateway's CA is trusted for that provider and nowhere else.

Pure: a bundle is checked and turned into a context from its text, no file is read here.
"""

from __future__ import annotations

import re
import ssl

PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"


def ca_bundle_problem(pem: str) -> str | None:
    """Why `pem` is not a usable CA bundle (one or more PEM certificates), or None."""
    if PEM_CERTIFICATE not in pem:
        return "holds no PEM certificate (expected '-----BEGIN CERTIFICATE-----' blocks)"
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cadata=pem)
    except (ssl.SSLError, ValueError) as exc:
        reason = re.sub(r" \(_ssl\.c:\d+\)", "", str(exc.args[-1] if exc.args else exc))
        return f"is not a valid PEM certificate bundle ({reason})"
    if not context.get_ca_certs():
        return "holds no CA certificate (a server's own certificate cannot verify it: give its CA)"
    return None


def client_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """A verifying client context: the system's CAs (and `SSL_CERT_FILE`), or only `ca_bundle`'s."""
    if ca_bundle is None:
        return ssl.create_default_context()
    return ssl.create_default_context(cadata=ca_bundle)
