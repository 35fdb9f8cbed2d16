#!/usr/bin/env python3
"""An independent HBONE client: Python's ssl (OpenSSL) + the hyper-h2 library.

Opens one mTLS 1.3 connection with ALPN h2 and no SNI, sends one request (CONNECT by
default, as ztunnel does: only :method and :authority), and, on 200, sends the payload,
half-closes with END_STREAM and reads the answer until the server ends the stream.
Prints one JSON object describing what happened, for the Swift tests to assert on.
"""
import argparse
import json
import socket
import ssl
import sys

import h2.config
import h2.connection
import h2.events


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--authority", required=True)
    parser.add_argument("--method", default="CONNECT")
    parser.add_argument("--payload", default="")
    parser.add_argument("--header", action="append", default=[])
    args = parser.parse_args()

    result = {}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(args.ca)
    if args.cert:
        context.load_cert_chain(args.cert, args.key)
    context.set_alpn_protocols(["h2"])
    raw = socket.create_connection((args.host, args.port), timeout=10)
    try:
        tls = context.wrap_socket(raw, server_hostname=None)
        result["tls_version"] = tls.version()
        result["cipher"] = tls.cipher()[0]
        result["alpn"] = tls.selected_alpn_protocol()
        peer = tls.getpeercert()
        result["server_uris"] = [v for (k, v) in peer.get("subjectAltName", ()) if k == "URI"]
        result["server_serial"] = peer.get("serialNumber")
        # Some servers only fail the handshake on the client's first read (TLS 1.3).
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        tls.sendall(conn.data_to_send())
        headers = [(":method", args.method), (":authority", args.authority)]
        if args.method != "CONNECT":
            headers += [(":scheme", "https"), (":path", "/")]
        for header in args.header:
            name, value = header.split(":", 1)
            headers.append((name.strip().lower(), value.strip()))
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, headers)
        tls.sendall(conn.data_to_send())
        received = b""
        done = False
        while not done:
            data = tls.recv(65536)
            if not data:
                result["eof"] = True
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    result["status"] = int(dict(event.headers)[":status"])
                    if result["status"] == 200:
                        if args.payload:
                            conn.send_data(stream, args.payload.encode())
                        conn.end_stream(stream)
                elif isinstance(event, h2.events.DataReceived):
                    received += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.StreamEnded):
                    done = True
                elif isinstance(event, h2.events.StreamReset):
                    result["reset"] = event.error_code
                    done = True
                elif isinstance(event, h2.events.RemoteSettingsChanged):
                    result.setdefault("settings", {})
                    for key, change in event.changed_settings.items():
                        result["settings"][str(int(key))] = change.new_value
            tls.sendall(conn.data_to_send())
        result["received"] = received.decode(errors="replace")
    except (ssl.SSLError, ConnectionError, OSError) as error:
        result["error"] = f"{type(error).__name__}: {error}"
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
