#!/usr/bin/env python3
"""An independent HBONE server: Python's ssl (OpenSSL) + the hyper-h2 library.

Serves classic HTTP/2 CONNECT over mutual TLS 1.3 with ALPN h2, as ztunnel does on port
15008. Each accepted connection gets its own thread; inside it a selector multiplexes the
non-blocking TLS socket and the upstream TCP sockets of all its streams.

Stdout carries exactly one line, `listening <port>`. Stderr carries one JSON object per
finished stream plus log lines for errors, for the Swift tests to assert on.
"""
import argparse
import errno
import ipaddress
import json
import os
import random
import re
import selectors
import signal
import socket
import ssl
import struct
import sys
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from hbone_fuzz_client import hostile_frames, mutate  # same directory: the hostile frames both ways

STREAM_WINDOW = 4 * 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
MAX_FRAME_SIZE = 1024 * 1024
MAX_CONCURRENT_STREAMS = 200
DEFAULT_WINDOW = 65535

READ_CHUNK = 256 * 1024          # one recv() from TLS or from an upstream socket
DOWN_HIGH_WATER = 1024 * 1024    # stop reading an upstream when this much awaits DATA frames
TLS_HIGH_WATER = 4 * 1024 * 1024 # stop producing DATA frames when this much awaits the TLS socket
CONNECT_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 10.0

_refusals_lock = threading.Lock()
_refusals_made = 0


def _take_refusal(args):
    """Whether this request is one of the first --refuse-first, over all connections."""
    global _refusals_made
    with _refusals_lock:
        if _refusals_made >= args.refuse_first:
            return False
        _refusals_made += 1
        return True


_log_lock = threading.Lock()


def log(message):
    with _log_lock:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()


def log_json(record):
    log(json.dumps(record))


_IPV4_AUTHORITY = re.compile(r"(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})")
_IPV6_AUTHORITY = re.compile(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})")


def parse_authority(authority):
    """`a.b.c.d:port` or `[v6]:port` -> (family, sockaddr), or None if malformed."""
    for pattern, family, parse in (
        (_IPV4_AUTHORITY, socket.AF_INET, ipaddress.IPv4Address),
        (_IPV6_AUTHORITY, socket.AF_INET6, ipaddress.IPv6Address),
    ):
        match = pattern.fullmatch(authority)
        if not match:
            continue
        try:
            address = parse(match.group(1))
        except ValueError:
            return None
        port = int(match.group(2))
        if not 1 <= port <= 65535:
            return None
        return family, (str(address), port)
    return None


def resolve_upstream(text):
    """HOST:PORT (HOST may be [v6]) -> (family, sockaddr); resolved once at start-up."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--upstream must be HOST:PORT, got {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    family, _, _, _, sockaddr = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0]
    return family, sockaddr


class Stream:
    """One CONNECT stream and its upstream TCP socket."""

    def __init__(self, stream_id, authority):
        self.id = stream_id
        self.authority = authority
        self.status = None
        self.sock = None
        self.connecting = False
        self.connect_deadline = 0.0
        self.responded = False     # :status 200 sent, DATA may flow downstream
        self.mask = 0              # events currently registered for self.sock
        self.up_buf = bytearray()  # client -> upstream, received but not yet written (unacked)
        self.client_ended = False  # END_STREAM received from the client
        self.up_shut = False       # SHUT_WR done on the upstream socket
        self.down_buf = bytearray()  # upstream -> client, read but not yet framed
        self.up_eof = False        # upstream sent FIN
        self.down_ended = False    # END_STREAM sent to the client
        self.bytes_up = 0
        self.bytes_down = 0


class Connection:
    """One mTLS connection; run() blocks until it is over and never raises."""

    def __init__(self, raw, address, context, args, upstream):
        self.raw = raw
        self.address = address
        self.context = context
        self.args = args
        self.upstream = upstream
        self.tls = None
        self.peer = None
        self.h2 = None
        self.selector = None
        self.streams = {}
        self.outbuf = bytearray()
        self.pending_write = 0     # length of a TLS write that must be retried as-is
        self.peer_gone = False
        self.closing = False
        self.overflowed = False    # --overflow-window-after, --protocol-error-after or --fuzz-*: sent on this connection
        self.index = 0             # which accepted connection this is, from 1
        self.accepted = 0          # requests answered 200 on this connection (--goaway-after)
        self.requests = 0          # requests received on this connection (--goaway-before)

    # ---- set-up -------------------------------------------------------------------------

    def run(self):
        try:
            if self.handshake():
                self.serve()
        except Exception as error:  # never let one connection take the server down
            log(f"connection {self.address}: unexpected {type(error).__name__}: {error}")
        finally:
            self.teardown()

    def handshake(self):
        self.raw.settimeout(HANDSHAKE_TIMEOUT)
        try:
            self.tls = self.context.wrap_socket(self.raw, server_side=True, do_handshake_on_connect=False)
            self.tls.do_handshake()
        except (ssl.SSLError, OSError) as error:
            log(f"connection {self.address}: TLS handshake failed: {type(error).__name__}: {error}")
            return False
        if self.tls.version() != "TLSv1.3":
            log(f"connection {self.address}: refused: negotiated {self.tls.version()}, not TLSv1.3")
            return False
        if self.tls.selected_alpn_protocol() != "h2":
            log(f"connection {self.address}: refused: ALPN {self.tls.selected_alpn_protocol()!r}, not 'h2'")
            return False
        cert = self.tls.getpeercert() or {}
        uris = [value for (kind, value) in cert.get("subjectAltName", ()) if kind == "URI"]
        prefix = f"spiffe://{self.args.trust_domain}/"
        if len(uris) != 1:
            log(f"connection {self.address}: refused: client certificate has {len(uris)} URI SANs, want exactly 1")
            return False
        if not uris[0].startswith(prefix) or len(uris[0]) == len(prefix):
            log(f"connection {self.address}: refused: client identity {uris[0]!r} not in trust domain {self.args.trust_domain!r}")
            return False
        self.peer = uris[0]
        return True

    def serve(self):
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config=config)
        # Replace the defaults before the preface goes out, so the values are in force from
        # the start (h2 only applies later changes when the peer acknowledges them).
        codes = h2.settings.SettingCodes
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            codes.INITIAL_WINDOW_SIZE: self.args.stream_window,
            codes.MAX_FRAME_SIZE: self.args.max_frame,
            codes.MAX_CONCURRENT_STREAMS: self.args.max_concurrent_streams,
            codes.MAX_HEADER_LIST_SIZE: self.h2.DEFAULT_MAX_HEADER_LIST_SIZE,
        })
        self.h2.max_inbound_frame_size = self.args.max_frame
        self.h2.initiate_connection()
        if self.args.connection_window > DEFAULT_WINDOW:
            self.h2.increment_flow_control_window(self.args.connection_window - DEFAULT_WINDOW)
        self.collect()

        self.tls.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.tls, selectors.EVENT_READ, None)
        tls_mask = selectors.EVENT_READ
        while True:
            self.flush_tls()
            if self.peer_gone or self.closing:
                break
            want = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outbuf else 0)
            if want != tls_mask:
                self.selector.modify(self.tls, want, None)
                tls_mask = want
            for stream in list(self.streams.values()):
                self.update_interest(stream)
            for key, mask in self.selector.select(timeout=1.0):
                if key.data is None:
                    if mask & selectors.EVENT_READ:
                        self.read_tls()
                else:
                    self.on_upstream(key.data, mask)
            self.check_connect_timeouts()
            for stream in list(self.streams.values()):
                self.pump_down(stream)
            self.collect()

    # ---- TLS side -----------------------------------------------------------------------

    def collect(self):
        data = self.h2.data_to_send()
        if data:
            self.outbuf += data

    def flush_tls(self):
        while self.outbuf and not self.peer_gone:
            size = self.pending_write or min(len(self.outbuf), READ_CHUNK)
            try:
                sent = self.tls.send(memoryview(self.outbuf)[:size])
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                self.pending_write = size
                return
            except (ssl.SSLError, OSError) as error:
                log(f"connection {self.address}: write failed: {type(error).__name__}: {error}")
                self.peer_gone = True
                return
            self.pending_write = 0
            del self.outbuf[:sent]

    def read_tls(self):
        """Drain the TLS socket (and OpenSSL's buffer) and feed h2 in large batches."""
        while not self.peer_gone and not self.closing:
            chunks, size, blocked = [], 0, False
            while size < READ_CHUNK * 4:
                try:
                    data = self.tls.recv(READ_CHUNK)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    blocked = True
                    break
                except ssl.SSLZeroReturnError:
                    data = b""
                except (ssl.SSLError, OSError) as error:
                    log(f"connection {self.address}: read failed: {type(error).__name__}: {error}")
                    data = None
                if not data:
                    if self.lingers():
                        log(f"connection {self.address}: the peer closed the connection")
                    self.peer_gone = True
                    break
                chunks.append(data)
                size += len(data)
            if chunks:
                try:
                    events = self.h2.receive_data(b"".join(chunks))
                except h2.exceptions.ProtocolError as error:
                    log(f"connection {self.address}: HTTP/2 protocol error: {type(error).__name__}: {error}")
                    self.collect()  # the GOAWAY h2 prepared
                    self.closing = True
                    return
                for event in events:
                    self.on_event(event)
                self.collect()
            if blocked or self.peer_gone:
                return

    def on_event(self, event):
        if isinstance(event, h2.events.RequestReceived):
            self.on_request(event.stream_id, event.headers, event.stream_ended is not None)
        elif isinstance(event, h2.events.DataReceived):
            self.on_data(event)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.client_ended = True
                self.maybe_shutdown_upstream(stream)
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                self.finish(stream, reset=int(event.error_code))
        elif isinstance(event, h2.events.ConnectionTerminated):
            log(f"connection {self.address}: GOAWAY from peer, error {event.error_code!r}")
            # A broken peer (--protocol-error-after, --fuzz-connections) does not close:
            # whether the other end closes the TCP connection after its GOAWAY (RFC 9113
            # §5.4.1) shows in the log. Its streams end here, so nothing more is sent.
            if self.lingers():
                for stream in list(self.streams.values()):
                    self.finish(stream, error="the peer sent GOAWAY")
            else:
                self.closing = True
        # WindowUpdated, settings, pings, priorities: h2 handles them, pump_down retries.

    # ---- streams ------------------------------------------------------------------------

    def respond(self, stream_id, status, end_stream):
        self.h2.send_headers(stream_id, [(":status", str(status))], end_stream=end_stream)

    def on_request(self, stream_id, headers, ended):
        pseudo = {}
        for name, value in headers:
            pseudo.setdefault(name, value)
        method = pseudo.get(":method")
        authority = pseudo.get(":authority", "")
        stream = Stream(stream_id, authority)
        self.requests += 1
        if self.args.goaway_before is not None and self.requests == self.args.goaway_before:
            # RFC 9113 §6.8: one GOAWAY naming the stream before this one, which is left
            # unprocessed (no upstream, no answer); the client may retry it elsewhere.
            self.go_away(max(0, stream_id - 2))
            self.flush_tls()
            return
        if _take_refusal(self.args):
            # RFC 9113 §8.7: not processed, so the client may retry it.
            self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            log(f"connection {self.address}: stream {stream_id} refused (REFUSED_STREAM)")
            return
        if self.args.window_update_first:
            # Legal on an open stream before any response (RFC 9113 §6.9); a client must
            # keep reading for its response past it.
            self.h2.increment_flow_control_window(1024, stream_id=stream_id)
            self.collect()
            self.flush_tls()
        if self.args.status is not None:
            return self.reject(stream, self.args.status)
        target = parse_authority(authority)
        if method != "CONNECT" or target is None:
            return self.reject(stream, 400)
        if self.upstream is not None:
            target = self.upstream
        family, sockaddr = target
        stream.client_ended = ended
        self.streams[stream_id] = stream
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as error:
            return self.fail_connect(stream, error.strerror or str(error))
        sock.setblocking(False)
        stream.sock = sock
        code = sock.connect_ex(sockaddr)
        if code == 0:
            self.on_connected(stream)
        elif code in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            stream.connecting = True
            stream.connect_deadline = time.monotonic() + CONNECT_TIMEOUT
        else:
            self.fail_connect(stream, os.strerror(code))

    def reject(self, stream, status):
        stream.status = status
        self.respond(stream.id, status, end_stream=True)
        self.log_stream(stream)

    def fail_connect(self, stream, reason):
        log(f"stream {stream.id}: connect to {stream.authority} failed: {reason}")
        stream.status = 503
        self.respond(stream.id, 503, end_stream=True)
        self.finish(stream, error=f"connect failed: {reason}")

    def on_connected(self, stream):
        stream.connecting = False
        stream.responded = True
        stream.status = 200
        try:
            stream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.respond(stream.id, 200, end_stream=False)
        if self.args.reset_after_200:
            # In the same write as the 200, so the client reads both in one burst.
            self.h2.reset_stream(stream.id, h2.errors.ErrorCodes.CANCEL)
            self.finish(stream, reset=int(h2.errors.ErrorCodes.CANCEL))
            return
        self.write_upstream(stream)  # data the client sent before our 200, if any
        self.accepted += 1
        if self.args.goaway_after is not None and self.accepted == self.args.goaway_after:
            self.go_away(stream.id)

    def go_away(self, last_stream_id):
        """A GOAWAY(NO_ERROR) naming `last_stream_id`, written as raw bytes so that h2 keeps
        serving the streams up to it (RFC 9113 §6.8) and the connection stays open: whether
        the client closes it once its streams are done shows in the log."""
        self.collect()
        self.outbuf += struct.pack(">I", 8)[1:] + bytes([0x7, 0x0]) + struct.pack(">III", 0, last_stream_id, 0)
        log(f"connection {self.address}: sent GOAWAY, last stream {last_stream_id}")

    def on_data(self, event):
        stream = self.streams.get(event.stream_id)
        padding = event.flow_controlled_length - len(event.data)
        if stream is None or stream.client_ended or stream.up_shut:
            # Nobody will consume it; hand the window straight back.
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            return
        if padding > 0:
            self.h2.acknowledge_received_data(padding, event.stream_id)
        stream.up_buf += event.data
        stream.bytes_up += len(event.data)
        if not stream.connecting:
            self.write_upstream(stream)
        limit = self.args.overflow_window_after
        if limit is not None and not self.overflowed and stream.bytes_up >= limit:
            self.overflow_window(stream)
        limit = self.args.protocol_error_after
        if limit is not None and not self.overflowed and stream.bytes_up >= limit:
            self.protocol_error()
        if self.index <= self.args.fuzz_connections and not self.overflowed:
            self.fuzz()

    def overflow_window(self, stream):
        """A WINDOW_UPDATE that pushes the client's send window for `stream` above 2^31-1
        (RFC 9113 §6.9.1), written as raw bytes: h2 only lets a well-behaved peer send
        updates. Once per connection, after what h2 has queued so far."""
        self.overflowed = True
        self.collect()
        self.outbuf += struct.pack(">I", 4)[1:] + bytes([0x8, 0x0]) + struct.pack(">II", stream.id, 0x7FFFFFFF)

    def lingers(self):
        """A broken peer keeps its end open after a GOAWAY and logs when the other end closes."""
        return (self.args.protocol_error_after is not None or self.args.goaway_after is not None
                or self.args.goaway_before is not None
                or self.index <= self.args.fuzz_connections)

    def protocol_error(self):
        """A DATA frame on stream 0, written as raw bytes: RFC 9113 §6.1 "the recipient MUST
        respond with a connection error ... of type PROTOCOL_ERROR". Once per connection."""
        self.overflowed = True
        self.collect()
        self.outbuf += struct.pack(">I", 3)[1:] + bytes([0x0, 0x0]) + struct.pack(">I", 0) + b"bad"

    def fuzz(self):
        """Mutated raw frames (hbone_fuzz_client.py's), after what h2 has queued: a hostile
        server, once per connection, on the first DATA of the connection's first tunnel."""
        self.overflowed = True
        self.collect()
        rng = random.Random(self.args.fuzz_seed * 100_003 + self.index)
        self.outbuf += mutate(rng, hostile_frames(rng, 1))

    def write_upstream(self, stream):
        """Write what we can; acknowledge exactly what reached the upstream socket."""
        if stream.sock is None or stream.connecting:
            return
        while stream.up_buf:
            try:
                written = stream.sock.send(stream.up_buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                self.upstream_error(stream, f"upstream write failed: {error.strerror or error}")
                return
            del stream.up_buf[:written]
            self.h2.acknowledge_received_data(written, stream.id)
        self.maybe_shutdown_upstream(stream)

    def maybe_shutdown_upstream(self, stream):
        if (stream.client_ended and not stream.up_shut and not stream.up_buf
                and stream.sock is not None and not stream.connecting):
            stream.up_shut = True
            try:
                stream.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self.maybe_finish(stream)

    def read_upstream(self, stream):
        try:
            data = stream.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self.upstream_error(stream, f"upstream read failed: {error.strerror or error}")
            return
        if data:
            stream.down_buf += data
        else:
            stream.up_eof = True
        self.pump_down(stream)

    def pump_down(self, stream):
        """Frame buffered upstream bytes within the send windows; END_STREAM after EOF."""
        if not stream.responded or stream.down_ended or self.streams.get(stream.id) is not stream:
            return
        offset = 0
        view = memoryview(stream.down_buf)
        try:
            while offset < len(stream.down_buf) and len(self.outbuf) < TLS_HIGH_WATER:
                size = min(self.h2.local_flow_control_window(stream.id),
                           self.h2.max_outbound_frame_size,
                           len(stream.down_buf) - offset)
                if size <= 0:
                    break  # blocked: a WINDOW_UPDATE will bring us back here
                self.h2.send_data(stream.id, bytes(view[offset:offset + size]))
                offset += size
                self.collect()
        finally:
            view.release()
            del stream.down_buf[:offset]
            stream.bytes_down += offset
        if stream.up_eof and not stream.down_buf:
            self.h2.end_stream(stream.id)
            stream.down_ended = True
            self.maybe_finish(stream)

    def upstream_error(self, stream, reason):
        log(f"stream {stream.id}: {reason}")
        try:
            self.h2.reset_stream(stream.id, h2.errors.ErrorCodes.CONNECT_ERROR)
        except h2.exceptions.H2Error:
            pass
        self.finish(stream, error=reason)

    def on_upstream(self, stream, mask):
        if self.streams.get(stream.id) is not stream:
            return
        if stream.connecting:
            code = stream.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self.fail_connect(stream, os.strerror(code))
            else:
                self.on_connected(stream)
            return
        if mask & selectors.EVENT_WRITE:
            self.write_upstream(stream)
        if mask & selectors.EVENT_READ and self.streams.get(stream.id) is stream:
            self.read_upstream(stream)

    def check_connect_timeouts(self):
        now = time.monotonic()
        for stream in list(self.streams.values()):
            if stream.connecting and now > stream.connect_deadline:
                self.fail_connect(stream, "timed out")

    def update_interest(self, stream):
        want = 0
        if stream.sock is not None:
            if stream.connecting:
                want = selectors.EVENT_WRITE
            else:
                if not stream.up_eof and len(stream.down_buf) < DOWN_HIGH_WATER:
                    want |= selectors.EVENT_READ
                if stream.up_buf:
                    want |= selectors.EVENT_WRITE
        if want == stream.mask:
            return
        if stream.mask == 0:
            self.selector.register(stream.sock, want, stream)
        elif want == 0:
            self.selector.unregister(stream.sock)
        else:
            self.selector.modify(stream.sock, want, stream)
        stream.mask = want

    def maybe_finish(self, stream):
        if stream.down_ended and stream.up_shut:
            self.finish(stream)

    def finish(self, stream, reset=None, error=None):
        if self.streams.get(stream.id) is not stream:
            return
        del self.streams[stream.id]
        if stream.sock is not None:
            if stream.mask:
                try:
                    self.selector.unregister(stream.sock)
                except (KeyError, ValueError):
                    pass
                stream.mask = 0
            stream.sock.close()
        if stream.up_buf:
            # Never written upstream: return the connection-level window all the same.
            try:
                self.h2.acknowledge_received_data(len(stream.up_buf), stream.id)
            except h2.exceptions.H2Error:
                pass
            stream.up_buf.clear()
        self.log_stream(stream, reset=reset, error=error)

    def log_stream(self, stream, reset=None, error=None):
        record = {
            "stream": stream.id,
            "authority": stream.authority,
            "status": stream.status,
            "peer": self.peer,
            "bytes_up": stream.bytes_up,
            "bytes_down": stream.bytes_down,
        }
        if reset is not None:
            record["reset"] = reset
        if error is not None:
            record["error"] = error
        log_json(record)

    # ---- tear-down ----------------------------------------------------------------------

    def teardown(self):
        if self.tls is not None and self.outbuf and not self.peer_gone:
            try:  # best effort: a GOAWAY or final frames
                self.tls.settimeout(2.0)
                self.tls.sendall(self.outbuf)
            except (ssl.SSLError, OSError):
                pass
        reason = "connection closed" if not self.closing else "connection terminated"
        for stream in list(self.streams.values()):
            self.finish(stream, error=reason)
        if self.selector is not None:
            self.selector.close()
        for sock in (self.tls, self.raw):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass


def make_context(args):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(args.ca)
    context.load_cert_chain(args.cert, args.key)
    context.set_alpn_protocols(["h2"])
    context.num_tickets = 0
    return context


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True, help="PEM certificate chain (leaf first)")
    parser.add_argument("--key", required=True)
    parser.add_argument("--ca", required=True, help="PEM root(s) that client certificates must chain to")
    parser.add_argument("--trust-domain", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", help="HOST:PORT to connect every stream to, instead of :authority")
    parser.add_argument("--status", type=int, help="answer every request with this status and END_STREAM")
    parser.add_argument("--max-connections", type=int, help="exit 0 after serving this many connections")
    parser.add_argument("--stream-window", type=int, default=STREAM_WINDOW,
                        help="SETTINGS_INITIAL_WINDOW_SIZE (default ztunnel's 4 MiB; 65535 is HTTP/2's default)")
    parser.add_argument("--connection-window", type=int, default=CONNECTION_WINDOW,
                        help="connection receive window; at 65535 no WINDOW_UPDATE opens it at the start")
    parser.add_argument("--max-frame", type=int, default=MAX_FRAME_SIZE, help="SETTINGS_MAX_FRAME_SIZE")
    parser.add_argument("--refuse-first", type=int, default=0, metavar="N",
                        help="reset the first N requests (over all connections) with REFUSED_STREAM")
    parser.add_argument("--max-concurrent-streams", type=int, default=MAX_CONCURRENT_STREAMS,
                        help="SETTINGS_MAX_CONCURRENT_STREAMS (default ztunnel's 200)")
    parser.add_argument("--overflow-window-after", type=int, metavar="BYTES",
                        help="once per connection, when a stream has sent this many bytes, push its "
                             "send window above 2^31-1 with a raw WINDOW_UPDATE (a broken peer)")
    parser.add_argument("--protocol-error-after", type=int, metavar="BYTES",
                        help="once per connection, when a stream has sent this many bytes, send a DATA "
                             "frame on stream 0, a connection error (a broken peer)")
    parser.add_argument("--fuzz-connections", type=int, default=0, metavar="N",
                        help="the first N connections get mutated raw frames after their first DATA (a hostile peer)")
    parser.add_argument("--fuzz-seed", type=int, default=1)
    parser.add_argument("--reset-after-200", action="store_true",
                        help="reset every stream with CANCEL right after its 200, in the same write")
    parser.add_argument("--window-update-first", action="store_true",
                        help="send a stream WINDOW_UPDATE before answering each request")
    parser.add_argument("--goaway-before", type=int, metavar="N",
                        help="answer the Nth request of a connection with only a GOAWAY(NO_ERROR) naming the "
                             "stream before it: that request is not processed (a server that drains in one step)")
    parser.add_argument("--goaway-after", type=int, metavar="N",
                        help="after answering the Nth request of a connection with 200, send GOAWAY(NO_ERROR) "
                             "naming it and keep serving (a server that wants the client to move on)")
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))

    context = make_context(args)
    upstream = resolve_upstream(args.upstream) if args.upstream else None

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(128)
    sys.stdout.write(f"listening {listener.getsockname()[1]}\n")
    sys.stdout.flush()

    threads = []
    served = 0
    while args.max_connections is None or served < args.max_connections:
        try:
            raw, address = listener.accept()
        except OSError as error:
            log(f"accept failed: {error}")
            time.sleep(0.05)
            continue
        served += 1
        connection = Connection(raw, f"{address[0]}:{address[1]}", context, args, upstream)
        connection.index = served
        thread = threading.Thread(target=connection.run, daemon=True)
        thread.start()
        threads = [t for t in threads if t.is_alive()] + [thread]
    listener.close()
    for thread in threads:
        thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
