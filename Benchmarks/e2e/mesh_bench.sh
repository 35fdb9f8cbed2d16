# The mesh benchmark's measurements. Sourced by Examples/onebox/onebox.sh (ONEBOX_RUN) once
# the one-box mesh is up, so every onebox helper (add_pod, write_pods, start_ztunnel, …) is
# at hand; run it through ./scripts/bench-mesh, which builds release binaries first and
# turns the raw results into ratios, JSON and a plot (Benchmarks/e2e/mesh_report.py).
#
# One pod pair, bench-client (10.88.4.1, namespace client) and bench-server (10.88.4.2,
# namespace apps), created through the CNI chain like every onebox pod, goes through three
# phases, so each configuration uses the same pods, veths and bridge:
#
#   1. both out of the mesh (dataplane-mode=none):
#        nomesh   client -> server directly over the bridge
#        relay    a plain socat relay in each pod (the cost of two relays, no crypto)
#        tls      socat TCP->OpenSSL in the client pod, OpenSSL->TCP in the server pod
#                 (TLS 1.3, client certificate required: a TLS tunnel from stock tools)
#   2. the client enrolled, the server not (its workload protocol TCP):
#        mesh-tcp    captured by ztunnel, plain TCP to the destination
#   3. both enrolled:
#        mesh-hbone  captured, HBONE (mTLS HTTP/2 CONNECT) to the server pod's 15008
#        then: new connections with the pool off, RSS with 1000 open connections, 100 more
#        pods enrolled, and a ztunnel restart taking the ZDS snapshot of all of them.
#
# Inputs: MESH_BENCH_OUT (results directory), MESH_BENCH_LOAD (the meshload binary),
# MESH_BENCH_SECONDS (throughput seconds, default 8), MESH_BENCH_PODS (default 100).
# Results: $MESH_BENCH_OUT/runs.jsonl (one JSON object per measurement) plus the files it names.

out="$MESH_BENCH_OUT"; load="$MESH_BENCH_LOAD"
secs="${MESH_BENCH_SECONDS:-8}"; more_pods="${MESH_BENCH_PODS:-100}"
mkdir -p "$out"; : > "$out/runs.jsonl"
echo "== mesh benchmark (results in $out) =="

record() { # record <json object>
    echo "$1" >> "$out/runs.jsonl"
}
ticks() { # ticks <pid>...: user+system CPU ticks, children reaped included (socat forks per connection)
    local total=0 p
    for p in "$@"; do
        total=$((total + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat")))
    done
    echo "$total"
}
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
rss_anon() { awk '/^RssAnon/ {print $2}' "/proc/$1/status"; }   # heap and stacks, without the mapped binary and libraries
config_pods() { # pods ztunnel serves, per its /config_dump
    ip netns exec $node curl -s -m 2 http://127.0.0.1:15000/config_dump | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["pods"]))' 2>/dev/null || echo 0
}
fds() { ls "/proc/$1/fd" | wc -l; }

# The pod pair, out of the mesh to start with; the mesh config lists both (protocol TCP, as
# istiod reports a pod that is not captured).
for p in bench-client bench-server; do
    ns[$p]=$([ $p = bench-client ] && echo client || echo apps); sa[$p]=$p; mode[$p]=none
done
ip[bench-client]=10.88.4.1; uid[bench-client]=11111111-0000-4000-8000-400000000001
ip[bench-server]=10.88.4.2; uid[bench-server]=11111111-0000-4000-8000-400000000002
pods+=(bench-client bench-server)
workload_protocol() { # workload_protocol <pod> <HBONE|TCP>: what istiod would say of the pod
    local before; before=$(reloads)
    python3 - "$dir/mesh.yaml" "$1" "${ns[$1]}" "${ip[$1]}" "$2" <<'PY'
import os, re, sys
path, pod, namespace, address, protocol = sys.argv[1:]
text = open(path).read()
entry = ("- uid: cluster1//v1/Pod/%s/%s\n  name: %s\n  namespace: %s\n  serviceAccount: %s\n"
         "  trustDomain: cluster.local\n  workloadIps: [\"%s\"]\n  protocol: %s\n  node: onebox\n  services: {}\n"
         % (namespace, pod, pod, namespace, pod, address, protocol))
pattern = re.compile(r"- uid: cluster1//v1/Pod/%s/%s\n(  .*\n)*" % (namespace, pod))
text = pattern.sub(entry, text, 1) if pattern.search(text) else text.replace("\nworkloads:\n", "\nworkloads:\n" + entry, 1)
open(path + ".tmp", "w").write(text)
os.rename(path + ".tmp", path)
PY
    wait_reloads $((before + 1))
}
workload_protocol bench-client TCP
workload_protocol bench-server TCP
live+=(bench-client bench-server); write_pods
add_pod bench-client; add_pod bench-server
for p in bench-client bench-server; do
    # Many short connections in a row: reuse TIME_WAIT ports, use the whole port range, but
    # never ztunnel's in-pod ports: a phase-1 connection left on local port 15008 made the
    # later enrollment's bind of [::]:15008 fail with EADDRINUSE.
    ip netns exec "hbob-$p" sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="1024 65535" \
        net.ipv4.ip_local_reserved_ports="15001,15006,15008,15020,15021,15053"
done
client() { ip netns exec hbob-bench-client "$@"; }
server() { ip netns exec hbob-bench-server "$@"; }
server "$load" serve 9000 > "$out/echo.out" 2>&1 & pids+=($!)
server iperf3 -s -p 5201 > /dev/null 2>&1 & pids+=($!)
for _ in $(seq 100); do grep -q listening "$out/echo.out" && break; sleep 0.05; done

# Stock-tool baselines inside the pods: socat with -b131072 (its 8 KiB default halves its
# throughput, perf.md §2.3) and TCP_NODELAY, as in Benchmarks/e2e/tunnel_bench.py.
"$bin/hbone-tunnel" issue --dir "$dir/ca" --identity spiffe://cluster.local/ns/apps/sa/bench-server --out "$out/tls-server" >/dev/null
"$bin/hbone-tunnel" issue --dir "$dir/ca" --identity spiffe://cluster.local/ns/client/sa/bench-client --out "$out/tls-client" >/dev/null
tls="openssl-min-proto-version=TLS1.3,cafile=$dir/ca/root-cert.pem"
relay_pids=(); tls_pids=()
socat_in() { # socat_in <pod> <pid array> <socat addresses...>
    local pod=$1 var=$2; shift 2
    ip netns exec "hbob-$pod" socat -b131072 "$@" 2>/dev/null & pids+=($!)
    eval "$var+=($!)"
}
for pair in "5201 7201 25201 7443 15201" "9000 7900 29000 7444 19000"; do
    read -r app relay_server relay_client tls_server tls_client <<< "$pair"
    socat_in bench-server relay_pids TCP-LISTEN:$relay_server,reuseaddr,fork TCP:127.0.0.1:$app,nodelay
    socat_in bench-client relay_pids TCP-LISTEN:$relay_client,bind=127.0.0.1,reuseaddr,fork TCP:10.88.4.2:$relay_server,nodelay
    socat_in bench-server tls_pids "OPENSSL-LISTEN:$tls_server,reuseaddr,fork,cert=$out/tls-server.pem,key=$out/tls-server.key,verify=1,$tls" TCP:127.0.0.1:$app,nodelay
    # The client end cannot check a URI-only SAN against a host name (verify=0); the server end
    # requires and verifies the client's certificate.
    socat_in bench-client tls_pids TCP-LISTEN:$tls_client,bind=127.0.0.1,reuseaddr,fork "OPENSSL:10.88.4.2:$tls_server,cert=$out/tls-client.pem,key=$out/tls-client.key,verify=0,no-sni=1,nodelay,$tls"
done
sleep 0.5

measure() { # measure <config> <host> <iperf3 port> <echo port> <pid>...: every figure of one configuration
    local config=$1 host=$2 tport=$3 eport=$4; shift 4
    local procs=("$@") t0 t1 streams rate seconds
    echo "  $config"
    for streams in 1 4; do
        t0=$(ticks "${procs[@]}")
        client iperf3 -c "$host" -p "$tport" -t "$secs" -P $streams -J > "$out/iperf-$config-$streams.json"
        sleep 0.3   # socat's children exit and are reaped
        t1=$(ticks "${procs[@]}")
        record "{\"config\":\"$config\",\"kind\":\"throughput\",\"streams\":$streams,\"file\":\"iperf-$config-$streams.json\",\"cpu_seconds\":$(python3 -c "print(($t1 - $t0) / $(getconf CLK_TCK))")}"
    done
    for rate in 100 1000 0; do
        seconds=$([ $rate = 1000 ] && echo 10 || echo 5)
        t0=$(ticks "${procs[@]}")
        client "$load" rr "$host" "$eport" $rate $seconds "$out/rr-$config-$rate.txt" > "$out/rr-$config-$rate.out"
        t1=$(ticks "${procs[@]}")
        local rss_now=0
        case $config in mesh-*) rss_now=$(rss "$ztunnel_pid") ;; esac
        record "{\"config\":\"$config\",\"kind\":\"latency\",\"rate\":$rate,\"file\":\"rr-$config-$rate.txt\",\"summary\":\"$(cat "$out/rr-$config-$rate.out")\",\"cpu_seconds\":$(python3 -c "print(($t1 - $t0) / $(getconf CLK_TCK))"),\"proxy_rss_kib\":$rss_now}"
    done
    client "$load" conn "$host" "$eport" 5 4 > "$out/conn-$config.out"
    record "{\"config\":\"$config\",\"kind\":\"connections\",\"pooled\":true,\"summary\":\"$(cat "$out/conn-$config.out")\"}"
    sleep 2   # TIME_WAIT and socat children settle before the next configuration
}

rss_idle=$(rss "$ztunnel_pid")
record "{\"config\":\"mesh-hbone\",\"kind\":\"rss\",\"state\":\"idle\",\"pods\":$(config_pods),\"rss_kib\":$rss_idle,\"rss_anon_kib\":$(rss_anon "$ztunnel_pid"),\"fds\":$(fds "$ztunnel_pid")}"

echo "== phase 1: out of the mesh =="
measure nomesh 10.88.4.2 5201 9000
measure relay 127.0.0.1 25201 29000 "${relay_pids[@]}"
measure tls 127.0.0.1 15201 19000 "${tls_pids[@]}"

enroll() { # enroll <pod>: the label goes, the namespace's ambient label applies; waits until served
    local before; before=$(started "${ns[$1]}/$1")
    workload_protocol "$1" HBONE
    unset "mode[$1]"; write_pods
    for _ in $(seq 200); do [ "$(started "${ns[$1]}/$1")" -gt "$before" ] && break; sleep 0.05; done
    wait_certificates
}
echo "== phase 2: the client in the mesh, the destination outside (plain TCP from ztunnel) =="
enroll bench-client
measure mesh-tcp 10.88.4.2 5201 9000 "$ztunnel_pid"

echo "== phase 3: both in the mesh (HBONE) =="
enroll bench-server
restart_ztunnel() { # restart_ztunnel [flags...]: a fresh ztunnel with these flags; waits until it serves every pod
    local before; before=$(snapshots)
    stop_process "$ztunnel_pid"
    ztunnel_args=("$@")
    start_ztunnel "$dir/ztunnel.access.log"
    wait_snapshots $((before + 1)); wait_ready; wait_certificates
}
# Memory and CPU at 1000 requests/s on a fresh ztunnel (ztunnel's published figure is for
# that load alone; after the bulk runs the pooled connections keep their grown buffers).
restart_ztunnel
sleep 1
record "{\"config\":\"mesh-hbone\",\"kind\":\"rss\",\"state\":\"fresh, both pods enrolled\",\"pods\":$(config_pods),\"rss_kib\":$(rss "$ztunnel_pid"),\"rss_anon_kib\":$(rss_anon "$ztunnel_pid"),\"fds\":$(fds "$ztunnel_pid")}"
t0=$(ticks "$ztunnel_pid")
client "$load" rr 10.88.4.2 9000 1000 10 "$out/rr-fresh-1000.txt" > "$out/rr-fresh-1000.out"
t1=$(ticks "$ztunnel_pid")
record "{\"config\":\"mesh-hbone\",\"kind\":\"rss-1000rps\",\"summary\":\"$(cat "$out/rr-fresh-1000.out")\",\"cpu_seconds\":$(python3 -c "print(($t1 - $t0) / $(getconf CLK_TCK))"),\"rss_kib\":$(rss "$ztunnel_pid"),\"rss_anon_kib\":$(rss_anon "$ztunnel_pid")}"
measure mesh-hbone 10.88.4.2 5201 9000 "$ztunnel_pid"

echo "  1000 open connections"
sleep 3
before_rss=$(rss "$ztunnel_pid"); before_fds=$(fds "$ztunnel_pid")
coproc HOLD { ip netns exec hbob-bench-client "$load" hold 10.88.4.2 9000 1000; }
read -r held <&"${HOLD[0]}" || held="hold failed"
sleep 2
record "{\"config\":\"mesh-hbone\",\"kind\":\"open-connections\",\"connections\":1000,\"held\":\"$held\",\"rss_before_kib\":$before_rss,\"rss_kib\":$(rss "$ztunnel_pid"),\"fds_before\":$before_fds,\"fds\":$(fds "$ztunnel_pid")}"
hold_pid=$HOLD_PID; eval "exec ${HOLD[1]}>&-"; wait "$hold_pid" 2>/dev/null || true

echo "  new connections with the pool off (every tunnel a full mTLS handshake)"
restart_ztunnel --pool-max-streams-per-connection 1 --pool-unused-release-timeout 0
sleep 1
client "$load" conn 10.88.4.2 9000 5 4 > "$out/conn-mesh-hbone-unpooled.out"
record "{\"config\":\"mesh-hbone\",\"kind\":\"connections\",\"pooled\":false,\"summary\":\"$(cat "$out/conn-mesh-hbone-unpooled.out")\"}"
restart_ztunnel

echo "  $more_pods more pods enrolled"
python3 - "$dir/mesh.yaml" "$more_pods" <<'PY'
import os, sys
path, n = sys.argv[1], int(sys.argv[2])
added = "".join(
    "- uid: cluster1//v1/Pod/client/scale-%d\n  name: scale-%d\n  namespace: client\n  serviceAccount: curl-allow\n"
    "  trustDomain: cluster.local\n  workloadIps: [\"10.88.5.%d\"]\n  protocol: HBONE\n  node: onebox\n  services: {}\n" % (i, i, i)
    for i in range(1, n + 1))
text = open(path).read().replace("\nworkloads:\n", "\nworkloads:\n" + added, 1)
open(path + ".tmp", "w").write(text)
os.rename(path + ".tmp", path)
PY
for i in $(seq 1 "$more_pods"); do
    p="scale-$i"; ip[$p]="10.88.5.$i"; ns[$p]=client; sa[$p]=curl-allow; uid[$p]=$(printf '11111111-0000-4000-8000-5000000%05d' "$i")
    pods+=("$p"); live+=("$p")
done
sleep 1; write_pods
for i in $(seq 1 "$more_pods"); do add_pod "scale-$i"; done
want=$((3 + extra + 2 + more_pods))   # curl-allow, curl-deny, httpbin, the extra pods, the pair, these
for _ in $(seq 200); do [ "$(config_pods)" -ge "$want" ] && break; sleep 0.1; done
wait_certificates; sleep 2
record "{\"config\":\"mesh-hbone\",\"kind\":\"rss\",\"state\":\"$more_pods more pods enrolled\",\"pods\":$(config_pods),\"rss_kib\":$(rss "$ztunnel_pid"),\"rss_anon_kib\":$(rss_anon "$ztunnel_pid"),\"fds\":$(fds "$ztunnel_pid")}"

echo "  a restarted ztunnel takes the ZDS snapshot of every pod"
before=$(snapshots)
stop_process "$ztunnel_pid"
start=$(date +%s.%N)
start_ztunnel "$dir/ztunnel.access.log"
wait_snapshots $((before + 1)); wait_ready
for _ in $(seq 300); do [ "$(config_pods)" -ge "$want" ] && break; sleep 0.05; done
took=$(python3 -c "print(round($(date +%s.%N) - $start, 2))")
record "{\"config\":\"mesh-hbone\",\"kind\":\"zds-snapshot\",\"pods\":$(config_pods),\"seconds_to_ready\":$took}"
echo "  done: $(wc -l < "$out/runs.jsonl") measurements"
