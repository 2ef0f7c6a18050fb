"""Fetching revocation data for the gateway's chain: OCSP and CRLs over plain HTTP.

The verification is sans-I/O (ikev2/auth/revocation.py); this module brings the bytes:
a minimal bounded HTTP/1.0 client on the event loop (http.client is blocking, so it
would need an executor thread, cannot set SO_MARK without subclassing, and tries to
import ssl, which the long-running processes decline; CRL and OCSP are plain HTTP), a
CRL cache in the runtime directory (CRLs are public, not secret) honouring nextUpdate,
and the policy of remote.revocation: revoked refuses, unknown refuses only when strict.

The sockets carry the tunnel's firewall mark: they bypass the tunnel's routing table
(no tunnel exists yet, and the fetch must never go through the tunnel it decides
about) and pass the kill switch, which accepts marked packets.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .ikev2.auth import revocation as rv
from .ikev2.errors import PeerNotTrusted
from .netconf.routes import DEFAULT_FWMARK
from .pathsel import SO_MARK

log = logging.getLogger(__name__)

# Each fetch must fail fast: the gateway waits for our next IKE_AUTH message.
FETCH_TIMEOUT = 2.0
# All fetches of one connect together: well inside strongSwan's half-open/EAP timeouts.
TOTAL_BUDGET = 5.0
# A CRL of a large CA is megabytes; ours are small. Bigger answers are refused.
MAX_RESPONSE = 1 << 20
MAX_HEADER = 8192  # of an HTTP response header
CACHE_DIR = "crl-cache"
NO_URL = "no CRL or OCSP URL in the certificate"


class FetchError(Exception):
    """The URL could not be fetched (refused, timed out, not HTTP 200, too large)."""


async def http_request(url: str, body: bytes | None = None,
                       content_type: str = "application/ocsp-request",
                       mark: int = DEFAULT_FWMARK, timeout: float = FETCH_TIMEOUT,
                       permit: Callable[[str], None] | None = None,
                       resolve: Callable[[str], Awaitable[str]] | None = None) -> bytes:
    """GET (or POST `body` to) a plain http:// URL; the body of a 200 answer. `permit`
    is told the address before it is connected to (the kill switch lets it through);
    `resolve`, if given, looks the host up instead of the system's resolver (which the
    kill switch blocks)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "http" or not parts.hostname:
        raise FetchError(f"not an http URL: {url}")
    host, port = parts.hostname, parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            try:  # a literal needs no resolver thread
                family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 \
                    else socket.AF_INET
                addr: tuple = (host, port)
            except ValueError:
                if resolve is not None:
                    found = await resolve(host)
                    family = socket.AF_INET6 if ":" in found else socket.AF_INET
                    addr = (found, port)
                else:
                    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                    family, _, _, _, addr = infos[0]
            if permit is not None:
                permit(addr[0])
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
                sock.setblocking(False)
                await loop.sock_connect(sock, addr)
                method = "POST" if body is not None else "GET"
                head = f"{method} {path} HTTP/1.0\r\nHost: {parts.netloc}\r\n"
                if body is not None:
                    head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                await loop.sock_sendall(sock, head.encode() + b"\r\n" + (body or b""))
                data = bytearray()
                while len(data) <= MAX_RESPONSE + MAX_HEADER:
                    chunk = await loop.sock_recv(sock, 65536)
                    if not chunk:
                        break
                    data += chunk
            finally:
                sock.close()
    except TimeoutError:
        raise FetchError(f"{url}: no answer within {timeout:.0f} s") from None
    except (OSError, UnicodeError) as exc:
        raise FetchError(f"{url}: {exc}") from None
    return _body(url, bytes(data))


def _body(url: str, data: bytes) -> bytes:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep or len(head) > MAX_HEADER:
        raise FetchError(f"{url}: malformed HTTP response")
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"200":
        raise FetchError(f"{url}: HTTP {status[1].decode('ascii', 'replace')[:3]}"
                         if len(status) > 1 else f"{url}: malformed HTTP response")
    if len(body) > MAX_RESPONSE:
        raise FetchError(f"{url}: response larger than {MAX_RESPONSE} bytes")
    return body


class Checker:
    """Checks one chain's revocation under `remote.revocation` (crl, ocsp, strict)."""

    def __init__(self, settings: dict[str, bool], rdir: Path | None,
                 clock: Callable[[], datetime], mark: int = DEFAULT_FWMARK,
                 fetch: Callable[..., object] = http_request,
                 permit: Callable[[str], None] | None = None,
                 resolve: Callable[[str], Awaitable[str]] | None = None) -> None:
        self.crl = settings.get("crl", True)
        self.ocsp = settings.get("ocsp", True)
        self.strict = settings.get("strict", False)
        self.cache = rdir / CACHE_DIR if rdir is not None else None
        self.clock = clock
        self.mark = mark
        self.fetch = fetch
        self.permit = permit  # the kill switch: told where a fetch goes
        self.resolve = resolve  # and who looks the host up

    def _permit(self) -> dict[str, Any]:
        hooks = {"permit": self.permit, "resolve": self.resolve}
        return {k: v for k, v in hooks.items() if v is not None}

    @property
    def enabled(self) -> bool:
        return self.crl or self.ocsp

    async def check(self, links: list[rv.Link], stapled: list[bytes] = ()) -> None:
        """Raise CertificateRevoked, or PeerNotTrusted when strict and a status is
        unknown; otherwise return (an unknown status logged as a warning)."""
        unknown: list[str] = []
        failed = False  # a URL did not answer usably (not merely a certificate without URLs)
        try:
            async with asyncio.timeout(TOTAL_BUDGET):
                for link in links:
                    status, why = await self._status(link, list(stapled))
                    if status is rv.Status.REVOKED:
                        raise rv.CertificateRevoked(
                            f"the gateway's certificate '{link.subject}' was revoked")
                    if status is rv.Status.UNKNOWN:
                        unknown.append(f"'{link.subject}': {why or NO_URL}")
                        failed = failed or bool(why)
        except TimeoutError:
            unknown.append(f"revocation checks took longer than {TOTAL_BUDGET:.0f} s")
            failed = True
        if not unknown:
            return
        text = "revocation status unknown for " + "; ".join(unknown)
        if self.strict:
            raise PeerNotTrusted(text + " (remote.revocation.strict)")
        # As strongSwan's non-strict modes: no URL at all is normal for a private CA.
        level = logging.WARNING if failed else logging.INFO
        log.log(level, "%s; accepting the gateway (remote.revocation.strict is off)", text)

    async def _status(self, link: rv.Link, stapled: list[bytes]) -> tuple[rv.Status, str]:
        reasons: list[str] = []
        if self.ocsp:
            for data in stapled:  # RFC 4806: the gateway's own OCSP answer, no fetch
                try:
                    return rv.ocsp_status(data, link, None, self.clock())[0], ""
                except rv.RevocationUnknown:
                    continue  # about another certificate of the chain, or stale
            for url in rv.ocsp_urls(link.cert):
                try:
                    return await self._ocsp(link, url), ""
                except (FetchError, rv.RevocationUnknown) as exc:
                    reasons.append(f"OCSP {exc}")
        if self.crl:
            for url in rv.crl_urls(link.cert):
                try:
                    return await self._crl(link, url), ""
                except (FetchError, rv.RevocationUnknown) as exc:
                    reasons.append(f"CRL {exc}")
        return rv.Status.UNKNOWN, "; ".join(reasons)

    async def _ocsp(self, link: rv.Link, url: str) -> rv.Status:
        nonce = secrets.token_bytes(rv.NONCE_LEN)
        data = await self.fetch(url, rv.ocsp_request(link, nonce), mark=self.mark,
                                **self._permit())
        status, _until = rv.ocsp_status(data, link, nonce, self.clock())
        log.info("OCSP %s: '%s' is %s", url, link.subject, status.value)
        return status

    async def _crl(self, link: rv.Link, url: str) -> rv.Status:
        path = self._cache_path(url)
        crl = None
        if path is not None:
            try:
                crl = rv.load_crl(path.read_bytes(), link.issuer, self.clock())
            except (OSError, rv.RevocationUnknown):
                crl = None  # none yet, or past its nextUpdate: fetch anew
        if crl is None:
            data = await self.fetch(url, mark=self.mark, **self._permit())
            crl = rv.load_crl(data, link.issuer, self.clock())
            self._store(path, data)
            log.info("fetched the CRL %s (next update %s)", url, crl.next_update_utc)
        status = rv.crl_status(crl, link.cert)
        log.info("CRL %s: '%s' is %s", url, link.subject, status.value)
        return status

    def _cache_path(self, url: str) -> Path | None:
        if self.cache is None:
            return None
        return self.cache / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".crl")

    def _store(self, path: Path | None, data: bytes) -> None:
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        except OSError as exc:
            log.debug("cannot cache the CRL: %s", exc)
