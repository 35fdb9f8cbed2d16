#!/usr/bin/env python3
"""Where a paced 1 KiB request/response spends its time, hop by hop: every configuration's
relays run in turn under system-wide `perf record` of scheduler and syscall tracepoints
(no hardware counters needed), and each relay pass — a wake-up, the read that brings a
message and the write that passes it on — is split into

    wake->run    the wake-up until the relay is on a CPU (scheduling)
    run->read    on the CPU until the read returns (event loop, read syscall)
    read->write  the read returning until the write is entered: the user-space work a
                 message costs on the critical path (framing, TLS, the pipeline)
    write        the write syscall, which includes waking the next hop: on a CPU that is
                 busy, or (write+IPI) on an idle one, which takes an inter-processor
                 interrupt — expensive in a VM
    written->asleep  the write returning until the relay sleeps again: work left for after
                 the message is on its way, including time preempted by the next hop

Per configuration: medians over all its relays' passes, the requests' end-to-end p50 at
the load generator, and how often a relay was woken on an idle CPU. Configurations are
traced in interleaved rounds (as in tunnel_bench.py), their relays staying up throughout.
Tracing adds about a µs per event — more to a relay that makes more syscalls (socat) —
so compare the columns, not the absolute numbers with tunnel_bench.py.

    python3 Benchmarks/e2e/critical_path.py --hbone-tunnel BIN [--hbone-peer BIN]
        [--rounds 3] [--requests 1000] [--rate 1000] [--only swift,socat-pair]

Needs root and perf with tracefs (Docs/profiles.md, "The critical path of a paced request,
hop by hop").
"""
import argparse
import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import types
from collections import defaultdict

here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("tunnel_bench", os.path.join(here, "tunnel_bench.py"))
tb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tb)

EVENTS = ["sched:sched_switch", "sched:sched_wakeup", "ipi:ipi_send_cpu"] + [
    f"syscalls:sys_{edge}_{call}" for call in ("read", "write", "recvfrom", "sendto")
    for edge in ("enter", "exit")]
# The message sizes a relay reads and writes: the 1 KiB payload, and the same as one TLS
# record of an HTTP/2 DATA frame (9 + 1024 + 5 + 16 + 1 bytes) or of the payload alone.
MESSAGE_SIZES = {1024, 1055, 1046}
LINE = re.compile(r"^\s*(.*?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$")


def analyse(script, others, load_pid):
    """Per thread of any process but the load generator and `others` (the echo): the passes'
    segments in µs; and the load generator's round trips. Relays are found by what they do,
    since socat forks a process per connection."""
    woken = {}          # tid -> (time, woken by the idle task)
    on_cpu = {}         # tid -> time it last went on a CPU
    reading = {}        # tid -> pass waiting for its write
    writing = {}        # tid -> pass inside its write
    finished = {}       # tid -> pass written, the thread not yet asleep
    passes = defaultdict(list)
    trips, sent = [], None
    for line in script:
        m = LINE.match(line)
        if not m:
            continue
        comm, pid, tid, _, t, event, rest = m.groups()
        pid, tid, t = int(pid), int(tid), float(t) * 1e6
        if event == "ipi:ipi_send_cpu":
            if tid in writing:
                writing[tid]["ipi"] = True
        elif event == "sched:sched_wakeup":
            woken[int(re.search(r"pid=(\d+)", rest).group(1))] = (t, comm.startswith("swapper"))
        elif event == "sched:sched_switch":
            on_cpu[int(re.search(r"next_pid=(\d+)", rest).group(1))] = t
            if " prev_state=S " in rest:
                # Asleep again: the work a pass leaves for after its write is done; a read
                # that was not passed on (a WINDOW_UPDATE, say) starts no pass.
                if tid in finished:
                    finished.pop(tid)["asleep"] = t
                reading.pop(tid, None)
        elif pid == load_pid:
            if event in ("syscalls:sys_enter_write", "syscalls:sys_enter_sendto"):
                sent = t
            elif event in ("syscalls:sys_exit_read", "syscalls:sys_exit_recvfrom") and sent is not None:
                if int(rest, 16) > 0:
                    trips.append(t - sent)
                    sent = None
        elif pid not in others and not comm.startswith(("swapper", "perf")):
            if event in ("syscalls:sys_exit_read", "syscalls:sys_exit_recvfrom"):
                # The first read that returns bytes starts a pass (OpenSSL reads a record's
                # 5-byte header first); the first write of a message ends it.
                if 0 < int(rest, 16) < 1 << 63 and tid not in reading and tid not in writing:
                    wake, idle = woken.get(tid, (None, None))
                    reading[tid] = {"wake": wake, "run": on_cpu.get(tid), "read": t, "idle": idle}
            elif event in ("syscalls:sys_enter_write", "syscalls:sys_enter_sendto") and tid in reading:
                count = int(re.search(r"(?:count|len): (0x[0-9a-f]+)", rest).group(1), 16)
                if count in MESSAGE_SIZES:
                    p = reading.pop(tid)
                    p["write"] = t
                    writing[tid] = p
            elif event in ("syscalls:sys_exit_write", "syscalls:sys_exit_sendto") and tid in writing:
                p = writing.pop(tid)
                p["written"] = t
                passes[tid].append(p)
                finished[tid] = p
    return passes, trips


def median(values):
    values = [v for v in values if v is not None and v >= 0]
    return statistics.median(values) if values else float("nan")


def segments(ps):
    return {
        "wake->run": median([p["run"] - p["wake"] for p in ps if p["wake"] and p["run"] and p["run"] >= p["wake"]]),
        "run->read": median([p["read"] - p["run"] for p in ps if p["run"]]),
        "read->write": median([p["write"] - p["read"] for p in ps]),
        "write": median([p["written"] - p["write"] for p in ps if not p.get("ipi")]),
        "write+IPI": median([p["written"] - p["write"] for p in ps if p.get("ipi")]),
        "written->asleep": median([p["asleep"] - p["written"] for p in ps if "asleep" in p]),
        "idle-woken": sum(1 for p in ps if p["idle"]) / len(ps),
    }


def trace(rig, name, requests, rate):
    """Traces `rate` paced requests per second through `rig.relays[name]` for
    `requests / rate` seconds: analyse()'s result."""
    relays, meshload, work = rig.relays[name], rig.meshload, rig.work
    data = os.path.join(work, f"{name}.perf")
    events = ",".join(EVENTS)
    # Warm-up: connections set up and code paths run before tracing starts.
    subprocess.run([meshload, "rr", "127.0.0.1", str(relays.entry), str(rate), "1", os.devnull],
                   check=True, stdout=subprocess.DEVNULL)
    load = subprocess.Popen(["perf", "record", "-q", "-a", "-o", data, "-e", events, "--exclude-perf", "--",
                             meshload, "rr", "127.0.0.1", str(relays.entry), str(rate),
                             str(requests / rate), os.path.join(work, f"{name}.rr")],
                            stdout=subprocess.DEVNULL)
    load.wait()
    if load.returncode != 0:
        raise RuntimeError(f"perf record failed for {name}")
    script = subprocess.run(["perf", "script", "-i", data, "--ns", "-F", "comm,pid,tid,cpu,time,event,trace"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    load_pid = next(int(m.group(2)) for m in map(LINE.match, script)
                    if m and m.group(1) == "meshload" and int(m.group(2)) != rig.echo_pid
                    and m.group(6) == "syscalls:sys_enter_write")
    os.unlink(data)
    return analyse(script, {rig.echo_pid}, load_pid)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--hbone-tunnel", required=True)
    parser.add_argument("--hbone-peer")
    parser.add_argument("--rounds", type=int, default=3,
                        help="each configuration traced once per round, the order reversed in odd rounds")
    parser.add_argument("--requests", type=int, default=1000, help="per configuration and round")
    parser.add_argument("--rate", type=int, default=1000, help="requests per second")
    parser.add_argument("--only", help="comma-separated configurations")
    args = parser.parse_args()
    if not shutil.which("perf"):
        parser.error("perf is not installed")
    if args.rounds < 1 or args.requests < 100 or args.rate < 1:
        parser.error("--rounds must be at least 1, --requests at least 100, --rate at least 1")
    configs = ["socat-pair", "socat-tls", "swift"] + (["c-peer"] if args.hbone_peer else [])
    if args.only:
        configs = [c for c in args.only.split(",") if c]
    rig = tb.EchoRig("hbone-critical-path-")
    try:
        bench = tb.Bench(types.SimpleNamespace(hbone_tunnel=args.hbone_tunnel, hbone_peer=args.hbone_peer), rig.work)
        for name in configs:
            rig.relays[name] = tb.Relays(bench, name, rig.echo_port)
        passes = {name: [] for name in configs}
        trips = {name: [] for name in configs}
        for order in tb.round_orders(configs, args.rounds):
            for name in order:
                by_thread, round_trips = trace(rig, name, args.requests, args.rate)
                trips[name] += round_trips
                # Relays pass each request on at least once; other threads are not relays.
                for ps in by_thread.values():
                    if len(ps) >= len(round_trips) * 0.9:
                        passes[name] += ps
        print(f"median µs over {args.rounds} rounds of {args.requests} paced requests (perf tracing on):")
        for name in configs:
            ps = passes[name]
            if not ps:
                print(f"  {name:<11} no relay passes found")
                continue
            s = segments(ps)
            print(f"  {name:<11} p50 {median(trips[name]):6.1f} at the load generator; "
                  f"{len(ps) / max(len(trips[name]), 1):.1f} relay passes/request, each "
                  + ", ".join(f"{k} {v:.1f}" for k, v in s.items() if k != "idle-woken")
                  + f"; relay woken on an idle CPU {s['idle-woken']:.0%}")
    finally:
        rig.close()


if __name__ == "__main__":
    main()
