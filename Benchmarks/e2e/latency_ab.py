#!/usr/bin/env python3
"""Paced 1 KiB request/response latency of hbone-tunnel builds side by side, with the CPU
the relays spend per request: an A/B for changes too small for a full tunnel_bench.py run.

    python3 Benchmarks/e2e/latency_ab.py [--rounds 10] [--requests 500] LABEL=BINARY...

e.g. two builds of one commit, `RELEASE_EXCLUSIVITY=unchecked ./scripts/release-build` and
the default (Docs/profiles.md, "Exclusivity checks on the spliced path"). Plain TCP and a
socat relay pair run alongside; every configuration's relays stay up, and the rounds are
interleaved as in tunnel_bench.py. CPU is user and system time of both relays from /proc,
summed over all rounds (tick resolution, so keep rounds × requests in the thousands).
"""
import argparse
import importlib.util
import os
import types

here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("tunnel_bench", os.path.join(here, "tunnel_bench.py"))
tb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tb)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=500, help="per configuration and round")
    parser.add_argument("builds", nargs="+", help="LABEL=BINARY")
    args = parser.parse_args()
    builds = {}
    for build in args.builds:
        label, _, binary = build.partition("=")
        if not binary or label in ("plain", "socat-pair") or label in builds:
            parser.error(f"{build!r}: expected LABEL=BINARY with a new label other than plain and socat-pair")
        builds[label] = binary

    rig = tb.EchoRig("hbone-ab-")
    work, echo_port, relays = rig.work, rig.echo_port, rig.relays
    try:
        benches = {}
        for label, binary in builds.items():
            os.mkdir(os.path.join(work, label))
            benches[label] = tb.Bench(types.SimpleNamespace(hbone_tunnel=binary, hbone_peer=None),
                                      os.path.join(work, label))
        first = next(iter(benches.values()))
        relays["plain"] = tb.Relays(first, "plain", echo_port)
        relays["socat-pair"] = tb.Relays(first, "socat-pair", echo_port)
        for label, bench in benches.items():
            relays[label] = tb.Relays(bench, "swift", echo_port)
        names = list(relays)
        samples = {n: [] for n in names}
        rounds = {n: [] for n in names}
        cpu = {n: [0, 0, 0] for n in names}
        for order in tb.round_orders(names, args.rounds):
            for name in order:
                before = tb.cpu_ticks(relays[name].pids)
                got = tb.latency_samples(relays[name].entry, args.requests)
                after = tb.cpu_ticks(relays[name].pids)
                cpu[name][0] += after[0] - before[0]
                cpu[name][1] += after[1] - before[1]
                cpu[name][2] += args.requests + 100  # the warm-up requests cost CPU too
                samples[name] += got
                rounds[name].append(tb.percentile(got, 0.5))
        plain = tb.percentile(samples["plain"], 0.5)
        for name in names:
            p50 = tb.percentile(samples[name], 0.5)
            user, system = (cpu[name][i] / tb.CLOCK_TICKS * 1e6 / cpu[name][2] for i in (0, 1))
            print(f"{name:12s} p50 {p50:6.1f} µs, added {p50 - plain:+6.1f} µs; relays {user:5.1f} µs user, "
                  f"{system:5.1f} µs system per request; round p50s {[round(x) for x in rounds[name]]}")
    finally:
        rig.close()


if __name__ == "__main__":
    main()
