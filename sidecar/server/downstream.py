"""The client side of the proxy: one asyncio `Protocol` per downstream connection.

llhttp (httptools, strict mode) parses requests; this module refuses what a proxy must not
forward even when llhttp accepts it (SPEC §9), builds an `Exchange`, runs the handler for it
in a task, and writes the answer: re-framed, hop-by-hop headers removed, streamed with
back-pressure. Pipelined requests are answered in order, one at a time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools

from sidecar.clock import wall_time
from sidecar.errors import (
    BadRequestError,
    HeadersTooLargeError,
    ProxyError,
    RequestTimeoutError,
)
from sidecar.pipeline.exchange import Exchange, UpstreamResponse
from sidecar.pipeline.route import normalise_authority
from sidecar.server.errorpage import render_error
from sidecar.server.tunnel import Tunnel
from sidecar.wire.body import RequestBody
from sidecar.wire.flow import Producer
from sidecar.wire.framing import CRLF, HTTP_DATE, LAST_CHUNK, chunk, reason
from sidecar.wire.headers import HOP_BY_HOP, Headers, connection_tokens

if TYPE_CHECKING:
    from sidecar.server.proxy import ListenerState, ProxyServer

# Phases of the connection, which decide what the connection timer enforces.
_FIRST, _KEEPALIVE, _HEAD, _ACTIVE = range(4)

# A keep-alive connection with no request for this long is closed (Envoy's default idle).
KEEPALIVE_IDLE = 3600.0

_STATUS_LINES: dict[tuple[int, bytes], bytes] = {}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class DownstreamProtocol(asyncio.Protocol):
    """Parses requests from one client and answers them in order."""

    __slots__ = (
        "_authority_header",
        "_body",
        "_chunked_out",
        "_close_after",
        "_connection_named",
        "_content_length",
        "_current",
        "_expect_continue",
        "_forward",
        "_has_te",
        "_head_seen",
        "_head_sent",
        "_head_size",
        "_host_count",
        "_idempotency_key",
        "_listener",
        "_loop",
        "_parser",
        "_paused_for_body",
        "_paused_for_queue",
        "_phase",
        "_phase_started",
        "_producer",
        "_queue",
        "_reading_paused",
        "_request_id",
        "_server",
        "_task",
        "_timer",
        "_transport",
        "_tunnel",
        "_upgrade",
        "_url",
        "_write_paused",
    )

    def __init__(self, server: ProxyServer, listener: ListenerState) -> None:
        self._server = server
        self._listener = listener
        self._loop = server.loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._phase = _FIRST
        self._phase_started = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._queue: deque[Exchange] = deque()
        self._current: Exchange | None = None
        self._task: asyncio.Task[None] | None = None
        self._tunnel: Tunnel | None = None
        self._producer: Producer | None = None
        self._write_paused = False
        self._reading_paused = False
        self._paused_for_body = False
        self._paused_for_queue = False
        self._head_sent = False
        self._chunked_out = False
        self._close_after = False
        self._reset_request_state()

    def _reset_request_state(self) -> None:
        self._url = b""
        self._forward: list[bytes] = []
        self._host_count = 0
        self._authority_header = b""
        self._content_length: int | None = None
        self._has_te = False
        self._upgrade = False
        self._expect_continue = False
        self._connection_named: set[bytes] | None = None
        self._request_id = b""
        self._idempotency_key = False
        self._head_size = 0
        self._head_seen = 0
        self._body: RequestBody | None = None

    # ---- connection lifecycle -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._server.connection_opened(self)
        self._phase_started = self._loop.time()
        self._timer = self._loop.call_at(
            self._phase_started + self._server.limits.header_timeout, self._on_timer
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._tunnel is not None:
            self._tunnel.close()
        task = self._task
        if task is not None and not task.done():
            task.cancel()  # the client is gone: stop the upstream attempt too
        self._queue.clear()
        self._transport = None
        self._server.connection_closed(self)

    @property
    def idle(self) -> bool:
        """No request in progress: safe to close when draining."""
        return self._current is None and self._phase in (_FIRST, _KEEPALIVE)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # ---- reading -----------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel.to_upstream(data)
            return
        if self._close_after and self._current is None:
            return
        if self._phase == _HEAD:
            self._head_seen += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._on_upgrade(data, int(exc.args[0]))
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, ProxyError):
                self._reject(cause)
            else:
                raise
        except httptools.HttpParserError as exc:
            self._reject(BadRequestError(f"malformed request: {_parser_message(exc)}"))
        else:
            if self._phase == _HEAD and self._head_seen > self._server.limits.max_header_bytes:
                self._reject(
                    HeadersTooLargeError("request line and headers are over the size limit")
                )

    def eof_received(self) -> bool:
        if self._tunnel is not None:
            self._tunnel.downstream_eof()
            return True
        # A half-close after a complete request still gets its answer (HTTP/1.0 clients do it).
        return self._current is not None

    def on_message_begin(self) -> None:
        self._set_phase(_HEAD)
        self._head_seen = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        # Checked here too: a request with no header lines never reaches on_header.
        if self._head_size > self._server.limits.max_header_bytes:
            raise HeadersTooLargeError("request line and headers are over the size limit")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._phase != _HEAD:
            return  # chunked trailers: never forwarded
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self._server.limits.max_header_bytes:
            raise HeadersTooLargeError("request line and headers are over the size limit")
        lower = name.lower()
        if lower in HOP_BY_HOP or lower == b"host" or lower == b"expect":
            self._special_header(lower, value)
            return
        if lower == b"x-request-id":
            if self._request_id or not value or len(value) > 200:
                raise BadRequestError("x-request-id must appear once and be 1 to 200 bytes")
            self._request_id = value
        elif lower == b"idempotency-key":
            self._idempotency_key = True
        self._forward.append(name + b": " + value + CRLF)

    def _special_header(self, lower: bytes, value: bytes) -> None:
        if lower == b"host":
            self._host_count += 1
            self._authority_header = value
        elif lower == b"content-length":
            self._content_length = int(value)  # llhttp has validated digits and duplicates
        elif lower == b"transfer-encoding":
            if self._has_te or value.strip().lower() != b"chunked":
                raise BadRequestError("only 'Transfer-Encoding: chunked' is accepted")
            self._has_te = True
        elif lower == b"connection":
            named = connection_tokens(value)
            self._connection_named = (
                named if self._connection_named is None else self._connection_named | named
            )
        elif lower == b"upgrade":
            self._upgrade = True
        elif lower == b"expect":
            if value.strip().lower() != b"100-continue":
                raise BadRequestError("only 'Expect: 100-continue' is supported")
            self._expect_continue = True

    def on_headers_complete(self) -> None:
        exchange = self._build_exchange()
        self._set_phase(_ACTIVE)
        if self._current is None:
            self._start(exchange)
        else:
            self._queue.append(exchange)  # pipelined: answered after the current one
            self._set_paused(queue=True)

    def on_body(self, body: bytes) -> None:
        if self._body is not None:
            self._body.feed(body)

    def on_message_complete(self) -> None:
        if self._body is not None:
            self._body.finish()
        self._reset_request_state()

    def _on_upgrade(self, data: bytes, offset: int) -> None:
        exchange = self._current
        if exchange is not None and exchange.method == b"CONNECT" and self._tunnel is None:
            self._tunnel = Tunnel(self, data[offset:])
            return
        # An Upgrade request without a body is forwarded as a plain request (the Upgrade
        # header is hop-by-hop); what follows it is the next request, for a fresh parser.
        self._parser = httptools.HttpRequestParser(self)
        rest = data[offset:]
        if rest:
            self.data_received(rest)

    # ---- building the exchange -----------------------------------------------------------------

    def _build_exchange(self) -> Exchange:
        parser = self._parser
        version = parser.get_http_version()
        method = parser.get_method()
        if version not in ("1.0", "1.1"):  # llhttp also parses HTTP/0.9 and HTTP/2.0 lines
            raise BadRequestError("only HTTP/1.0 and HTTP/1.1 requests are accepted")
        if self._host_count > 1:
            raise BadRequestError("more than one Host header")
        if self._has_te and version != "1.1":
            raise BadRequestError("Transfer-Encoding is not allowed on HTTP/1.0")
        has_body = self._has_te or bool(self._content_length)
        if self._upgrade and has_body:
            raise BadRequestError("an upgrade request must not carry a body")
        if self._connection_named:
            self._forward = [
                line
                for line in self._forward
                if line.split(b":", 1)[0].lower() not in self._connection_named
            ]
        target, authority, host_header = self._resolve_target(method, version)
        server = self._server
        if self._request_id:
            request_id, generated = self._request_id.decode("latin-1"), False
        else:
            request_id, generated = server.request_ids.next(), True
        body = None
        if has_body:
            body = RequestBody(self, retain_limit=0)
            if self._expect_continue:
                body.on_attach = self._send_continue
            self._body = body
        query = target.find(b"?")
        now = self._loop.time()
        exchange = Exchange(
            method=method,
            target=target,
            path=target if query == -1 else target[:query],
            authority=authority,
            host_header=host_header,
            forward_headers=b"".join(self._forward),
            request_id=request_id,
            request_id_generated=generated,
            body=body,
            content_length=None if self._has_te else self._content_length,
            listener=self._listener.name,
            responder=self,
            client_http11=version == "1.1",
            client_keep_alive=parser.should_keep_alive(),
            started=now,
            wall_started=wall_time(),
        )
        exchange.idempotency_key = self._idempotency_key
        return exchange

    def _resolve_target(self, method: bytes, version: str) -> tuple[bytes, str, bytes | None]:
        """Origin-form target to forward, the normalised authority, and the Host to send."""
        url = self._url
        host = self._authority_header
        if method == b"CONNECT":
            try:
                return url, normalise_authority(url, 443), None
            except ValueError:
                raise BadRequestError("CONNECT needs a host:port target") from None
        if url.startswith(b"/") or url == b"*":
            if not host and version == "1.1":
                raise BadRequestError("HTTP/1.1 requests need a Host header")
            try:
                authority = normalise_authority(host, 80) if host else ""
            except ValueError:
                raise BadRequestError("the Host header is not a valid authority") from None
            return url, authority, host or None
        # Absolute form (a forward-proxy request): scheme://authority/path?query
        scheme_end = url.find(b"://")
        scheme = url[:scheme_end].lower()
        if scheme_end <= 0 or scheme not in (b"http", b"https"):
            raise BadRequestError("the request target must be a path or an http:// URL")
        rest = url[scheme_end + 3 :]
        cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i != -1), default=len(rest))
        raw_authority = rest[:cut]
        if b"@" in raw_authority or not raw_authority:
            raise BadRequestError("the URL authority must be host[:port] without user info")
        path = rest[cut:].split(b"#", 1)[0]
        if not path.startswith(b"/"):
            path = b"/" + path
        default_port = 443 if scheme == b"https" else 80
        try:
            authority = normalise_authority(raw_authority, default_port)
            if host and normalise_authority(host, default_port) != authority:
                raise BadRequestError("the Host header disagrees with the URL authority")
        except ValueError:
            raise BadRequestError("the URL authority is not a valid host[:port]") from None
        return path, authority, host or raw_authority

    def _start(self, exchange: Exchange) -> None:
        self._current = exchange
        self._head_sent = False
        self._close_after = False
        self._task = self._loop.create_task(self._server.handle(exchange, self._listener))

    def _send_continue(self) -> None:
        if self._transport is not None and not self._head_sent:
            self._transport.write(_CONTINUE)

    # ---- Responder ---------------------------------------------------------------------------------

    @property
    def tunnel(self) -> Tunnel:
        assert self._tunnel is not None, "CONNECT without a tunnel"
        return self._tunnel

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._transport

    def write_raw(self, data: bytes) -> None:
        """Bytes the sidecar itself answers with outside an HTTP response (CONNECT's 200)."""
        if self._transport is not None:
            self._transport.write(data)
            self._head_sent = True

    @property
    def head_sent(self) -> bool:
        return self._head_sent

    async def relay(self, exchange: Exchange, response: UpstreamResponse) -> None:
        """Write the upstream's answer to the client, streaming its body as it arrives."""
        transport = self._transport
        if transport is None:
            response.discard()
            return
        status = response.status
        exchange.status = status
        client_keeps_alive = exchange.client_keep_alive and not self._server.draining
        parts = [_status_line(status, response.reason)]
        for name, value in response.headers:
            parts.append(name + b": " + value + CRLF)
        if self._server.sidecar_headers and exchange.upstream is not None:
            parts.append(
                b"x-sidecar-upstream: "
                + exchange.upstream.name_bytes
                + b"\r\nx-sidecar-attempts: %d\r\n" % exchange.attempts
            )
        body: bytes | None = None
        streaming = False
        self._chunked_out = False
        if not response.has_body:
            if response.content_length is not None and (exchange.head_only or status == 304):
                parts.append(b"content-length: %d\r\n" % response.content_length)
        elif response.body_complete:
            body = b"".join(response.take_buffered_body())
            parts.append(b"content-length: %d\r\n" % len(body))
        elif response.content_length is not None:
            parts.append(b"content-length: %d\r\n" % response.content_length)
            streaming = True
        elif exchange.client_http11:
            parts.append(b"transfer-encoding: chunked\r\n")
            self._chunked_out = True
            streaming = True
        else:
            client_keeps_alive = False  # HTTP/1.0 client, unknown length: end by closing
            streaming = True
        if not client_keeps_alive:
            parts.append(b"connection: close\r\n")
            self._close_after = True
        parts.append(CRLF)
        if body:
            parts.append(body)
            exchange.bytes_out = len(body)
        transport.write(b"".join(parts))
        self._head_sent = True
        if streaming:
            await response.stream_to(self)

    def send_fallback(
        self,
        exchange: Exchange,
        status: int,
        headers: Headers,
        body: bytes,
        kind: bytes,
        age: bytes | None,
    ) -> None:
        """A stored or static answer in place of a failure (SPEC §4.4), sent in one write."""
        transport = self._transport
        if transport is None:
            return
        exchange.status = status
        keep_alive = exchange.client_keep_alive and not self._server.draining
        close = not keep_alive or self._body_unread(exchange)
        parts = [_status_line(status, reason(status))]
        for name, value in headers:
            if name not in HOP_BY_HOP:
                parts.append(name + b": " + value + CRLF)
        if age is not None:
            parts.append(b"age: " + age + CRLF)
        if self._server.sidecar_headers:
            upstream = exchange.upstream.name_bytes if exchange.upstream is not None else b""
            parts.append(b"x-sidecar-upstream: " + upstream + CRLF)
            parts.append(b"x-sidecar-attempts: %d\r\n" % exchange.attempts)
            parts.append(b"x-sidecar-fallback: " + kind + CRLF)
        if body or not exchange.head_only:
            # A stored HEAD answer has no body to count, and RFC 9110 §8.6 forbids a HEAD
            # Content-Length other than the GET's: announce none rather than a false 0.
            parts.append(b"content-length: %d\r\n" % len(body))
        if close:
            parts.append(b"connection: close\r\n")
            self._close_after = True
        parts.append(CRLF)
        if not exchange.head_only:
            parts.append(body)
            exchange.bytes_out = len(body)
        transport.write(b"".join(parts))
        self._head_sent = True

    def send_error(self, exchange: Exchange, error: ProxyError) -> None:
        """A generated answer (SPEC §4.6) for an exchange whose head was not yet sent."""
        upstream = exchange.upstream.name if exchange.upstream is not None else ""
        close = (
            not exchange.client_keep_alive or self._server.draining or self._body_unread(exchange)
        )
        status, payload = render_error(
            error,
            upstream=upstream,
            attempts=exchange.attempts,
            request_id=exchange.request_id,
            sidecar_headers=self._server.sidecar_headers,
            close=close,
        )
        exchange.status = status
        exchange.error = error.code.value
        if close:
            self._close_after = True
        if self._transport is not None:
            self._transport.write(payload)
            self._head_sent = True

    def abort(self) -> None:
        """The answer cannot be completed: closing is the only honest signal left."""
        self._close_after = True
        if self._transport is not None:
            self._transport.abort()

    def finished(self, exchange: Exchange) -> None:
        """The handler is done with `exchange`: start the next one or close."""
        self._current = None
        self._task = None
        transport = self._transport
        if transport is None:
            return
        if (
            self._close_after
            or self._server.draining
            or self._body_unread(exchange)
            or exchange.method == b"CONNECT"
        ):
            transport.close()
            return
        if self._queue:
            self._start(self._queue.popleft())
            if not self._queue:
                self._set_paused(queue=False)
            return
        self._set_phase(_KEEPALIVE)
        self._set_paused(queue=False)

    def _body_unread(self, exchange: Exchange) -> bool:
        body = exchange.body
        return body is not None and not body.complete

    # ---- BodySink: the response body towards the client ----------------------------------------

    def write_body(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or not data:
            return
        current = self._current
        if current is not None:
            current.bytes_out += len(data)
        if self._chunked_out:
            transport.writelines(chunk(data))
        else:
            transport.write(data)

    def end_body(self) -> None:
        if self._chunked_out and self._transport is not None:
            self._transport.write(LAST_CHUNK)

    def set_producer(self, producer: Producer | None) -> None:
        self._producer = producer
        if producer is not None and self._write_paused:
            producer.pause_reading()

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._tunnel is not None:
            self._tunnel.pause_upstream()
        elif self._producer is not None:
            self._producer.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._tunnel is not None:
            self._tunnel.resume_upstream()
        elif self._producer is not None:
            self._producer.resume_reading()

    # ---- Producer: the request body from the client ---------------------------------------------

    def pause_reading(self) -> None:
        self._set_paused(body=True)

    def resume_reading(self) -> None:
        self._set_paused(body=False)

    def _set_paused(self, *, body: bool | None = None, queue: bool | None = None) -> None:
        if body is not None:
            self._paused_for_body = body
        if queue is not None:
            self._paused_for_queue = queue
        want = self._paused_for_body or self._paused_for_queue
        transport = self._transport
        if transport is None or want == self._reading_paused:
            return
        self._reading_paused = want
        if want:
            transport.pause_reading()
        else:
            transport.resume_reading()

    # ---- timers and rejection ------------------------------------------------------------------------

    def _set_phase(self, phase: int) -> None:
        self._phase = phase
        self._phase_started = self._loop.time()

    def _on_timer(self) -> None:
        """One timer per connection, re-armed only when it fires (never per request)."""
        self._timer = None
        if self._transport is None:
            return
        phase = self._phase
        now = self._loop.time()
        header_timeout = self._server.limits.header_timeout
        if phase == _ACTIVE or self._current is not None:
            self._timer = self._loop.call_at(now + header_timeout, self._on_timer)
            return
        limit = KEEPALIVE_IDLE if phase == _KEEPALIVE else header_timeout
        due = self._phase_started + limit
        if now < due:
            self._timer = self._loop.call_at(due, self._on_timer)
        elif phase == _HEAD:
            self._reject(RequestTimeoutError("the request headers did not arrive in time"))
        else:
            self._transport.close()

    def _reject(self, error: ProxyError) -> None:
        """Answer a request the sidecar refuses to forward, then close the connection."""
        self._server.rejected(self._listener, error, self._parser_method())
        _, payload = render_error(
            error,
            upstream="",
            attempts=0,
            request_id="",
            sidecar_headers=self._server.sidecar_headers,
            close=True,
        )
        self._close_after = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
        if self._transport is not None:
            # `_head_sent` still describes the previous answer on a keep-alive connection;
            # only a response being written right now makes the error page impossible.
            if self._current is None or not self._head_sent:
                self._transport.write(payload)
            self._transport.close()

    def _parser_method(self) -> str:
        try:
            return self._parser.get_method().decode("latin-1")
        except httptools.HttpParserError:
            return ""

    def __repr__(self) -> str:
        phases = ("first", "keepalive", "head", "active")
        return f"<DownstreamProtocol {self._listener.name} phase={phases[self._phase]} current={self._current!r} queued={len(self._queue)}>"


def _status_line(status: int, reason: bytes) -> bytes:
    key = (status, reason)
    line = _STATUS_LINES.get(key)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        if len(_STATUS_LINES) < 512:
            _STATUS_LINES[key] = line
    return line


def _parser_message(exc: Exception) -> str:
    return str(exc).strip() or type(exc).__name__


__all__ = ["HTTP_DATE", "DownstreamProtocol"]
