#!/usr/bin/env python3
"""How much of each relay's added latency is the cold start after an idle CPU halts: the
paced 1 KiB request/response run of tunnel_bench.py, in interleaved rounds, once on idle
CPUs and once with a SCHED_IDLE busy loop pinned to every CPU, which keeps the (virtual)
CPUs from halting between requests without taking CPU time from anything else (a
SCHED_IDLE task is preempted as soon as a normal task wakes up).

    python3 Benchmarks/e2e/awake_latency.py --hbone-tunnel BIN [--hbone-peer BIN]
        [--rounds 8] [--requests 500]

Prints, for both conditions, plain TCP's p50 and what each relay configuration adds to
it, with the ratios to the socat relay pair (Docs/profiles.md, "Idle CPUs and cold
starts"). A diagnostic: the busy loops burn the CPUs, so this is not how anything should
be deployed.
"""
import argparse
import contextlib
import importlib.util
import os
import subprocess
import time
import types

here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("tunnel_bench", os.path.join(here, "tunnel_bench.py"))
tb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tb)


@contextlib.contextmanager
def cpus_kept_awake(awake):
    """A SCHED_IDLE busy loop on each CPU for as long as the `with` lasts (if `awake`)."""
    loops = []
    try:
        if awake:
            for cpu in sorted(os.sched_getaffinity(0)):
                loops.append(subprocess.Popen(["chrt", "--idle", "0", "taskset", "-c", str(cpu),
                                               "sh", "-c", "while :; do :; done"]))
            time.sleep(0.2)
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--hbone-tunnel", required=True)
    parser.add_argument("--hbone-peer")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=500, help="per configuration, condition and round")
    args = parser.parse_args()
    if args.rounds < 1 or args.requests < 100:
        parser.error("--rounds must be at least 1 and --requests at least 100")
    configs = ["plain", "socat-pair", "socat-tls", "swift"] + (["c-peer"] if args.hbone_peer else [])
    rig = tb.EchoRig("hbone-awake-")
    relays = rig.relays
    try:
        bench = tb.Bench(types.SimpleNamespace(hbone_tunnel=args.hbone_tunnel, hbone_peer=args.hbone_peer), rig.work)
        for name in configs:
            relays[name] = tb.Relays(bench, name, rig.echo_port)
        samples = {(name, awake): [] for name in configs for awake in (False, True)}
        for number, order in enumerate(tb.round_orders(configs, args.rounds)):
            for awake in ((False, True) if number % 2 == 0 else (True, False)):
                with cpus_kept_awake(awake):
                    for name in order:
                        samples[(name, awake)] += tb.latency_samples(relays[name].entry, args.requests)
        for awake in (False, True):
            plain = tb.percentile(samples[("plain", awake)], 0.5)
            added = {name: tb.percentile(samples[(name, awake)], 0.5) - plain for name in configs}
            print(("CPUs kept awake" if awake else "CPUs idle      ") + f": plain p50 {plain:6.1f} µs; added p50 "
                  + ", ".join(f"{name} {added[name]:+.1f}" for name in configs[1:]) + " µs; / socat-pair: "
                  + ", ".join(f"{name} {added[name] / added['socat-pair']:.2f}x" for name in configs[2:]))
    finally:
        rig.close()


if __name__ == "__main__":
    main()
