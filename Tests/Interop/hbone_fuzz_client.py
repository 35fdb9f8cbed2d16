#!/usr/bin/env python3
"""Hostile HTTP/2 from an authenticated HBONE peer: Python's ssl (OpenSSL) + hyper-h2.

Each iteration opens an mTLS 1.3 connection (ALPN h2, a good client certificate), opens a
tunnel the way ztunnel does (CONNECT with :authority), waits for the server's 200 so the
tunnel's DATA takes the server's spliced path, sends one well-formed DATA frame, and then
writes raw frames of its own making, mutated at random: DATA (padded or not, on the
tunnel's stream, other streams, stream 0), WINDOW_UPDATE, SETTINGS, PING, RST_STREAM,
GOAWAY, HEADERS with a broken header block, an extension frame. It then reads until the
server closes or a short quiet time passes, and closes the connection itself.

Prints one JSON object: iterations, tunnels opened (200 seen), connections the server
closed, how many of those it closed with GOAWAY and their error codes.
"""
import argparse
import json
import random
import socket
import ssl
import struct
import time

import h2.config
import h2.connection
import h2.events


def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream & 0x7FFFFFFF) + payload


def hostile_frames(rng, stream):
    out = b""
    for _ in range(rng.randint(1, 8)):
        payload = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 120)))
        choice = rng.randrange(11)
        if choice <= 2:
            out += frame(0x0, 0, stream, payload)
        elif choice == 3:
            pad = rng.randint(0, 40)
            out += frame(0x0, 0x8, stream, bytes([pad]) + payload + bytes(pad))
        elif choice == 4:
            out += frame(0x0, rng.choice([0, 1, 8]), rng.choice([0, 2, 5, stream + 2]), payload)
        elif choice == 5:
            out += frame(0x8, 0, rng.choice([0, stream]), struct.pack(">I", rng.choice([0, 1, 1 << 20, 0x7FFFFFFF])))
        elif choice == 6:
            entries = b"".join(struct.pack(">HI", rng.choice([1, 2, 3, 4, 5, 6, 9]), rng.getrandbits(32))
                               for _ in range(rng.randint(0, 3)))
            out += frame(0x4, 0, 0, entries)
        elif choice == 7:
            out += frame(0x6, 0, 0, payload[:8].ljust(8, b"\0"))
        elif choice == 8:
            out += frame(0x3, 0, stream, struct.pack(">I", 8)) if rng.random() < 0.5 \
                else frame(0x7, 0, 0, struct.pack(">II", stream, 0))
        elif choice == 9:
            out += frame(0x1, 0x4, stream + 2, payload[:30])
        else:
            out += frame(0x21, rng.getrandbits(8), stream, payload[:40])
    return out


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not data:
            break
        i = rng.randrange(len(data))
        op = rng.randrange(5)
        if op == 0:
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[i] = rng.getrandbits(8)
        elif op == 2:
            del data[i:]
        elif op == 3:
            data.insert(i, rng.getrandbits(8))
        else:
            del data[i]
    return bytes(data)


def goaway_code(received):
    """The error code of the first GOAWAY frame in `received`, if whole frames parse."""
    index = 0
    while index + 9 <= len(received):
        length = int.from_bytes(received[index:index + 3], "big")
        kind = received[index + 3]
        if kind == 0x7 and index + 9 + 8 <= len(received):
            return int.from_bytes(received[index + 13:index + 17], "big")
        index += 9 + length
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--authority", required=True)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quiet-time", type=float, default=0.15)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.load_verify_locations(args.ca)
    context.load_cert_chain(args.cert, args.key)
    context.set_alpn_protocols(["h2"])

    result = {"iterations": args.iterations, "tunnels": 0, "closed_by_server": 0, "goaway": 0, "codes": {}}
    for _ in range(args.iterations):
        tls = context.wrap_socket(socket.create_connection(("127.0.0.1", args.port), timeout=5), server_hostname=None)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "CONNECT"), (":authority", args.authority)])
        tls.sendall(conn.data_to_send())
        status = None
        while status is None:
            data = tls.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers).get(":status")
            tls.sendall(conn.data_to_send())
        if status == "200":
            result["tunnels"] += 1
        conn.send_data(1, b"well-formed first")
        tls.sendall(conn.data_to_send())
        received = b""
        closed = False
        try:
            tls.sendall(mutate(rng, hostile_frames(rng, 1)))
            tls.settimeout(args.quiet_time)
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                chunk = tls.recv(65536)
                if not chunk:
                    closed = True
                    break
                received += chunk
        except socket.timeout:
            pass
        except (ssl.SSLError, OSError):
            closed = True
        if closed:
            result["closed_by_server"] += 1
            code = goaway_code(received)
            if code is not None:
                result["goaway"] += 1
                result["codes"][str(code)] = result["codes"].get(str(code), 0) + 1
        tls.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
