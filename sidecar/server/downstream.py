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
from sidecar.wire.flow import Pausers, Producer
from sidecar.wire.framing import CRLF, LAST_CHUNK, chunk, reason
from sidecar.wire.headers import HOP_BY_HOP, Headers, connection_tokens

if TYPE_CHECKING:
    from sidecar.server.proxy import ListenerState, ProxyServer

_STATUS_LINES: dict[tuple[int, bytes], bytes] = {}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# After an answer that ends the connection while the client may still be sending (an unread
# request body, pipelined bytes behind a refusal), the sidecar sends FIN and reads on,
# discarding, for at most this long before it closes: closing a socket with unread bytes in
# it sends a reset, and a reset makes the client's kernel drop the answer it had not read
# yet. nginx calls this lingering close (its `lingering_time` is 30 s, `lingering_timeout` 5 s).
LINGER_TIME = 5.0


class DownstreamProtocol(asyncio.Protocol):
    """Parses requests from one client and answers them in order."""

    __slots__ = (
        "_authority_header",
        "_body",
        "_body_pausers",
        "_chunked_out",
        "_client_eof",
        "_close_after",
        "_connection_named",
        "_content_length",
        "_current",
        "_deferred",
        "_expect_continue",
        "_forward",
        "_framing",
        "_has_te",
        "_head_seen",
        "_head_sent",
        "_head_size",
        "_head_started",
        "_host_count",
        "_idempotency_key",
        "_idle_since",
        "_linger_until",
        "_listener",
        "_loop",
        "_parser",
        "_parsing",
        "_paused_for_queue",
        "_producer",
        "_queue",
        "_reading_paused",
        "_request_id",
        "_served",
        "_server",
        "_task",
        "_timer",
        "_transport",
        "_tunnel",
        "_tunnel_early",
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
        self._timer: asyncio.TimerHandle | None = None
        self._linger_until = 0.0  # lingering close in progress until then (0: not lingering)
        # What the connection timer enforces (see `_on_timer`): a head in progress since
        # `_head_started`, else no request since `_idle_since` (`_served`: after one answer).
        self._head_started: float | None = None
        self._idle_since = 0.0
        self._served = False
        self._parsing: Exchange | None = None  # the request whose body is being received
        # Bytes of a chunked body that are not body: size lines and extensions since the last
        # complete chunk, then the trailers, which llhttp holds in memory as it does a head.
        self._framing = 0
        # A request refused behind others in flight: its answer (error, method for the log)
        # waits for its turn, and nothing more is read meanwhile.
        self._deferred: tuple[ProxyError, str] | None = None
        self._client_eof = False
        self._queue: deque[Exchange] = deque()
        self._current: Exchange | None = None
        self._task: asyncio.Task[None] | None = None
        self._tunnel: Tunnel | None = None
        # Bytes after a CONNECT that waits behind requests in flight: its tunnel's, held
        # (reading stays paused meanwhile) until its turn comes and `_start` opens it.
        self._tunnel_early: bytearray | None = None
        self._producer: Producer | None = None
        self._write_paused = False
        self._reading_paused = False
        self._body_pausers = Pausers()  # who paused reading for the request body
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
        self._idle_since = self._loop.time()
        self._timer = self._loop.call_at(
            self._idle_since + self._server.limits.header_timeout, self._on_timer
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
        return self._current is None and self._head_started is None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _close_after_answer(self) -> None:
        """End the connection after its last answer without losing that answer to a reset.

        The client may still be sending (a body the sidecar did not read, bytes behind a
        refusal). Closing now would reset the connection and the client might never read
        the answer; so the sidecar sends FIN, keeps reading and discarding until the
        client's own FIN, and closes then, or after `LINGER_TIME` at the latest.
        """
        transport = self._transport
        if transport is None or self._linger_until:
            return
        if self._client_eof or not transport.can_write_eof():
            transport.close()
            return
        self._linger_until = self._loop.time() + LINGER_TIME
        transport.write_eof()
        self._body_pausers.clear()
        self._set_paused(queue=False)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(self._linger_until, self._on_timer)

    # ---- reading -----------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._linger_until:
            return  # closing: read only to drain the socket
        if self._tunnel is not None:
            self._tunnel.to_upstream(data)
            return
        if self._tunnel_early is not None:
            self._tunnel_early += data  # already read when the queue's pause took effect
            return
        if self._deferred is not None or (self._close_after and self._current is None):
            return  # the connection ends after the answers due: what follows is never parsed
        if self._head_started is not None:
            # Every head is held to the limit, whatever is in flight before it. A read that
            # starts a head is counted from the next one (the offset of the head in it is
            # unknown); complete lines are counted exactly by on_url and on_header.
            self._head_seen += len(data)
        elif self._parsing is not None and self._has_te:
            self._framing += len(data)  # less the body bytes in it (on_body)
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
            limit = self._server.limits.max_header_bytes
            if self._head_started is not None and self._head_seen > limit:
                self._reject(
                    HeadersTooLargeError("request line and headers are over the size limit")
                )
            elif self._parsing is not None and self._framing > limit:
                self._reject(HeadersTooLargeError("chunk framing or trailers over the size limit"))

    def eof_received(self) -> bool:
        if self._linger_until:
            return False  # the client is done too: the transport closes
        if self._tunnel is not None:
            self._tunnel.downstream_eof()
            return True
        # The client sends nothing more (HTTP/1.0 clients half-close after their request).
        # What it sent in full is answered, then the connection closes: left half-open it
        # would sit in CLOSE-WAIT, counted against max_connections, until the idle timeout.
        self._client_eof = True
        self._head_started = None  # an unfinished head can never complete
        parsing = self._parsing
        if parsing is not None:  # a body cut short: that request can never be complete
            if parsing is self._current:
                self.close()  # connection_lost cancels its attempt
                return True
            self._queue.pop()  # queued and never started: dropped
            self._parsing = None
        if self._current is None:
            self.close()
            return False
        return True

    def on_message_begin(self) -> None:
        self._head_started = self._loop.time()
        self._head_seen = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        # Checked here too: a request with no header lines never reaches on_header.
        if self._head_size > self._server.limits.max_header_bytes:
            raise HeadersTooLargeError("request line and headers are over the size limit")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_started is None:
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
        self._head_started = None
        self._framing = 0
        exchange = self._build_exchange()
        self._parsing = exchange
        if self._current is None:
            self._start(exchange)
        else:
            self._queue.append(exchange)  # pipelined: answered after the current one
            self._set_paused(queue=True)

    def on_body(self, body: bytes) -> None:
        self._framing -= len(body)
        if self._body is not None:
            self._body.feed(body)

    def on_chunk_complete(self) -> None:
        # A chunk (or the last one with its trailers) ended: its framing was within the limit.
        # The rest of this read goes uncounted, as for a head: one read at most.
        self._framing = 0

    def on_message_complete(self) -> None:
        self._parsing = None
        if self._body is not None:
            self._body.finish()
        self._reset_request_state()

    def _on_upgrade(self, data: bytes, offset: int) -> None:
        # The request just parsed is the last one queued, or the one in flight.
        exchange = self._queue[-1] if self._queue else self._current
        if exchange is not None and exchange.method == b"CONNECT":
            # Whatever follows a CONNECT belongs to its tunnel, never to the parser: open
            # the tunnel now, or hold the bytes until the requests before it are answered.
            if exchange is self._current:
                self._tunnel = Tunnel(self, data[offset:])
            else:
                self._tunnel_early = bytearray(data[offset:])
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
        named = self._connection_named
        if named:
            self._forward = [
                line for line in self._forward if line.split(b":", 1)[0].lower() not in named
            ]
            if b"x-request-id" in named:
                self._request_id = b""  # hop-by-hop, so not forwarded: the sidecar adds its own
        target, authority, host_header, tls = self._resolve_target(method, version)
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
        # Judged on what is forwarded: a key the client's Connection header names is removed
        # as hop-by-hop, and the upstream cannot deduplicate by a key it never sees.
        exchange.idempotency_key = self._idempotency_key and not (
            named and b"idempotency-key" in named
        )
        exchange.requires_tls = tls
        return exchange

    def _resolve_target(self, method: bytes, version: str) -> tuple[bytes, str, bytes | None, bool]:
        """Origin-form target to forward, the normalised authority, the Host to send, and
        whether the client asked for `https://` (then the request never leaves in cleartext)."""
        url = self._url
        host = self._authority_header
        if method == b"CONNECT":
            try:
                return url, normalise_authority(url, 443), None, False
            except ValueError:
                raise BadRequestError("CONNECT needs a host:port target") from None
        if url.startswith(b"/") or url == b"*":
            if not host and version == "1.1":
                raise BadRequestError("HTTP/1.1 requests need a Host header")
            try:
                authority = normalise_authority(host, 80) if host else ""
            except ValueError:
                raise BadRequestError("the Host header is not a valid authority") from None
            return url, authority, host or None, False
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
        return path, authority, host or raw_authority, scheme == b"https"

    def _start(self, exchange: Exchange) -> None:
        self._current = exchange
        self._head_sent = False
        self._close_after = False
        early = self._tunnel_early
        if early is not None and exchange.method == b"CONNECT":  # a CONNECT's turn has come
            self._tunnel_early = None
            self._tunnel = Tunnel(self, bytes(early))
            if self._client_eof:
                self._tunnel.downstream_eof()  # passed on to the target once connected
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
        client_keeps_alive = self._keeps_alive(exchange)
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
        close = not self._keeps_alive(exchange) or self._body_unread(exchange)
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
        close = not self._keeps_alive(exchange) or self._body_unread(exchange)
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
        """The handler is done with `exchange`: start the next one, or refuse, or close."""
        self._current = None
        self._task = None
        transport = self._transport
        if transport is None:
            return
        if exchange.method == b"CONNECT":
            transport.close()
            return
        if self._close_after or self._server.draining or self._body_unread(exchange):
            self._close_after_answer()
            return
        if self._queue:
            self._start(self._queue.popleft())
            if not self._queue and self._deferred is None:
                self._set_paused(queue=False)
            return
        if self._deferred is not None:  # a refused request's turn has come: answer, close
            error, method = self._deferred
            self._refuse(error, method, answer=True)
            self._close_after_answer()
            return
        if self._client_eof:  # every request the client sent is answered
            transport.close()
            return
        self._served = True
        self._idle_since = self._loop.time()
        self._set_paused(queue=False)

    def _keeps_alive(self, exchange: Exchange) -> bool:
        """Whether the connection stays open after this answer (its head says so)."""
        return (
            exchange.client_keep_alive
            and not self._server.draining
            and not (self._client_eof and not self._queue and self._deferred is None)
        )

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
        """The upstream whose reading this client's socket buffer throttles, or None.

        Letting go of a producer releases the pause this side holds on it, so a response
        that ends while the client is slow leaves its upstream connection reading (and
        reusable), not paused forever.
        """
        previous = self._producer
        if previous is producer:
            return
        self._producer = producer
        if self._write_paused:
            if previous is not None:
                previous.resume_reading(self)
            if producer is not None:
                producer.pause_reading(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._tunnel is not None:
            self._tunnel.pause_upstream()
        elif self._producer is not None:
            self._producer.pause_reading(self)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._tunnel is not None:
            self._tunnel.resume_upstream()
        elif self._producer is not None:
            self._producer.resume_reading(self)

    # ---- Producer: the request body from the client ---------------------------------------------

    def pause_reading(self, by: object) -> None:
        """`by` (the request body, or the upstream connection sending it) is full."""
        if self._body_pausers.add(by):
            self._set_paused()

    def resume_reading(self, by: object) -> None:
        """`by` lets go of its pause; the socket reads again once no one holds one."""
        if self._body_pausers.discard(by):
            self._set_paused()

    def _set_paused(self, *, queue: bool | None = None) -> None:
        if queue is not None:
            self._paused_for_queue = queue
        want = bool(self._body_pausers) or self._paused_for_queue
        transport = self._transport
        if transport is None or want == self._reading_paused:
            return
        self._reading_paused = want
        if want:
            transport.pause_reading()
        else:
            transport.resume_reading()

    # ---- timers and rejection ------------------------------------------------------------------------

    def _on_timer(self) -> None:
        """One timer per connection, re-armed only when it fires (never per request).

        It fires at least every `header_timeout`, so a head that starts at any moment (on a
        new connection, after a keep-alive pause, or behind requests in flight) is held to
        `header_timeout` from its first byte. With nothing in flight and no head started, the
        connection closes after `header_timeout` if it never sent a request, else after
        `keepalive_timeout`. Requests in flight are bounded by their route's timeouts.
        """
        self._timer = None
        transport = self._transport
        if transport is None:
            return
        now = self._loop.time()
        if self._linger_until:
            if now >= self._linger_until:
                transport.abort()  # the client neither read nor finished: stop waiting
            else:
                self._timer = self._loop.call_at(self._linger_until, self._on_timer)
            return
        if self._deferred is not None:
            return  # closing once the answers due are written
        limits = self._server.limits
        check = now + limits.header_timeout
        if self._head_started is not None:
            due = self._head_started + limits.header_timeout
            if now >= due:
                self._reject(RequestTimeoutError("the request headers did not arrive in time"))
                return
            check = min(check, due)
        elif self._current is None:
            due = self._idle_since + (
                limits.keepalive_timeout if self._served else limits.header_timeout
            )
            if now >= due:
                transport.close()
                return
            check = min(check, due)
        self._timer = self._loop.call_at(check, self._on_timer)

    def _reject(self, error: ProxyError) -> None:
        """Refuse a request the sidecar will not forward; the connection closes after it.

        Answers keep the order of requests: behind requests in flight or queued, the refusal
        waits for its turn (`finished` sends it) and nothing more is read meanwhile, for
        those requests may already have reached the upstream. Only an error in the body of
        the request in flight ends that request at once: it can never be complete.
        """
        self._head_started = None
        if self._deferred is not None or self._transport is None:
            return
        method = self._parser_method()
        current = self._current
        parsing = self._parsing
        if current is not None and parsing is not current:
            if parsing is not None and self._queue and self._queue[-1] is parsing:
                self._queue.pop()  # queued with a broken body: never started, never will be
            self._parsing = None
            self._deferred = (error, method)
            self._set_paused(queue=True)  # held until the connection closes
            return
        task = self._task
        if task is not None and not task.done():
            task.cancel()
        # `_head_sent` still describes the previous answer on a keep-alive connection;
        # only a response being written right now makes the error page impossible.
        self._refuse(error, method, answer=current is None or not self._head_sent)
        self._close_after_answer()

    def _refuse(self, error: ProxyError, method: str, *, answer: bool) -> None:
        """Log a refusal (it was never forwarded) and write its error page if `answer`."""
        self._server.rejected(self._listener, error, method)
        self._close_after = True
        if answer and self._transport is not None:
            _, payload = render_error(
                error,
                upstream="",
                attempts=0,
                request_id="",
                sidecar_headers=self._server.sidecar_headers,
                close=True,
            )
            self._transport.write(payload)

    def _parser_method(self) -> str:
        try:
            return self._parser.get_method().decode("latin-1")
        except httptools.HttpParserError:
            return ""

    def __repr__(self) -> str:
        head = "none" if self._head_started is None else f"{self._head_seen}B"
        return (
            f"<DownstreamProtocol {self._listener.name} current={self._current!r} "
            f"queued={len(self._queue)} head={head} eof={self._client_eof} "
            f"refusing={self._deferred is not None}>"
        )


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


__all__ = ["DownstreamProtocol"]
