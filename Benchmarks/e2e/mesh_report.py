#!/usr/bin/env python3
"""Turns the mesh benchmark's raw results (Benchmarks/e2e/mesh_bench.sh) into figures.

Every figure is printed with its ratio to the no-mesh and TLS-tunnel baselines of the same
run; latency percentiles come from HdrHistogram; the issue's targets are checked and the
miss is said with its size. Writes JSON (every number) and a PNG of the latency
distributions.

    mesh_report.py RAW_DIR [--json FILE] [--png FILE]
"""
import argparse
import json
import os
import sys

from hdrh.histogram import HdrHistogram

CONFIGS = ["nomesh", "relay", "tls", "mesh-tcp", "mesh-hbone"]
LABELS = {
    "nomesh": "no mesh (bridge)",
    "relay": "socat relay pair",
    "tls": "socat TLS 1.3 tunnel",
    "mesh-tcp": "mesh -> TCP dest",
    "mesh-hbone": "mesh, HBONE",
}
PERCENTILES = [50, 90, 99, 99.9]


def summary_fields(text):
    """'connections 123 failures 0 seconds 5.0 rate 24.6' -> dict."""
    words = text.split()
    return {words[i]: words[i + 1] for i in range(0, len(words) - 1, 2)}


def latency(path):
    histogram = HdrHistogram(1, 10_000_000_000, 3)  # 1 ns .. 10 s, 3 significant digits
    count = 0
    with open(path) as samples:
        for line in samples:
            histogram.record_value(int(line))
            count += 1
    figures = {f"p{p:g}_us": histogram.get_value_at_percentile(p) / 1000 for p in PERCENTILES}
    figures["max_us"] = histogram.get_max_value() / 1000
    figures["samples"] = count
    return figures, histogram


def load(raw):
    configs = {name: {"throughput": {}, "latency": {}} for name in CONFIGS}
    scale, histograms = {}, {}
    with open(os.path.join(raw, "runs.jsonl")) as runs:
        for line in runs:
            run = json.loads(line)
            c = configs[run["config"]]
            kind = run["kind"]
            if kind == "throughput":
                result = json.load(open(os.path.join(raw, run["file"])))
                received = result["end"]["sum_received"]
                gib = received["bytes"] / 2**30
                c["throughput"][run["streams"]] = {
                    "gbit_s": received["bits_per_second"] / 1e9,
                    "gib": gib,
                    "cpu_s_per_gib": run["cpu_seconds"] / gib if run["config"] != "nomesh" else None,
                }
            elif kind == "latency":
                figures, histogram = latency(os.path.join(raw, run["file"]))
                info = summary_fields(run["summary"])
                figures["achieved_rps"] = float(info["rate"])
                figures["failures"] = int(info["failures"])
                seconds = float(info["seconds"])
                figures["proxy_vcpu"] = run["cpu_seconds"] / seconds if run["config"] != "nomesh" else None
                if run.get("proxy_rss_kib"):
                    figures["proxy_rss_kib"] = run["proxy_rss_kib"]
                c["latency"][run["rate"]] = figures
                histograms[(run["config"], run["rate"])] = histogram
            elif kind == "connections":
                info = summary_fields(run["summary"])
                key = "connections_per_s" if run["pooled"] else "connections_per_s_unpooled"
                c[key] = float(info["rate"])
                c[key.replace("per_s", "failures")] = int(info["failures"])
            else:
                scale.setdefault(kind, []).append({k: v for k, v in run.items() if k not in ("config", "kind")})
    return configs, scale, histograms


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt(value, digits=2, suffix=""):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}{suffix}"


def report(configs, scale):
    out = {"configs": configs, "scale": scale, "ratios": {}, "targets": []}
    print("\nThroughput (iperf3, 1 and 4 streams) and CPU of the proxies per GiB moved")
    print(f"{'configuration':24} {'1 stream Gbit/s':>16} {'4 streams':>10} {'CPU-s/GiB':>10} {'× no mesh':>10} {'× TLS':>7} {'CPU × TLS':>10}")
    base, tls = configs["nomesh"]["throughput"], configs["tls"]["throughput"]
    for name in CONFIGS:
        t = configs[name]["throughput"]
        one, four = t.get(1, {}), t.get(4, {})
        print(f"{LABELS[name]:24} {fmt(one.get('gbit_s')):>16} {fmt(four.get('gbit_s')):>10} "
              f"{fmt(one.get('cpu_s_per_gib')):>10} {fmt(ratio(one.get('gbit_s'), base.get(1, {}).get('gbit_s')), 2, '×'):>10} "
              f"{fmt(ratio(one.get('gbit_s'), tls.get(1, {}).get('gbit_s')), 2, '×'):>7} "
              f"{fmt(ratio(one.get('cpu_s_per_gib'), tls.get(1, {}).get('cpu_s_per_gib')), 2, '×'):>10}")

    for rate in (100, 1000, 0):
        what = f"{rate} requests/s" if rate else "saturation (back to back)"
        print(f"\n1 KiB request/response latency, {what}, µs (HdrHistogram)")
        print(f"{'configuration':24} {'rps':>8} " + " ".join(f"{'p%g' % p:>8}" for p in PERCENTILES)
              + f" {'+p50':>8} {'+p99':>8} {'p50×nomesh':>10} {'p50×TLS':>8} {'proxy vCPU':>10} {'vCPU×TLS':>8}")
        nomesh = configs["nomesh"]["latency"].get(rate)
        tls_latency = configs["tls"]["latency"].get(rate, {})
        for name in CONFIGS:
            l = configs[name]["latency"].get(rate)
            if not l:
                continue
            added = {p: l[f"p{p:g}_us"] - nomesh[f"p{p:g}_us"] for p in (50, 99)} if nomesh else {}
            l["added_p50_us"], l["added_p99_us"] = added.get(50), added.get(99)
            l["p50_vs_nomesh"] = ratio(l["p50_us"], (nomesh or {}).get("p50_us"))
            l["p50_vs_tls"] = ratio(l["p50_us"], tls_latency.get("p50_us"))
            l["vcpu_vs_tls"] = ratio(l.get("proxy_vcpu"), tls_latency.get("proxy_vcpu"))
            print(f"{LABELS[name]:24} {l['achieved_rps']:>8,.0f} " + " ".join(f"{l['p%g_us' % p]:>8.1f}" for p in PERCENTILES)
                  + f" {fmt(added.get(50), 1):>8} {fmt(added.get(99), 1):>8} {fmt(l['p50_vs_nomesh'], 2, '×'):>10}"
                  f" {fmt(l['p50_vs_tls'], 2, '×'):>8} {fmt(l.get('proxy_vcpu'), 3):>10} {fmt(l['vcpu_vs_tls'], 2, '×'):>8}")

    print("\nNew connections per second (connect, 100 B each way, close; 4 client threads)")
    base_conn, tls_conn = configs["nomesh"].get("connections_per_s"), configs["tls"].get("connections_per_s")
    for name in CONFIGS:
        c = configs[name]
        c["connections_vs_nomesh"] = ratio(c.get("connections_per_s"), base_conn)
        c["connections_vs_tls"] = ratio(c.get("connections_per_s"), tls_conn)
        line = (f"{LABELS[name]:24} {fmt(c.get('connections_per_s'), 0):>8}  {fmt(c['connections_vs_nomesh'], 3, '× no mesh'):>14}"
                f"  {fmt(c['connections_vs_tls'], 1, '× TLS'):>10}")
        if "connections_per_s_unpooled" in c:
            line += f"   pool off (a full mTLS handshake each): {fmt(c['connections_per_s_unpooled'], 0)}"
        print(line)

    print("\nProxy memory (ztunnel RSS; one process serves both ends of every tunnel here)")
    def mib(kib):
        return f"{kib / 1024:6.1f} MiB"

    for entry in scale.get("rss", []):
        print(f"  {entry['state']:34} {entry['pods']:>4} pods   RSS {mib(entry['rss_kib'])} (heap {mib(entry['rss_anon_kib'])})   fds {entry['fds']}")
    fresh = (scale.get("rss-1000rps") or [None])[0]
    if fresh:
        info = summary_fields(fresh["summary"])
        fresh["proxy_vcpu"] = fresh["cpu_seconds"] / float(info["seconds"])
        print(f"  fresh ztunnel after 10 s at {float(info['rate']):,.0f} requests/s: RSS {mib(fresh['rss_kib'])} "
              f"(heap {mib(fresh['rss_anon_kib'])}), {fresh['proxy_vcpu']:.3f} vCPU for both ends")
    per_connection = None
    for entry in scale.get("open-connections", []):
        per_connection = (entry["rss_kib"] - entry["rss_before_kib"]) * 1024 / entry["connections"]
        out["ratios"]["bytes_per_open_connection"] = per_connection
        print(f"  {entry['connections']} open app connections ({entry['held']}): RSS {entry['rss_before_kib'] / 1024:.1f} -> "
              f"{entry['rss_kib'] / 1024:.1f} MiB, {per_connection / 1024:.1f} KiB per connection "
              f"(app socket + HBONE stream + upstream socket), fds {entry['fds_before']} -> {entry['fds']}")
    rps1000 = configs["mesh-hbone"]["latency"].get(1000, {})
    if "proxy_rss_kib" in rps1000:
        print(f"  at 1000 requests/s after the bulk runs (their pooled connections still open): RSS {mib(rps1000['proxy_rss_kib'])}")
    for entry in scale.get("zds-snapshot", []):
        print(f"  a restarted ztunnel took the ZDS snapshot of {entry['pods']} pods and was ready in {entry['seconds_to_ready']} s")

    # Targets of issue 8, each with the figure and the margin.
    hb, relay = configs["mesh-hbone"], configs["relay"]
    t1 = hb["throughput"].get(1, {}).get("gbit_s")
    targets = [
        ("HBONE 1-stream throughput vs no mesh", ratio(t1, base.get(1, {}).get("gbit_s")), ">=", 0.45),
        ("HBONE 1-stream throughput vs TLS tunnel", ratio(t1, tls.get(1, {}).get("gbit_s")), ">=", 1.5),
    ]
    for p in (50, 99):
        a, b = rps1000.get(f"added_p{p}_us"), relay["latency"].get(1000, {}).get(f"added_p{p}_us")
        targets.append((f"added p{p} at 1000 rps vs the relay pair's", ratio(a, b), "<=", 1.1))
    if rps1000.get("proxy_vcpu") is not None:
        targets.append(("vCPU per proxy at 1000 rps (both ends in one ztunnel, halved)", rps1000["proxy_vcpu"] / 2, "<=", 0.06))
    if fresh:
        targets.append(("proxy RSS under 1000 rps (fresh ztunnel), MB", fresh["rss_kib"] * 1024 / 1e6, "<=", 25))
    if per_connection is not None:
        targets.append(("KiB per idle open connection", per_connection / 1024, "<=", 16))
    targets.append(("new app connections/s through pooled tunnels", hb.get("connections_per_s"), ">=", 5000))
    print("\nTargets (issue 8)")
    for name, value, op, goal in targets:
        met = value is not None and (value >= goal if op == ">=" else value <= goal)
        margin = "" if value is None or met else f"  (missed by {abs(value / goal - 1) * 100:.0f} %)"
        print(f"  {'met ' if met else 'MISS'}  {name}: {fmt(value, 3)} (target {op} {goal}){margin}")
        out["targets"].append({"name": name, "value": value, "op": op, "target": goal, "met": met})
    out["ratios"]["hbone_vs_nomesh_throughput"] = targets[0][1]
    out["ratios"]["hbone_vs_tls_throughput"] = targets[1][1]
    return out


def plot(histograms, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    ticks = [50, 90, 99, 99.9, 99.99]
    for axis, rate, title in ((axes[0], 1000, "1 KiB request/response at 1000 rps"),
                              (axes[1], 0, "back to back (saturation)")):
        for name in CONFIGS:
            histogram = histograms.get((name, rate))
            if histogram is None:
                continue
            xs, ys = [], []
            for step in range(0, 400):
                p = 100 - 100 / (10 ** (step / 100))  # 0 .. 99.99 on a log scale of 1/(1-p)
                xs.append(1 / (1 - p / 100))
                ys.append(histogram.get_value_at_percentile(p) / 1000)
            axis.plot(xs, ys, label=LABELS[name])
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xticks([1 / (1 - t / 100) for t in ticks], [f"{t:g}%" for t in ticks])
        axis.set_xlabel("percentile")
        axis.set_ylabel("latency (µs, log scale)")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    fig.suptitle("swift-hbone one-box mesh: latency distributions (same run, same pod pair)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw")
    parser.add_argument("--json", help="default RAW/mesh-bench.json")
    parser.add_argument("--png", help="default RAW/mesh-bench.png")
    args = parser.parse_args()
    configs, scale, histograms = load(args.raw)
    out = report(configs, scale)
    json_path = args.json or os.path.join(args.raw, "mesh-bench.json")
    png_path = args.png or os.path.join(args.raw, "mesh-bench.png")
    with open(json_path, "w") as f:
        json.dump(out, f, indent=2, default=str)
    plot(histograms, png_path)
    print(f"\nwrote {json_path} and {png_path}")


if __name__ == "__main__":
    sys.exit(main())
