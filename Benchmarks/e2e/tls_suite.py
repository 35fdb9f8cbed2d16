#!/usr/bin/env python3
"""Which TLS 1.3 cipher suite a tunnel really negotiates, read off the wire.

The tunnel benchmark compares TLS tunnels built on different libraries: ours on BoringSSL
(inside swift-nio-ssl), socat and the C peer on OpenSSL. Their default preferences differ —
BoringSSL puts TLS_AES_128_GCM_SHA256 first on a CPU with AES instructions, OpenSSL and
rustls (ztunnel) put TLS_AES_256_GCM_SHA384 first — and AES-256 runs four more rounds per
block, so "same suites" in the configuration is not "same cipher" on the wire. This reads
the ServerHello of every handshake on the loopback interface while a probe runs (a raw
AF_PACKET socket, so it needs root) and reports the suites it saw.

    with SuiteSniffer() as sniffer:
        connect_once()
    sniffer.suites                 # {"TLS_AES_128_GCM_SHA256"}
    sniffer.suites_from({15008})   # only ServerHellos sent from these ports

Run alone, it prints the suite of one connection to HOST:PORT that some other process makes
while it listens: `tls_suite.py --seconds 5`.
"""
import argparse
import socket
import struct
import threading
import time

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4

#: TLS 1.3 cipher suites (RFC 8446 §B.4).
SUITES = {
    0x1301: "TLS_AES_128_GCM_SHA256",
    0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256",
    0x1304: "TLS_AES_128_CCM_SHA256",
    0x1305: "TLS_AES_128_CCM_8_SHA256",
}


def server_hello_suite(frame):
    """(suite, source port) of a ServerHello at the start of this Ethernet frame's TCP
    payload, or None. Loopback frames carry a 14-byte Ethernet header with zero addresses."""
    if len(frame) < 14 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_IP:
        return None
    ip = frame[14:]
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_TCP:
        return None
    tcp = ip[(ip[0] & 0x0F) * 4:]
    if len(tcp) < 20:
        return None
    payload = tcp[(tcp[12] >> 4) * 4:]
    # TLSPlaintext: handshake(22), legacy_record_version 0x0303, length; then
    # Handshake: server_hello(2), uint24 length, legacy_version, random[32],
    # legacy_session_id_echo<0..32>, cipher_suite (RFC 8446 §4.1.3, §5.1).
    if len(payload) < 5 + 4 + 2 + 32 + 1 or payload[0] != 22 or payload[1] != 3 or payload[5] != 2:
        return None
    at = 5 + 4 + 2 + 32
    at += 1 + payload[at]
    if len(payload) < at + 2:
        return None
    value = struct.unpack_from("!H", payload, at)[0]
    return SUITES.get(value, f"0x{value:04x}"), struct.unpack_from("!H", tcp, 0)[0]


class SuiteSniffer:
    """Collects the suites of ServerHellos on `interface` between `__enter__` and `__exit__`.
    `__enter__` raises OSError without the privilege (or the platform) to open a packet
    socket; `error` is set if reading failed later."""

    def __init__(self, interface="lo"):
        self.interface, self.seen, self.error = interface, set(), None
        self._stop = threading.Event()
        self._socket = self._thread = None

    def __enter__(self):
        family = getattr(socket, "AF_PACKET", None)
        if family is None:
            raise OSError("no AF_PACKET sockets on this platform")
        self._socket = socket.socket(family, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            self._socket.bind((self.interface, 0))
        except OSError:
            self._socket.close()
            raise
        self._socket.settimeout(0.05)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        time.sleep(0.1)  # frames of the probe's last moments still in the socket's queue
        self._stop.set()
        self._thread.join()
        self._socket.close()
        return False

    def _run(self):
        while not self._stop.is_set():
            try:
                frame, address = self._socket.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError as error:
                self.error = error
                return
            if address[2] == PACKET_OUTGOING:  # loopback shows every frame twice
                continue
            found = server_hello_suite(frame)
            if found:
                self.seen.add(found)

    @property
    def suites(self):
        """Every suite seen."""
        return {suite for suite, _ in self.seen}

    def suites_from(self, ports):
        """The suites of ServerHellos sent from `ports` (a server's listening ports)."""
        return {suite for suite, port in self.seen if port in ports}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--interface", default="lo")
    args = parser.parse_args()
    with SuiteSniffer(args.interface) as sniffer:
        time.sleep(args.seconds)
    print(" ".join(sorted(sniffer.suites)) or "no TLS 1.3 ServerHello seen")


if __name__ == "__main__":
    main()
