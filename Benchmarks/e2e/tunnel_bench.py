#!/usr/bin/env python3
"""End-to-end tunnel benchmarks: our HBONE tunnel against baselines, in one run.

Every configuration has the same shape, so the numbers compare like with like:

    load generator -> [entry relay] -> [exit relay] -> sink/echo

  plain         no relay (loopback TCP straight to the sink)
  socat-pair    two plain socat relays (the cost of relaying, no crypto)
  socat-tls     socat TCP->OpenSSL ... OpenSSL->TCP (a TLS 1.3 tunnel from stock tools)
  c-peer        the C nghttp2+OpenSSL HBONE peer in both roles (Tests/Interop/hbone-peer)
  swift         hbone-tunnel client -> hbone-tunnel server (this package)
  swift-nopool  the same with the client's pool off (tunnel rates only: a handshake each)
  swift-nosplice  the same with DATA through nio-http2's stream channels instead of
                the splicers (HBONEConfiguration.splicesData off), for comparison
  swift->c, c->swift   the two implementations against each other

Measured: bulk throughput (iperf3, one stream), CPU seconds per GiB spent by the relays,
1 KiB request/response latency (paced, p50/p99) and the latency each configuration adds
over plain TCP — these in interleaved rounds (`--rounds`), every configuration once per
round — tunnels per second (open, 100 B each way, close), sequential and from 4
concurrent clients (meshload.c; on our side each is a new stream on the pooled connection,
and in `swift-nopool` a new mTLS connection with a full handshake), and resident memory per
idle tunnel. The sink is iperf3's server; the far end of every other run is meshload.c's
one-thread epoll echo server.
Ratios are printed against the baselines of the same run.

Every TLS configuration runs the same cipher: BoringSSL (ours) negotiates
TLS_AES_128_GCM_SHA256 on a CPU with AES instructions, OpenSSL prefers
TLS_AES_256_GCM_SHA384, so the OpenSSL-based relays (socat, the C peer) are restricted to
`--openssl-suites` (default the former). The suite each configuration really negotiated is
read off the wire (tls_suite.py) on its first connection and printed.
"""
import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from tls_suite import SuiteSniffer

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DEFAULT_OPENSSL_SUITES = "TLS_AES_128_GCM_SHA256"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def wait_listening(port, timeout=20.0):
    """Waits until something listens on `port`, without connecting (a probe connection
    would travel through the relays and confuse iperf3's control channel)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
        if out.strip():
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_ticks(pids):
    """(user, system) clock ticks of the processes and their descendants."""
    user = system = 0
    for pid in pids:
        for task in _tree(pid):
            try:
                fields = open(f"/proc/{task}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # utime + cutime, stime + cstime: socat's per-connection children are reaped
            # by the parent, which then accounts their CPU time.
            user += int(fields[11]) + int(fields[13])
            system += int(fields[12]) + int(fields[14])
    return user, system


def cpu_seconds(pids):
    return sum(cpu_ticks(pids)) / CLOCK_TICKS


def rss_kib(pids):
    total = 0
    for pid in pids:
        for task in _tree(pid):
            try:
                for line in open(f"/proc/{task}/status"):
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
    return total


def _tree(pid):
    """pid and its descendants (socat forks a child per connection)."""
    found = [pid]
    try:
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        return found
    for child in children:
        found += _tree(int(child))
    return found


class Relays:
    """The processes of one configuration; `entry` is where the load generator connects."""

    def __init__(self, bench, name, upstream):
        self.name, self.procs, self.entry = name, [], None
        self.tls_ports = set()  # where this configuration's TLS servers listen
        try:
            self._start_all(bench, name, upstream)
        except BaseException:
            self.stop()  # what started before the failure
            raise

    def _start_all(self, bench, name, upstream):
        b = bench
        if name == "plain":
            self.entry = upstream
        elif name == "socat-pair":
            mid = free_port()
            self._socat(["TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork" % mid, "TCP:127.0.0.1:%d,nodelay" % upstream], mid)
            self.entry = free_port()
            self._socat(["TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork" % self.entry, "TCP:127.0.0.1:%d,nodelay" % mid],
                        self.entry)
        elif name == "socat-tls":
            mid = free_port()
            tls = "openssl-min-proto-version=TLS1.3,cafile=%s" % b.root
            self.tls_ports.add(mid)
            self._socat(["OPENSSL-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork,cert=%s,key=%s,verify=1,%s"
                         % (mid, b.server_cert, b.server_key, tls), "TCP:127.0.0.1:%d,nodelay" % upstream], mid,
                        b.openssl_env)
            self.entry = free_port()
            # mTLS as far as socat allows: the server end requires and verifies the client
            # certificate; the client end presents its certificate but cannot verify the
            # server's, because socat matches the peer's name against the host and SPIFFE
            # certificates carry only a URI SAN (verify=0). Bulk throughput does not depend
            # on that check.
            self._socat(["TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork" % self.entry,
                         "OPENSSL:127.0.0.1:%d,cert=%s,key=%s,verify=0,no-sni=1,nodelay,%s"
                         % (mid, b.client_cert, b.client_key, tls)], self.entry, b.openssl_env)
        else:
            client_impl, server_impl = {
                "swift": ("swift", "swift"), "c-peer": ("c", "c"), "swift-nopool": ("swift-nopool", "swift"),
                "swift-nosplice": ("swift-nosplice", "swift-nosplice"),
                "swift->c": ("swift", "c"), "c->swift": ("c", "swift"),
            }[name]
            server_port = self._start(b.server_command(server_impl, upstream))
            self.tls_ports.add(server_port)
            self.entry = self._start(b.client_command(client_impl, server_port, upstream))
        wait_listening(self.entry)

    def _socat(self, args, port, env=None):
        # -b131072: socat's default 8 KiB buffer costs it half its throughput (perf.md §2.3).
        self.procs.append(subprocess.Popen(["socat", "-b131072"] + args, stderr=subprocess.DEVNULL, env=env))
        wait_listening(port)

    def _start(self, command):
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.procs.append(proc)
        line = proc.stdout.readline().strip()
        if not line.startswith("listening "):
            raise RuntimeError(f"{command[0]} did not start: {line!r}")
        return int(line.split()[1])

    @property
    def pids(self):
        return [p.pid for p in self.procs]

    def stop(self):
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


class Bench:
    def __init__(self, args, workdir):
        self.args, self.workdir = args, workdir
        self.tunnel = args.hbone_tunnel
        self.peer = args.hbone_peer
        ca = os.path.join(workdir, "ca")
        subprocess.run([self.tunnel, "ca", "--dir", ca], check=True, stdout=subprocess.DEVNULL)
        self.ca = ca
        self.root = os.path.join(ca, "root-cert.pem")
        for role, sa in (("server", "httpbin"), ("client", "sleep")):
            prefix = os.path.join(workdir, role)
            subprocess.run([self.tunnel, "issue", "--dir", ca, "--identity",
                            f"spiffe://cluster.local/ns/default/sa/{sa}", "--out", prefix],
                           check=True, stdout=subprocess.DEVNULL)
            setattr(self, f"{role}_cert", prefix + ".pem")
            setattr(self, f"{role}_key", prefix + ".key")
        # socat has no option for TLS 1.3 suites; OpenSSL's configuration file sets them for
        # every context the process creates (`Ciphersuites` in the system_default section).
        self.openssl_suites = getattr(args, "openssl_suites", None) or DEFAULT_OPENSSL_SUITES
        conf = os.path.join(workdir, "openssl-suites.cnf")
        with open(conf, "w") as f:
            f.write("openssl_conf = conf\n[conf]\nssl_conf = ssl\n[ssl]\nsystem_default = tls\n"
                    f"[tls]\nCiphersuites = {self.openssl_suites}\n")
        self.openssl_env = dict(os.environ, OPENSSL_CONF=conf)

    def server_command(self, impl, upstream):
        if impl.startswith("swift"):
            return [self.tunnel, "server", "--dir", self.ca, "--listen", "127.0.0.1:0",
                    "--upstream", f"127.0.0.1:{upstream}"] + (["--no-splice"] if impl == "swift-nosplice" else [])
        return [self.peer, "server", "--listen", "127.0.0.1:0", "--cert", self.server_cert,
                "--key", self.server_key, "--ca", self.root, "--trust-domain", "cluster.local",
                "--upstream", f"127.0.0.1:{upstream}", "--ciphersuites", self.openssl_suites, "--quiet"]

    def client_command(self, impl, server_port, upstream):
        if impl.startswith("swift"):
            return [self.tunnel, "client", "--dir", self.ca, "--listen", "127.0.0.1:0",
                    "--connect", f"127.0.0.1:{server_port}", "--authority", f"127.0.0.1:{upstream}"] \
                + (["--pool-off"] if impl == "swift-nopool" else []) \
                + (["--no-splice"] if impl == "swift-nosplice" else [])
        return [self.peer, "client", "--listen", "127.0.0.1:0", "--connect", f"127.0.0.1:{server_port}",
                "--authority", f"127.0.0.1:{upstream}", "--cert", self.client_cert, "--key", self.client_key,
                "--ca", self.root, "--expect-identity", "spiffe://cluster.local/ns/default/sa/httpbin",
                "--ciphersuites", self.openssl_suites, "--quiet"]


def throughput(relays, seconds):
    """Gbit/s received by the sink over one iperf3 stream, and relay CPU-s per GiB."""
    before = cpu_seconds(relays.pids)
    out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(relays.entry), "-t", str(seconds),
                          "-J", "-O", "1"], capture_output=True, text=True, timeout=seconds + 60)
    cpu = cpu_seconds(relays.pids) - before
    result = json.loads(out.stdout)
    if "error" in result:
        raise RuntimeError(result["error"])
    received = result["end"]["sum_received"]
    gib = received["bytes"] / (1 << 30)
    return received["bits_per_second"] / 1e9, (cpu / gib if gib else float("nan"))


def latency_samples(entry, count):
    """Paced 1 KiB request/response on one connection: `count` round trips in µs."""
    payload = b"x" * 1024
    with socket.create_connection(("127.0.0.1", entry)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        samples = []
        for i in range(count + 100):
            start = time.perf_counter_ns()
            s.sendall(payload)
            got = 0
            while got < len(payload):
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("echo closed")
                got += len(chunk)
            if i >= 100:  # warm-up
                samples.append((time.perf_counter_ns() - start) / 1000)
            time.sleep(0.001)  # paced at ~1000 req/s as perf.md §3 (Istio's fortio test): the relays go idle between requests, as real RPCs do
    return samples


def percentile(samples, fraction):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def exchange(entry, payload=b"y" * 100):
    """One connection through the relays: open, `payload` each way, close."""
    with socket.create_connection(("127.0.0.1", entry)) as s:
        s.sendall(payload)
        got = 0
        while got < len(payload):
            chunk = s.recv(4096)
            if not chunk:
                break
            got += len(chunk)


def tunnel_rate(entry, seconds):
    """Sequential connections per second: open, 100 bytes each way, close."""
    count, deadline = 0, time.time() + seconds
    while time.time() < deadline:
        exchange(entry)
        count += 1
    return count / seconds


def start_reading_suite(bench, name, upstream):
    """Starts `name`'s relays and runs one connection through them while the TLS 1.3 suites
    on the wire are read (the C peer's client connects when it starts, ours on the first
    tunnel). Returns the relays and the suites of ServerHellos from their TLS servers' ports
    ('?' without the privilege to sniff, or if reading failed)."""
    try:
        sniffer = SuiteSniffer().__enter__()
    except OSError:
        return Relays(bench, name, upstream), "?"
    relays = None
    try:
        relays = Relays(bench, name, upstream)
        exchange(relays.entry)
    except BaseException:
        if relays:
            relays.stop()
        raise
    finally:
        sniffer.__exit__(None, None, None)
    if sniffer.error:
        return relays, "?"
    return relays, " ".join(sorted(sniffer.suites_from(relays.tls_ports))) or "none"


def concurrent_tunnel_rate(meshload, entry, seconds, threads=4):
    """New tunnels per second from `threads` concurrent loops (meshload conn: connect, 100 B
    each way, close); with the pool off each is a full mTLS 1.3 handshake."""
    out = subprocess.run([meshload, "conn", "127.0.0.1", str(entry), str(seconds), str(threads)],
                         capture_output=True, text=True, timeout=seconds + 30).stdout.split()
    fields = dict(zip(out[0::2], out[1::2]))
    return float(fields["rate"]), int(fields["failures"])


def idle_memory(relays, count):
    """KiB of relay RSS per idle open tunnel."""
    before = rss_kib(relays.pids)
    sockets = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", relays.entry), timeout=20)
        s.sendall(b"z")
        sockets.append(s)
    for s in sockets:
        s.recv(1)  # every tunnel is established end to end
    time.sleep(0.5)
    after = rss_kib(relays.pids)
    for s in sockets:
        s.close()
    return (after - before) / count


def build_meshload(directory):
    """meshload (Benchmarks/e2e/meshload.c: load generator and echo server) built in `directory`."""
    path = os.path.join(directory, "meshload")
    subprocess.run(["cc", "-O2", "-pthread", "-o", path,
                    os.path.join(os.path.dirname(os.path.abspath(__file__)), "meshload.c")], check=True)
    return path


@contextlib.contextmanager
def echo_server(meshload):
    """meshload's one-thread epoll echo server on a free port, for as long as the `with`
    lasts: yields (port, pid)."""
    port = free_port()
    echo = subprocess.Popen([meshload, "serve", str(port)], stdout=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield port, echo.pid
    finally:
        echo.terminate()
        echo.wait()


class EchoRig:
    """What the paced-latency scripts share (latency_ab.py, critical_path.py,
    awake_latency.py): a scratch directory with meshload built in it, meshload's echo
    server, and the relays the caller starts, by name, in `relays`. close() stops the
    relays, then the echo server, and removes the directory."""

    def __init__(self, prefix):
        self.work = tempfile.mkdtemp(prefix=prefix)
        self.relays = {}
        self._echo = contextlib.ExitStack()
        try:
            self.meshload = build_meshload(self.work)
            self.echo_port, self.echo_pid = self._echo.enter_context(echo_server(self.meshload))
        except BaseException:
            self.close()
            raise

    def close(self):
        for relays in self.relays.values():
            relays.stop()
        self._echo.close()
        shutil.rmtree(self.work, ignore_errors=True)


def round_orders(configs, rounds):
    """Every configuration once per round, forwards in even rounds and backwards in odd
    ones, so a host that drifts during the run does not favour whichever runs first."""
    return [configs if r % 2 == 0 else configs[::-1] for r in range(rounds)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--hbone-tunnel", required=True)
    parser.add_argument("--hbone-peer")
    parser.add_argument("--seconds", type=int, default=6, help="iperf3 seconds per throughput round")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of the throughput and latency runs (perf.md's method): "
                             "the median round's throughput and the pooled latency samples are reported")
    parser.add_argument("--latency-requests", type=int, default=3000, help="per configuration, over all rounds")
    # Below 200: the C peer's client queues streams beyond the server's 200 concurrent.
    parser.add_argument("--idle-tunnels", type=int, default=150)
    parser.add_argument("--only", help="comma-separated configurations")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--openssl-suites", default=DEFAULT_OPENSSL_SUITES,
                        help="TLS 1.3 suites of the OpenSSL-based relays (socat, the C peer); default: "
                             "the one BoringSSL, inside ours, negotiates on a CPU with AES instructions")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    configs = ["plain", "socat-pair", "socat-tls", "swift", "swift-nosplice", "swift-nopool"]
    if args.hbone_peer:
        configs += ["c-peer", "swift->c", "c->swift"]
    if args.only:
        configs = [c for c in args.only.split(",")]
    # swift-nopool differs from swift only in the handshake per tunnel.
    streamed = [c for c in configs if c != "swift-nopool"]

    workdir = tempfile.mkdtemp(prefix="hbone-bench-")
    bench = Bench(args, workdir)
    meshload = build_meshload(workdir)
    sink_port = free_port()
    sink = subprocess.Popen(["iperf3", "-s", "-p", str(sink_port)], stdout=subprocess.DEVNULL)
    # The far end of latency, tunnel-rate and memory runs: meshload's one-thread epoll echo
    # server (the mesh benchmark's too). A thread-per-connection Python server spent a
    # few hundred µs of the two cores on every new connection, in every configuration.
    echo = contextlib.ExitStack()
    results = {name: {} for name in configs}
    try:
        echo_port, _ = echo.enter_context(echo_server(meshload))
        wait_port(sink_port)
        # Tunnels per second and memory: one configuration at a time.
        for name in configs:
            row = results[name]
            if name in ("plain", "socat-pair"):
                relays = Relays(bench, name, echo_port)
            else:
                relays, row["tls_suite"] = start_reading_suite(bench, name, echo_port)
            try:
                row["tunnels_per_s"] = tunnel_rate(relays.entry, 3)
                row["concurrent_tunnels_per_s"], row["concurrent_failures"] = \
                    concurrent_tunnel_rate(meshload, relays.entry, 5 if name == "swift-nopool" else 3)
                if name not in ("plain", "swift-nopool"):
                    row["kib_per_idle_tunnel"] = idle_memory(relays, args.idle_tunnels)
            finally:
                relays.stop()
            print(f"{name:14s} {row['tunnels_per_s']:7.0f} tunnels/s sequential, "
                  f"{row['concurrent_tunnels_per_s']:7.0f} from 4 concurrent clients ({row['concurrent_failures']} failed)"
                  + (f", {row['kib_per_idle_tunnel']:6.1f} KiB per idle tunnel" if "kib_per_idle_tunnel" in row else "")
                  + (" (a full mTLS handshake each)" if name == "swift-nopool" else "")
                  + (f", {row['tls_suite']}" if "tls_suite" in row else ""), flush=True)
        suites = {row["tls_suite"] for row in results.values() if "tls_suite" in row}
        if len(suites) > 1:
            print(f"warning: the TLS configurations negotiated different suites ({', '.join(sorted(suites))}); "
                  "their throughput does not compare like with like", flush=True)

        # Bulk throughput: interleaved rounds, fresh relays for every run.
        for number, order in enumerate(round_orders(streamed, args.rounds)):
            for name in order:
                relays = Relays(bench, name, sink_port)
                try:
                    gbps, cpu = throughput(relays, args.seconds)
                finally:
                    relays.stop()
                results[name].setdefault("gbps_rounds", []).append(gbps)
                results[name].setdefault("cpu_s_per_gib_rounds", []).append(cpu)
            print(f"throughput round {number + 1}: " + ", ".join(
                f"{n} {results[n]['gbps_rounds'][-1]:.2f}" for n in streamed) + " Gbit/s", flush=True)
        for name in streamed:
            row = results[name]
            row["gbps"] = statistics.median(row["gbps_rounds"])
            row["cpu_s_per_gib"] = statistics.median(row["cpu_s_per_gib_rounds"])

        # Latency: every configuration's relays up at once (idle while the others run),
        # the same number of paced requests through each in every round.
        everything = {}
        try:
            for name in streamed:
                everything[name] = Relays(bench, name, echo_port)
            per_round = max(1, args.latency_requests // args.rounds)
            for number, order in enumerate(round_orders(streamed, args.rounds)):
                for name in order:
                    samples = latency_samples(everything[name].entry, per_round)
                    results[name].setdefault("latency_samples", []).extend(samples)
                    results[name].setdefault("p50_rounds_us", []).append(percentile(samples, 0.5))
                print(f"latency round {number + 1}: p50 " + ", ".join(
                    f"{n} {results[n]['p50_rounds_us'][-1]:.1f}" for n in streamed) + " µs", flush=True)
        finally:
            for relays in everything.values():
                relays.stop()
        for name in streamed:
            row = results[name]
            samples = row.pop("latency_samples")
            row["p50_us"], row["p99_us"] = percentile(samples, 0.5), percentile(samples, 0.99)
    finally:
        echo.close()
        sink.terminate()
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    for name in streamed:
        row = results[name]
        print(f"{name:14s} {row['gbps']:6.2f} Gbit/s  {row['cpu_s_per_gib']:5.2f} CPU-s/GiB  "
              f"p50 {row['p50_us']:6.1f} µs  p99 {row['p99_us']:6.1f} µs  "
              f"{row['tunnels_per_s']:7.0f} tunnels/s ({row['concurrent_tunnels_per_s']:.0f} from 4 clients)  "
              + (f"{row['kib_per_idle_tunnel']:6.1f} KiB/idle tunnel" if "kib_per_idle_tunnel" in row else "")
              + (f"  {row['tls_suite']}" if "tls_suite" in row else ""))

    print("\nRatios (same run; throughput: median rounds, and each round's ratio in brackets):")
    swift = results.get("swift")
    if swift and "gbps" in swift:
        for base in ("plain", "socat-tls", "c-peer", "socat-pair", "swift-nosplice"):
            if base in results and "gbps" in results[base]:
                each = ", ".join(f"{a / b:.2f}" if b > 0 else "-" for a, b in zip(swift["gbps_rounds"], results[base]["gbps_rounds"]))
                ratio = swift["gbps"] / results[base]["gbps"] if results[base]["gbps"] > 0 else float("nan")
                print(f"  swift throughput / {base:14s} = {ratio:.2f}x  [{each}]")
        if "plain" in results and "p50_us" in results["plain"]:
            plain = results["plain"]["p50_us"]
            added = {n: r["p50_us"] - plain for n, r in results.items() if n != "plain" and "p50_us" in r}
            for n, a in added.items():
                print(f"  added p50 latency {n:14s} = {a:+7.1f} µs")
            if "socat-pair" in added and added["socat-pair"] > 0:
                rounds = lambda n: [a - p for a, p in zip(results[n]["p50_rounds_us"], results["plain"]["p50_rounds_us"])]
                for n in ("swift", "swift-nosplice", "c-peer"):
                    if n in added:
                        each = ", ".join(f"{a / b:.2f}" if b > 0 else "-" for a, b in zip(rounds(n), rounds("socat-pair")))
                        print(f"  {n} added p50 / socat-pair added p50 = {added[n] / added['socat-pair']:.2f}x  [{each}]")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
