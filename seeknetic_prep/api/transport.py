"""The transport: one request in, one response out, and the only place ``requests`` is called.

Modelled on encode/httpx ``_transports/base.py`` and ``default.py``: a :class:`Transport` has one
method, :meth:`~Transport.handle`; :class:`RequestsTransport` sends over a ``requests.Session``
and is the one place where ``requests`` exceptions become ours (a timeout is
:class:`~seeknetic_prep.errors.APITimeoutError`, anything else with no answer
:class:`~seeknetic_prep.errors.APIConnectionError`, each ``from`` its cause and with the key
redacted); :class:`MockTransport` answers from a function, so tests drive 429s, 5xx, timeouts and
lost answers with no server and no sleeps. A transport returns every status as a
:class:`Response`: what a status means is the endpoints' business, what to do about it the
retry engine's. A bandwidth cap or a progress meter is a transport wrapping another.

>>> def handler(request: Request) -> Response:
...     return Response(404, content=b'{"detail": "no such job"}')
>>> MockTransport(handler).handle(Request("GET", "http://mock", "/async_status/x")).status_code
404
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from seeknetic_prep.api.link import LinkMeter
from seeknetic_prep.api.pacing import ByteRate
from seeknetic_prep.errors import APIConnectionError, APITimeoutError

__all__ = ["IDLE_RETIRE_S", "MockTransport", "Request", "RequestsTransport", "Response", "Transport",
           "rid_suffix", "short", "why"]


@dataclass(frozen=True)
class Request:
    """One HTTP request: ``base_url + path``, a JSON body or none, and the id it is about (for
    messages). The headers carry the key, so they are left out of the repr."""

    method: str
    base_url: str
    path: str
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    request_id: str | None = None

    @property
    def url(self) -> str:
        return self.base_url + self.path


@dataclass(frozen=True)
class Response:
    """One HTTP answer: status, headers (names lower-cased), body bytes."""

    status_code: int
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", {k.lower(): v for k, v in self.headers.items()})

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` if it is not."""
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class Transport(Protocol):
    """Sends a request and returns the server's answer, whatever its status; raises
    :class:`~seeknetic_prep.errors.APIConnectionError` (or its timeout kind) when there is none."""

    def handle(self, request: Request) -> Response: ...

    def close(self) -> None: ...


IDLE_RETIRE_S = 2.0
"""A pooled connection idle longer than this is closed instead of reused.

Servers close connections idle for a few seconds (uvicorn, Node and Apache after 5 s, gunicorn
after 2), and the client learns of it only when the server's FIN arrives, a one-way latency
later. A request sent in between reaches a closed socket: its body is lost (the server answers
with a reset) and sent again from byte 0 after a backoff. On a distant link that is whole 3 MB
upload bodies: at 50 Mbit/s and 1200 ms one-way, 8 calls were lost in one run and the sockets
were handed 303-313 MB for 288 MB of bodies. A request on a connection idle ``t`` seconds
reaches a server that closes after ``K`` at ``t + 2L`` of its idle time (the answer took ``L``
to come, the request takes ``L`` to go), so 2 s is safe for ``K = 5`` up to 1.5 s one-way.
What it costs is a new connection (a round trip, and TLS's) for the few connections a run
leaves idle that long. httpx does the same with ``keepalive_expiry`` (5 s)."""


class RequestsTransport:
    """The default transport: one pooled ``requests.Session``, an explicit ``(connect, read)``
    timeout on every call, and ``redact`` applied to any library text that reaches a message.

    **Slow links finish.** A body is sent in 16 KiB blocks, each under ``stall_s`` (default
    60 s): an upload is abandoned only when the link accepts nothing for that long, never
    because the whole body takes longer than some fixed time. Before, a 3.6 MB body went to the
    socket in one ``sendall`` under the 5 s connect timeout, and Python counts a ``sendall``'s
    timeout over all of it: below ~3-5 Mbit/s per connection every upload was cut after exactly
    5 s and started again from byte 0, forever. ``socket_options`` are set on each new
    connection (tests shrink the send buffer, as on a real slow link).

    **A cap on the uplink.** ``bandwidth`` (settable at any time; ``--max-upload-mbps``) paces
    every block this transport hands a socket, headers and small requests included: the link
    does not care what the bytes are. Blocks are 16 KiB, so the pace is smooth at any cap, and
    the wait happens before a block, never while the socket holds one (a paced link is not a
    stalled one).

    **No body sent into a closing connection.** A pooled connection idle over ``idle_retire_s``
    is closed and opened again rather than reused (:data:`IDLE_RETIRE_S`).
    """

    def __init__(self, *, timeout: tuple[float, float] = (5.0, 60.0), stall_s: float = 60.0,
                 redact: Callable[[str], str] = str,
                 socket_options: Sequence[tuple[int, int, int]] = (),
                 bandwidth: ByteRate | None = None, idle_retire_s: float = IDLE_RETIRE_S) -> None:
        self.timeout = timeout
        self.stall_s = stall_s
        self.bandwidth = bandwidth
        self._redact = redact
        self._session = requests.Session()
        self.meter = LinkMeter()
        adapter = _StallAdapter(stall_s, list(socket_options), self.meter, self._pace, idle_retire_s)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def handle(self, request: Request) -> Response:
        where = f"{request.method} {request.path}"
        body = None if request.content is None else _Body(request.content, self.meter.end)  # sent in blocks
        if body is not None:
            self.meter.begin()
        try:
            resp = self._session.request(request.method, request.url, data=body,
                                         headers=dict(request.headers), timeout=self.timeout)
        except requests.Timeout as exc:  # connect or read: the request may have taken effect
            raise APITimeoutError(
                f"{where}: no answer within {self.timeout[1]:g} s{rid_suffix(request.request_id)}",
                request_id=request.request_id,
            ) from exc
        except requests.RequestException as exc:  # refused, reset, DNS, dropped mid-answer
            sent, size = (0, 0) if body is None else (body.tell(), len(body.getbuffer()))
            if isinstance(exc, requests.ConnectionError) and "timed out" in str(exc) and sent < size:
                raise APITimeoutError(  # a stall while sending (Timeout above is connect or read)
                    f"{where}: the link stalled, nothing sent for {self.stall_s:g} s ({sent} of {size} "
                    f"bytes handed over){rid_suffix(request.request_id)}", request_id=request.request_id,
                ) from exc
            raise APIConnectionError(
                f"{where}: connection failed ({type(exc).__name__}: "
                f"{self._redact(str(exc))[:200]}){rid_suffix(request.request_id)}",
                request_id=request.request_id,
            ) from exc
        finally:
            if body is not None:
                body.finish()
        return Response(resp.status_code, dict(resp.headers), resp.content)

    def close(self) -> None:
        self._session.close()

    def _pace(self, count: int) -> None:
        """Wait for ``count`` bytes of the cap, if there is one."""
        bandwidth = self.bandwidth
        if bandwidth is not None and (wait := bandwidth.reserve(count)) > 0:
            time.sleep(wait)


class _Body(io.BytesIO):
    """A request body that says once when it is all handed over (``done``): urllib3 reads a
    file-like body block by block and sends each, so the read that finds its end follows the
    last send. From then on the request waits for its answer, which on a distant link is a
    round trip of no bytes going out, and no stall (:mod:`seeknetic_prep.api.link`)."""

    def __init__(self, content: bytes, done: Callable[[], None]) -> None:
        super().__init__(content)
        self._done: Callable[[], None] | None = done

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        if not data and size != 0:
            self.finish()
        return data

    def finish(self) -> None:
        """Say ``done`` unless it was said (the request ended before the body's end was read)."""
        done, self._done = self._done, None
        if done is not None:
            done()


def _stalling(base: type[Any], stall_s: float, meter: LinkMeter, pace: Callable[[int], None]) -> type[Any]:
    """``base`` (urllib3's HTTP or HTTPS connection) whose sends wait at most ``stall_s`` for
    the socket to take each block: the connect timeout stays short (a dead host is known in
    seconds) while a slow but moving link is never cut. Each block is paced, then counted."""

    def send(self: Any, data: Any) -> None:
        pace(len(data))
        if self.sock is not None:
            self.sock.settimeout(stall_s)
        base.send(self, data)
        meter.add(len(data), self.sock)

    def connect(self: Any) -> None:
        base.connect(self)
        meter.connected()

    return type(f"Stalling{base.__name__}", (base,), {"send": send, "connect": connect})


def _retiring(base: type[Any], idle_s: float) -> type[Any]:
    """``base`` (a urllib3 pool) that closes a connection idle over ``idle_s`` when it is taken
    from the pool (it connects again when used, as urllib3 does with a connection it finds
    dropped)."""

    def _get_conn(self: Any, timeout: float | None = None) -> Any:
        conn = base._get_conn(self, timeout)
        idle_since = getattr(conn, "idle_since", None)
        if idle_since is not None and time.monotonic() - idle_since > idle_s:
            conn.close()
        conn.idle_since = None
        return conn

    def _put_conn(self: Any, conn: Any) -> None:
        if conn is not None:
            conn.idle_since = time.monotonic()
        base._put_conn(self, conn)

    return type(f"Retiring{base.__name__}", (base,), {"_get_conn": _get_conn, "_put_conn": _put_conn})


_POOL_SIZE = 128


class _StallAdapter(HTTPAdapter):
    """requests' adapter over connections made by :func:`_stalling`, in pools that retire
    connections idle too long (:func:`_retiring`)."""

    def __init__(self, stall_s: float, socket_options: list[tuple[int, int, int]], meter: LinkMeter,
                 pace: Callable[[int], None], idle_retire_s: float) -> None:
        self._stall_s = stall_s
        self._idle_retire_s = idle_retire_s
        # our options on top of urllib3's (TCP_NODELAY), for every pool, a proxy's included
        self._pool_kwargs: dict[str, Any] = {} if not socket_options else {
            "socket_options": [*HTTPConnection.default_socket_options, *socket_options]}
        self._meter = meter
        self._pace = pace
        # requests keeps 10 connections a host: a run may upload dozens of bodies at once on a
        # distant link, and a connection made again costs a round trip or two (and TLS's).
        super().__init__(pool_maxsize=_POOL_SIZE)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                         **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **{**pool_kwargs, **self._pool_kwargs})
        http = type("StallingHTTPPool", (_retiring(HTTPConnectionPool, self._idle_retire_s),),
                    {"ConnectionCls": _stalling(HTTPConnection, self._stall_s, self._meter, self._pace)})
        https = type("StallingHTTPSPool", (_retiring(HTTPSConnectionPool, self._idle_retire_s),),
                     {"ConnectionCls": _stalling(HTTPSConnection, self._stall_s, self._meter, self._pace)})
        self._pools = {"http": http, "https": https}
        self.poolmanager.pool_classes_by_scheme = dict(self._pools)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """Behind an HTTP(S) proxy (``HTTPS_PROXY``, ``HTTP_PROXY``), the same pools and
        connections: requests builds a proxy's pools from urllib3's defaults, so a user behind
        a company proxy lost the stall-tolerant sends, the upload cap, the link meter and the
        retiring of idle connections (the run still worked, as before issue 20). A SOCKS
        proxy keeps urllib3's own SOCKS connections."""
        manager = super().proxy_manager_for(proxy, **{**proxy_kwargs, **self._pool_kwargs})
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = dict(self._pools)
        return manager


class MockTransport:
    """A transport that answers with ``handler(request)``; the handler may also raise
    :class:`~seeknetic_prep.errors.APIConnectionError` to play a lost connection or answer."""

    def __init__(self, handler: Callable[[Request], Response]) -> None:
        self.handler = handler

    def handle(self, request: Request) -> Response:
        return self.handler(request)

    def close(self) -> None:
        pass


def why(exc: BaseException) -> str:
    """What kind of "no answer" this was, in words a user can act on."""
    text = ""
    seen: BaseException | None = exc
    while seen is not None:
        text += repr(seen) + str(seen)
        seen = seen.__cause__ or seen.__context__
    if "NameResolution" in text or "name resolution" in text or "not known" in text:
        return "DNS lookup failed"
    if "refused" in text:
        return "connection refused"
    if "the link stalled" in text:
        return "the link stalled"
    if isinstance(exc, APITimeoutError) or "timed out" in text:
        return "no answer in time"
    return "connection failed"


def rid_suffix(request_id: str | None) -> str:
    """`` (request_id X)`` for a message, or nothing."""
    return f" (request_id {request_id})" if request_id else ""


def short(value: object, limit: int = 300) -> str:
    """``value`` as text (JSON unless a string), cut to ``limit`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
