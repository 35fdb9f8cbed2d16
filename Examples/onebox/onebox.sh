#!/usr/bin/env bash
# The one-box ambient mesh: a node and pods as network namespaces on this machine.
#
#  node netns   cni-agent (node agent) + ztunnel (node proxy) + the mesh CA (istiod's gRPC
#               CA endpoint on 127.0.0.1:15012), bridge cni-ob0 10.88.0.1
#  pods         curl-allow 10.88.0.10, curl-deny 10.88.0.11 (namespace client)
#               httpbin    10.88.0.20 behind VIP 10.96.0.20:8000 -> 80 (namespace apps)
#               tcp-echo   10.88.0.30 (namespace legacy, outside the mesh)
#               client-1…N 10.88.1.N (namespace client, ONEBOX_PODS=N, default 2)
#
# Pods are created by the real CNI chain a runtime would run (loopback, bridge +
# host-local, istio-cni last); the agent captures them and hands them to ztunnel over ZDS;
# ztunnel serves each pod from inside its namespace. Then the scenarios run. Everything is
# torn down on exit, Ctrl-C or failure. Needs root.
#
# Environment: ONEBOX_PODS (extra client pods, default 2, at most 200), ONEBOX_DIR (state and
# logs, default /tmp/swift-hbone-onebox), ONEBOX_BIN (prebuilt binaries instead of `swift
# build`), ONEBOX_CHURN_SECONDS (after the scenarios, create/use/delete pods for this long and
# compare the proxy's and the agent's fds and RSS before and after), ONEBOX_HOLD (seconds to
# keep the mesh up before the zc views), ONEBOX_RUN (a script to source once the mesh is up,
# instead of the scenarios).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ]; then echo "the one-box mesh needs root (network namespaces, iptables)"; exit 1; fi
dir="${ONEBOX_DIR:-/tmp/swift-hbone-onebox}"
if [ -n "${ONEBOX_BIN:-}" ]; then
    bin="$ONEBOX_BIN"   # prebuilt binaries (the test suite passes its own build)
else
    for product in istio-cni cni-agent ztunnel hbone-tunnel; do swift build --product $product >/dev/null; done
    bin="$(swift build --show-bin-path)"
fi
node=hbob-node
# tcp-echo is outside the mesh: namespace legacy is not labelled for ambient.
pods=(curl-allow curl-deny httpbin tcp-echo)
declare -A ip=([curl-allow]=10.88.0.10 [curl-deny]=10.88.0.11 [httpbin]=10.88.0.20 [tcp-echo]=10.88.0.30)
declare -A ns=([curl-allow]=client [curl-deny]=client [httpbin]=apps [tcp-echo]=legacy)
declare -A sa=([curl-allow]=curl-allow [curl-deny]=curl-deny [httpbin]=httpbin [tcp-echo]=default)
declare -A uid=([curl-allow]=11111111-0000-4000-8000-000000000010 [curl-deny]=11111111-0000-4000-8000-000000000011 [httpbin]=11111111-0000-4000-8000-000000000020 [tcp-echo]=11111111-0000-4000-8000-000000000030)
declare -A mode=()   # per-pod istio.io/dataplane-mode label (unset: the namespace decides)
extra="${ONEBOX_PODS:-2}"
if ! [[ "$extra" =~ ^[0-9]+$ ]] || [ "$extra" -gt 200 ]; then echo "ONEBOX_PODS must be 0..200, not $extra"; exit 1; fi
for i in $(seq 1 "$extra"); do
    p="client-$i"; pods+=("$p"); ip[$p]="10.88.1.$i"; ns[$p]=client; sa[$p]=curl-allow
    uid[$p]=$(printf '11111111-0000-4000-8000-1000000%05d' "$i")
done
# Pods that churn creates and deletes (listed in the mesh config from the start). Sixteen,
# so an address comes back only after the bridge's neighbours have forgotten its old MAC.
churners=(churn-{a..p})
for i in $(seq 0 15); do
    p="${churners[$i]}"; ip[$p]="10.88.2.$((i + 1))"; ns[$p]=client; sa[$p]=curl-allow
    uid[$p]=$(printf '11111111-0000-4000-8000-2000000%05d' "$i")
done
# A pod with an identity of its own, created while the CA is down (scenario 12).
ip[newcomer]=10.88.3.9; ns[newcomer]=client; sa[newcomer]=newcomer; uid[newcomer]=11111111-0000-4000-8000-200000000009
# A pod that the mesh config does not list until scenario 13 adds it.
ip[stranger]=10.88.3.10; ns[stranger]=client; sa[stranger]=stranger; uid[stranger]=11111111-0000-4000-8000-200000000010
live=("${pods[@]}")   # pods that exist right now (pods.yaml lists them)
pids=()
cleanup() {
    local status=$?
    if [ "$status" != 0 ] && [ -d "$dir" ]; then   # a failed run: the logs' tails, for CI
        for log in ztunnel.log agent.log ca.log ztunnel.access.log; do
            [ -f "$dir/$log" ] && { echo "--- $log (tail)"; tail -25 "$dir/$log"; } >&2
        done
    fi
    # SIGTERM first (the agent and ztunnel shut down gracefully), then SIGKILL whatever is
    # still running in our namespaces (a signal mask inherited from a parent can leave a
    # child deaf to SIGTERM), then the namespaces.
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 30); do
        alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break; sleep 0.1
    done
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for n in "${pods[@]/#/hbob-}" "${churners[@]/#/hbob-}" hbob-newcomer hbob-stranger $node; do
        ip netns pids "$n" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
        ip netns del "$n" 2>/dev/null || true
    done
}
trap cleanup EXIT
cleanup
rm -rf "$dir"; mkdir -p "$dir/bin" "$dir/run" "$dir/zds"
for p in loopback bridge host-local; do ln -s "/usr/lib/cni/$p" "$dir/bin/$p"; done
ln -s "$bin/istio-cni" "$dir/bin/istio-cni"
ip netns add $node; ip -n $node link set lo up

echo "== the mesh CA (Istio's cacerts layout) =="
"$bin/hbone-tunnel" ca --dir "$dir/ca" >/dev/null && ls "$dir/ca" | sed 's/^/  /'

# The pod metadata the agent follows (what the Kubernetes API would say), written atomically.
write_pods() {
    {
        printf 'namespaces:\n  - name: client\n    labels: {istio.io/dataplane-mode: ambient}\n'
        printf '  - name: apps\n    labels: {istio.io/dataplane-mode: ambient}\n  - name: legacy\npods:\n'
        for p in "${live[@]}"; do
            labels=""; [ -n "${mode[$p]:-}" ] && labels=", labels: {istio.io/dataplane-mode: ${mode[$p]}}"
            printf '  - {name: %s, namespace: %s, uid: %s, serviceAccount: %s, netns: /var/run/netns/hbob-%s, ips: [%s]%s}\n' \
                "$p" "${ns[$p]}" "${uid[$p]}" "${sa[$p]}" "$p" "${ip[$p]}" "$labels"
        done
    } > "$dir/run/pods.yaml.tmp"
    mv "$dir/run/pods.yaml.tmp" "$dir/run/pods.yaml"
}
write_pods
# The mesh config: the checked-in one plus a workload for every extra and churn pod.
python3 - Examples/onebox/mesh.yaml "$dir/mesh.yaml" "$extra" <<'PY'
import sys
text, n = open(sys.argv[1]).read(), int(sys.argv[3])
pods = [("client-%d" % i, "10.88.1.%d" % i) for i in range(1, n + 1)]
pods += [("churn-" + c, "10.88.2.%d" % (i + 1)) for i, c in enumerate("abcdefghijklmnop")]
pods = [(p, a, "curl-allow") for p, a in pods] + [("newcomer", "10.88.3.9", "newcomer")]
added = "".join(
    "- uid: cluster1//v1/Pod/client/%s\n  name: %s\n  namespace: client\n  serviceAccount: %s\n"
    "  trustDomain: cluster.local\n  workloadIps: [\"%s\"]\n  protocol: HBONE\n  node: onebox\n  services: {}\n" % (p, p, s, a)
    for p, a, s in pods)
open(sys.argv[2], "w").write(text.replace("\nworkloads:\n", "\nworkloads:\n" + added, 1))
PY

echo "== node agent and node proxy (in the node namespace) =="
agent_pid=; ztunnel_pid=
ztunnel_args=()   # extra ztunnel flags for the next start_ztunnel
start_agent() {
    ip netns exec $node "$bin/cni-agent" run --run-dir "$dir/run" --zds-socket "$dir/zds/ztunnel.sock" >> "$dir/agent.log" 2>&1 &
    agent_pid=$!; pids+=($agent_pid)
    for _ in $(seq 100); do [ -S "$dir/zds/ztunnel.sock" ] && [ -S "$dir/run/pluginevent.sock" ] && break; sleep 0.1; done
}
ca_pid=
start_ca() { # istiod's CA endpoint: gRPC CreateCertificate over TLS on 127.0.0.1:15012
    ip netns exec $node "$bin/hbone-tunnel" ca-server --dir "$dir/ca" --host 127.0.0.1 --port 15012 --tokens "$dir/ca-tokens" \
        > "$dir/ca.out" 2>> "$dir/ca.log" &
    ca_pid=$!; pids+=($ca_pid)
    for _ in $(seq 100); do grep -q listening "$dir/ca.out" 2>/dev/null && break; sleep 0.1; done
}
start_ztunnel() { # start_ztunnel <access log file> [text|json]
    ip netns exec $node "$bin/ztunnel" --config "$dir/mesh.yaml" --zds-socket "$dir/zds/ztunnel.sock" \
        --ca-address 127.0.0.1:15012 --ca-root "$dir/ca/root-cert.pem" --ca-token "$dir/ztunnel-token" \
        --log-format "${2:-text}" "${ztunnel_args[@]}" >> "$1" 2>> "$dir/ztunnel.log" &
    ztunnel_pid=$!; pids+=($ztunnel_pid)
}
snapshots() { grep -c "ZDS snapshot received" "$dir/ztunnel.log" 2>/dev/null || true; }
wait_snapshots() { # wait_snapshots <count>: until ztunnel has taken that many ZDS snapshots
    for _ in $(seq 150); do [ "$(snapshots)" -ge "$1" ] && return; sleep 0.1; done
}
stop_process() { # stop_process <pid>: SIGTERM, then wait for it to exit
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
}
# ztunnel authenticates to the CA with its own token (Istio: its service-account JWT) and
# may ask for its pods' identities (CA_TRUSTED_NODE_ACCOUNTS: istio-system/ztunnel).
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/ztunnel-token"
echo "$(cat "$dir/ztunnel-token") spiffe://cluster.local/ns/istio-system/sa/ztunnel" > "$dir/ca-tokens"
start_ca
start_agent
start_ztunnel "$dir/ztunnel.access.log"
wait_snapshots 1
echo "  CA: $(cat "$dir/ca.out") (gRPC); agent: $(grep -q 'agent ready' "$dir/agent.log" && echo ready); ztunnel: connected over ZDS"

echo "== pods through the CNI chain (loopback, bridge + host-local, istio-cni) =="
cni() { # cni <pod> <plugin> <command> <json>
    ip netns exec $node env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin CNI_COMMAND="$3" CNI_CONTAINERID="c-$1" \
        CNI_NETNS="/var/run/netns/hbob-$1" CNI_IFNAME=eth0 CNI_PATH="$dir/bin" \
        CNI_ARGS="IgnoreUnknown=1;IP=${ip[$1]};K8S_POD_NAMESPACE=${ns[$1]};K8S_POD_NAME=$1" "$dir/bin/$2" <<< "$4"
}
bridge='{"cniVersion":"1.0.0","name":"onebox","type":"bridge","bridge":"cni-ob0","isGateway":true,"isDefaultGateway":true,"ipam":{"type":"host-local","subnet":"10.88.0.0/16","dataDir":"'"$dir"'/ipam"}}'
istio_conf() { echo '{"cniVersion":"1.0.0","name":"onebox","type":"istio-cni","cni_agent_run_dir":"'"$dir/run"'","ambient_enabled":true,"exclude_namespaces":["kube-system"]'"$1"'}'; }
add_pod() { # add_pod <pod>: what a runtime does for a new sandbox (the pod is already in pods.yaml)
    ip netns add "hbob-$1"
    cni "$1" loopback ADD '{"cniVersion":"1.0.0","name":"lo","type":"loopback"}' >/dev/null
    result=$(cni "$1" bridge ADD "$bridge")
    if ! cni "$1" istio-cni ADD "$(istio_conf ',"prevResult":'"$result")" > "$dir/cni-$1.out" 2> "$dir/cni-$1.log"; then
        echo "  $1: istio-cni ADD failed: $(cat "$dir/cni-$1.out")"; exit 1
    fi
}
del_pod() { # del_pod <pod>: the runtime tears the sandbox down (chain in reverse), then the netns
    # CNI: DEL must succeed even when the netns is already gone.
    if ! { cni "$1" istio-cni DEL "$(istio_conf '')" && cni "$1" bridge DEL "$bridge" &&
           cni "$1" loopback DEL '{"cniVersion":"1.0.0","name":"lo","type":"loopback"}'; } > "$dir/cni-$1.del" 2>&1; then
        echo "  $1: CNI DEL failed: $(cat "$dir/cni-$1.del")"; exit 1
    fi
    [ ! -e "/var/run/netns/hbob-$1" ] || ip netns del "hbob-$1"
}
started() { grep -c "pod=$1 .*pod proxy started" "$dir/ztunnel.log" || true; }
stopped() { grep -c "pod=$1 .*pod proxy stopped" "$dir/ztunnel.log" || true; }
for p in "${pods[@]}"; do
    add_pod "$p"
    case "$p" in client-*) [ "$p" = client-1 ] || continue ;; esac   # one line for the extra pods
    echo "  $p: ${ip[$p]} (${ns[$p]}/${sa[$p]}) in-pod redirect rules: $(ip netns exec "hbob-$p" iptables-save | grep -c 'ISTIO_'), proxy started: $(started "${ns[$p]}/$p")"
done
if [ "$extra" -gt 1 ]; then echo "  … and client-2 … client-$extra (10.88.1.2 … 10.88.1.$extra)"; fi
for _ in $(seq 100); do [ "$(grep -c 'pod proxy started' "$dir/ztunnel.log")" -ge $((3 + extra)) ] && break; sleep 0.1; done
echo "  pods served by ztunnel: $(grep -c 'pod proxy started' "$dir/ztunnel.log") of $((3 + extra)) ambient pods"
# ztunnel prefetches every local pod's certificate from the CA; wait until all are issued
# (on a loaded machine a first request could otherwise spend its time budget waiting).
certificates() {
    ip netns exec $node curl -s -m 2 http://127.0.0.1:15000/config_dump | python3 -c 'import json,sys
c = json.load(sys.stdin)["certificates"]; print("%d/%d" % (sum(1 for x in c if x["state"] == "Available"), len(c)))' 2>/dev/null || echo "0/?"
}
wait_certificates() { for _ in $(seq 300); do n=$(certificates); [ "${n%/*}" = "${n#*/}" ] && return; sleep 0.1; done; }
wait_certificates
echo "  certificates issued by the CA: $(certificates) available"
listening() { # listening <netns> <port>: waits (up to 10 s) until something listens there
    for _ in $(seq 200); do [ -n "$(ip netns exec "$1" ss -Hltn "sport = :$2")" ] && return; sleep 0.05; done
    echo "  (nothing listens on port $2 in $1 after 10 s)"
}
ip netns exec hbob-httpbin python3 -m http.server 80 --bind 0.0.0.0 > "$dir/httpbin.log" 2>&1 &
pids+=($!)
ip netns exec hbob-tcp-echo socat TCP-LISTEN:9000,fork,reuseaddr EXEC:cat > /dev/null 2>&1 &
pids+=($!)
listening hbob-httpbin 80; listening hbob-tcp-echo 9000

reloads() { grep -c 'config reloaded' "$dir/ztunnel.log" || true; }
wait_reloads() { # wait_reloads <count>: until ztunnel has reloaded its config that many times
    for _ in $(seq 100); do [ "$(reloads)" -ge "$1" ] && return; sleep 0.1; done
}
ready() { ip netns exec $node curl -s -o /dev/null -m 2 -w '%{http_code}' http://127.0.0.1:15021/healthz/ready || true; }
wait_ready() { for _ in $(seq 100); do [ "$(ready)" = 200 ] && return; sleep 0.1; done; }
forget() { # forget <pod>: the pod is gone from the API (pods.yaml)
    local kept=() q; for q in "${live[@]}"; do [ "$q" = "$1" ] || kept+=("$q"); done; live=("${kept[@]}"); write_pods
}
create() { # create <pod>: in the API, then the sandbox through the CNI chain; waits until served
    local before; before=$(started "${ns[$1]}/$1")
    live+=("$1"); write_pods; add_pod "$1"
    for _ in $(seq 100); do [ "$(started "${ns[$1]}/$1")" -gt "$before" ] && return; sleep 0.05; done
}
delete() { # delete <pod>: gone from the API and the sandbox torn down; waits until unserved
    local before; before=$(stopped "${ns[$1]}/$1")
    forget "$1"; del_pod "$1"
    for _ in $(seq 100); do [ "$(stopped "${ns[$1]}/$1")" -gt "$before" ] && return; sleep 0.05; done
}

# ONEBOX_RUN: source that script now, with the mesh up and every helper above defined,
# instead of the scenarios (Benchmarks/e2e/mesh_bench.sh runs the mesh benchmark this way).
if [ -n "${ONEBOX_RUN:-}" ]; then
    source "$ONEBOX_RUN"
    exit 0
fi

request() { # request <pod> <url> -> prints "exit=<curl exit> status=<http status>"
    set +e
    status=$(ip netns exec "hbob-$1" curl -s -o /dev/null -m 10 -w '%{http_code}' "$2")
    code=$?
    set -e
    echo "exit=$code status=$status"
}
# Sniffs the bridge in the node namespace while a command runs: which TCP ports carried
# payload between pods, and whether the HTTP request was ever visible in clear.
sniff() {
    ip netns exec $node python3 - "$@" <<'PY'
import socket, subprocess, sys, threading
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
s.settimeout(0.2)  # every interface of the node namespace: the pods' veth ends
ports, clear, stop = set(), False, False
def capture():
    global clear
    while not stop:
        try: frame = s.recv(65535)
        except socket.timeout: continue
        if frame[12:14] != b"\x08\x00" or frame[23] != 6: continue
        ihl = (frame[14] & 0x0f) * 4; tcp = 14 + ihl
        src, dst = int.from_bytes(frame[tcp:tcp+2], "big"), int.from_bytes(frame[tcp+2:tcp+4], "big")
        payload = frame[tcp + (frame[tcp+12] >> 4) * 4:]
        if payload: ports.add(min(src, dst))
        if b"GET / HTTP" in payload: clear = True
t = threading.Thread(target=capture); t.start()
subprocess.run(sys.argv[1:], capture_output=True)
stop = True; t.join()
print("  on the wire (node side of the veths): TCP ports with payload %s; plaintext HTTP seen: %s" % (sorted(ports), clear))
PY
}
echo
echo "== 1. curl-allow -> httpbin VIP 10.96.0.20:8000: HBONE (mTLS + HTTP/2 CONNECT) =="
echo "  $(request curl-allow http://10.96.0.20:8000/)"
sniff ip netns exec hbob-curl-allow curl -s -o /dev/null -m 5 http://10.96.0.20:8000/
echo "== 2. curl-deny -> the same: the ALLOW policy names only curl-allow =="
echo "  $(request curl-deny http://10.96.0.20:8000/)   (curl exit 56: connection reset)"
sleep 0.5
echo "  httpbin's node proxy logged (the 401 with both SPIFFE identities):"
grep 'direction="inbound"' "$dir/ztunnel.access.log" | grep 'error=' | cut -f2- | cut -c1-420 | tail -1 | sed 's/^/    /'
echo "== 3. tcp-echo (outside the mesh) -> httpbin:80 in plaintext: the global STRICT policy denies =="
echo "  $(request tcp-echo http://10.88.0.20/)   (reset by httpbin's proxy: curl 56, 55 while still sending, or 7 when the reset comes first)"
echo "== 4. curl-allow -> tcp-echo:9000 (a TCP workload, not HBONE) and -> a node server (passthrough) =="
set +e
echo "  tcp-echo answered: $(ip netns exec hbob-curl-allow python3 -c 'import socket;s=socket.create_connection(("10.88.0.30",9000),timeout=3);s.sendall(b"ping");s.shutdown(1);print(s.recv(64).decode())')"
set -e
ip netns exec $node python3 -m http.server 9999 --bind 10.88.0.1 > /dev/null 2>&1 &
pids+=($!)
listening $node 9999
echo "  node server: $(request curl-allow http://10.88.0.1:9999/)"
echo "== 5. a kubelet-style probe from the node: SNAT to 169.254.7.127, straight to the app =="
set +e; ip netns exec $node curl -s -o /dev/null -m 3 -w '  exit=%{exitcode} status=%{http_code}\n' http://10.88.0.20/; set -e
echo "== 6. a policy change closes a live connection that it now denies =="
# curl-allow holds a connection open; the ALLOW policy is edited to name someone else.
before=$(reloads)
ip netns exec hbob-curl-allow python3 - "$dir/mesh.yaml" <<'PY'
import socket, sys, time
s = socket.create_connection(("10.96.0.20", 8000), timeout=10)
s.sendall(b"GET / HTTP/1.1\r\n")   # a request still being sent: the app keeps the connection open
time.sleep(1)                        # the tunnel is up and allowed
path = sys.argv[1]; text = open(path).read()
open(path + ".tmp", "w").write(text.replace('!Exact "cluster.local/ns/client/sa/curl-allow"', '!Exact "cluster.local/ns/client/sa/someone-else"'))
import os; os.rename(path + ".tmp", path)
start = time.time()
try:
    while s.recv(65536): pass
    how = "closed"
except ConnectionResetError:
    how = "reset"
except socket.timeout:
    how = "still open after 10 s"
print("  the open connection was %s %.1f s after the policy edit" % (how, time.time() - start))
open(path, "w").write(text)
PY
for _ in $(seq 50); do grep -q 'policy change' "$dir/ztunnel.access.log" && break; sleep 0.1; done
echo "  $(grep -o 'connection closed due to policy change.*' "$dir/ztunnel.access.log" | head -1)"
wait_reloads $((before + 2))   # the edit, then the restore
echo "  with the policy restored: $(request curl-allow http://10.96.0.20:8000/)"
echo "== 7. bad input: an independent HBONE client (Python ssl + h2) CONNECTs to httpbin's 15008 =="
"$bin/hbone-tunnel" issue --dir "$dir/ca" --identity spiffe://cluster.local/ns/client/sa/curl-allow --out "$dir/py-client" >/dev/null
hbone() { # hbone <authority> -> the status httpbin's proxy answered
    ip netns exec $node python3 Tests/Interop/hbone_client.py --host 10.88.0.20 --port 15008 --ca "$dir/py-client-root.pem" \
        --cert "$dir/py-client.pem" --key "$dir/py-client.key" --authority "$1" --payload "$(printf 'GET / HTTP/1.0\r\n\r\n')" \
        | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r.get("status", r.get("error")), r.get("received", "")[:15].split("\r")[0])'
}
echo "  authority 10.88.0.20:80 (this pod): $(hbone 10.88.0.20:80)"
echo "  authority 10.88.0.10:80 (another pod's IP): $(hbone 10.88.0.10:80)"
echo "  an invalid mesh config is rejected and the previous one stays in force:"
cp "$dir/mesh.yaml" "$dir/mesh.good"
printf 'workloads:\n- namespace: apps\n  workloadIp: 10.0.0.1\n  services: {}\n' > "$dir/mesh.yaml"
for _ in $(seq 100); do grep -q 'config rejected' "$dir/ztunnel.log" && break; sleep 0.1; done
echo "    config rejected: $(grep 'config rejected' "$dir/ztunnel.log" | tail -1 | grep -o 'error=line [0-9]*, column [0-9]*: [^:]*: [^,]*' | cut -c7-)"
echo "    curl-allow still: $(request curl-allow http://10.96.0.20:8000/)"
before=$(reloads)
cp "$dir/mesh.good" "$dir/mesh.yaml"
wait_reloads $((before + 1))
echo "== 8. observability: readiness (15021), metrics (15020), /config_dump (15000) =="
sleep 0.5
echo "  readiness: $(ip netns exec $node curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:15021/healthz/ready)"
ip netns exec $node curl -s http://127.0.0.1:15020/metrics > "$dir/metrics.txt"
echo "  metrics: $(grep -c '^istio_tcp' "$dir/metrics.txt") series lines, denials: $(grep '^istio_tcp_connections_opened_total' "$dir/metrics.txt" | grep -c 'response_flags="DENY"')"
grep '^istio_tcp_connections_opened_total{reporter="destination",source_workload="curl-allow"' "$dir/metrics.txt" | head -1 | cut -c1-260 | sed 's/^/    /'
ip netns exec $node curl -s http://127.0.0.1:15000/config_dump > "$dir/config_dump.json"
python3 - "$dir/config_dump.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("  config_dump: %d workloads, %d services, %d policies, %d pods served, certificates: %s" % (
    len(d["workloads"]), len(d["services"]), len(d["policies"]), len(d["pods"]),
    ", ".join(sorted(c["identity"].rsplit("/", 1)[-1] + "=" + c["state"] for c in d["certificates"]))))
PY
[ -n "${ONEBOX_HOLD:-}" ] && sleep "$ONEBOX_HOLD"
echo "  \$ ztunnel zc workloads / services / certificates"
# Into files first: `head` closing a pipe early would fail the run (pipefail) with many pods.
for view in workloads services certificates; do ip netns exec $node "$bin/ztunnel" zc $view > "$dir/zc-$view.txt"; done
head -8 "$dir/zc-workloads.txt" | sed 's/^/    /'
sed 's/^/    /' "$dir/zc-services.txt"
cut -c1-150 "$dir/zc-certificates.txt" | head -4 | sed 's/^/    /'

# Per-pod in-pod rules and ip rules, then the node's host rules and probe-set entries: a
# restart must leave this string exactly as it was (nothing duplicated, nothing lost).
rule_counts() {
    for p in "${live[@]}"; do
        [ -e "/var/run/netns/hbob-$p" ] || continue
        printf '%s:%s/%s ' "$p" "$(ip netns exec "hbob-$p" iptables-save | grep -c 'ISTIO_')" "$(ip -n "hbob-$p" rule | wc -l)"
    done
    printf 'host:%s probe-set:%s' "$(ip netns exec $node iptables-save | grep -c 'ISTIO')" "$(ip netns exec $node ipset list 2>/dev/null | grep -c '^10\.88\.')"
}

echo "== 9. ztunnel restarts (graceful drain on SIGTERM), now with LOG_FORMAT=json =="
rules=$(rule_counts)
before=$(snapshots)
stop_process "$ztunnel_pid"
echo "  while it is down: curl-allow $(request curl-allow http://10.96.0.20:8000/)   (captured, nobody listening: refused)"
start_ztunnel "$dir/ztunnel.access.json" json
wait_snapshots $((before + 1)); wait_ready; wait_certificates
echo "  back: readiness $(ready), $(grep 'ZDS snapshot received' "$dir/ztunnel.log" | tail -1 | grep -o 'pods=[0-9]*'); curl-allow $(request curl-allow http://10.96.0.20:8000/)"
if [ "$(rule_counts)" = "$rules" ]; then echo "  rules after the restart: identical ($rules)"; else echo "  rules changed: $rules -> $(rule_counts)"; fi
sleep 0.3
python3 - "$dir/ztunnel.access.json" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
done = [l for l in lines if l["message"] == "connection complete" and l.get("direction") == "inbound"]
l = done[-1]
import datetime
age = datetime.datetime.now(datetime.timezone.utc) - datetime.datetime.fromisoformat(l["time"].replace("Z", "+00:00"))
print("  JSON access log: %d lines parse; the last inbound one: %s; its RFC 3339 time is %s" % (len(lines), ", ".join(
    "%s=%s" % (k, l[k]) for k in ("level", "scope", "src.identity", "dst.identity", "dst.hbone_addr", "bytes_sent", "bytes_recv", "duration")),
    "recent" if abs(age.total_seconds()) < 600 else "off by %s" % age))
PY

echo "== 10. a pod's netns vanishes behind the agent's back, and the agent restarts =="
create churn-a
rules=$(rule_counts)
ip netns del hbob-churn-a   # the runtime lost the sandbox; ztunnel still holds the netns fd
before=$(snapshots)
stop_process "$agent_pid"
for _ in $(seq 50); do [ "$(ready)" = 503 ] && break; sleep 0.1; done
echo "  agent down: ztunnel readiness $(ready); curl-allow $(request curl-allow http://10.96.0.20:8000/)   (traffic keeps flowing)"
start_agent
wait_snapshots $((before + 1)); wait_ready
echo "  agent back: snapshot replayed, readiness $(ready)"
grep 'churn-a' "$dir/agent.log" | grep -i 'fail\|warn\|error' | tail -1 | sed 's/^[^ ]* [a-z]* [^ ]* //' | cut -c1-200 | sed 's/^/    the agent on churn-a: /'
now=$(rule_counts)
if [ "$now" = "$(echo "$rules" | sed 's/churn-a:[0-9]*\/[0-9]* //')" ]; then echo "  rules of the other pods and the node after the restart: identical"; else echo "  rules changed: $rules -> $now"; fi
delete churn-a
echo "  churn-a deleted from the API: proxy stopped $(stopped client/churn-a); agent and ztunnel alive: $(kill -0 "$agent_pid" && kill -0 "$ztunnel_pid" && echo yes || echo no)"

echo "== 11. a pod's life: created, served, opted out (rules removed), deleted (proxy and probe entry gone) =="
create churn-b
echo "  created: in-pod rules $(ip netns exec hbob-churn-b iptables-save | grep -c 'ISTIO_'), proxy started $(started client/churn-b), churn-b -> VIP $(request churn-b http://10.96.0.20:8000/)"
mode[churn-b]=none; write_pods
for _ in $(seq 50); do [ "$(stopped client/churn-b)" -ge 1 ] && break; sleep 0.1; done
echo "  labelled istio.io/dataplane-mode=none: in-pod rules $(ip netns exec hbob-churn-b iptables-save | grep -c 'ISTIO_'), ip rules $(ip -n hbob-churn-b rule | wc -l), proxy stopped $(stopped client/churn-b)"
echo "  churn-b -> httpbin 10.88.0.20:80 in plaintext now: $(request churn-b http://10.88.0.20/)   (STRICT at httpbin's proxy: reset, curl 56, 55 or 7)"
unset 'mode[churn-b]'; write_pods
for _ in $(seq 50); do [ "$(started client/churn-b)" -ge 2 ] && break; sleep 0.1; done
echo "  label removed: re-enrolled (proxy started $(started client/churn-b)), probe-set entries $(ip netns exec $node ipset list | grep -c '^10\.88\.2\.2 ')"
delete churn-b
echo "  deleted: proxy stopped $(stopped client/churn-b), probe-set entries $(ip netns exec $node ipset list | grep -c '^10\.88\.2\.2 '), enrollment record $(grep -c churn-b "$dir/run/enrollment.json" || true), netns $( [ -e /var/run/netns/hbob-churn-b ] && echo present || echo gone)"

echo "== 12. the CA goes down: certificates already issued keep serving; a new identity waits for it =="
cert_state() { # cert_state <service account>: the certificate state /config_dump reports
    ip netns exec $node curl -s http://127.0.0.1:15000/config_dump | python3 -c 'import json,sys
for c in json.load(sys.stdin)["certificates"]:
    if c["identity"].endswith("/sa/" + sys.argv[1]): print(c["state"].split(":")[0]); break
else: print("none")' "$1"
}
stop_process "$ca_pid"
echo "  CA down: curl-allow $(request curl-allow http://10.96.0.20:8000/) (its certificate is cached until it expires)"
create newcomer
sleep 1
echo "  newcomer (a new identity) -> VIP: $(request newcomer http://10.96.0.20:8000/); its certificate: $(cert_state newcomer)   (reset: curl 56, 55 or 7)"
grep 'certificate signing failed' "$dir/ztunnel.log" | tail -1 | grep -o 'error=[^]]*' | cut -c1-150 | sed 's/^/    ztunnel: /'
start_ca
for i in $(seq 300); do [ "$(cert_state newcomer)" = Available ] && break; sleep 0.1; done
echo "  CA back: the newcomer's certificate is $(cert_state newcomer) (retried with backoff); newcomer -> VIP: $(request newcomer http://10.96.0.20:8000/)"
delete newcomer

echo "== 13. a pod the mesh config does not know: ztunnel NACKs it and the ADD fails closed; a config update lets the agent's retry in =="
live+=(stranger); write_pods
ip netns add hbob-stranger
cni stranger loopback ADD '{"cniVersion":"1.0.0","name":"lo","type":"loopback"}' >/dev/null
result=$(cni stranger bridge ADD "$bridge")
if cni stranger istio-cni ADD "$(istio_conf ',"prevResult":'"$result")" > "$dir/cni-stranger.out" 2> "$dir/cni-stranger.log"; then
    echo "  istio-cni ADD succeeded (unexpected)"
else
    echo "  istio-cni ADD failed: $(python3 -c 'import json,sys; e=json.load(open(sys.argv[1])); print("code %s: %s" % (e["code"], e["msg"]))' "$dir/cni-stranger.out")"
fi
echo "  ztunnel and agent alive: $(kill -0 "$agent_pid" && kill -0 "$ztunnel_pid" && echo yes || echo no); curl-allow $(request curl-allow http://10.96.0.20:8000/)"
before=$(reloads)
python3 - "$dir/mesh.yaml" <<'PY'
import sys
path = sys.argv[1]; text = open(path).read()
added = ("- uid: cluster1//v1/Pod/client/stranger\n  name: stranger\n  namespace: client\n  serviceAccount: stranger\n"
         "  trustDomain: cluster.local\n  workloadIps: [\"10.88.3.10\"]\n  protocol: HBONE\n  node: onebox\n  services: {}\n")
open(path + ".tmp", "w").write(text.replace("\nworkloads:\n", "\nworkloads:\n" + added, 1))
import os; os.rename(path + ".tmp", path)
PY
wait_reloads $((before + 1))
for _ in $(seq 150); do [ "$(started client/stranger)" -ge 1 ] && break; sleep 0.1; done
echo "  stranger added to the config: the agent's retry enrolled it, proxy started $(started client/stranger); stranger -> VIP $(request stranger http://10.96.0.20:8000/)   (not allowed by the policy: reset)"
delete stranger

if [ -n "${ONEBOX_CHURN_SECONDS:-}" ]; then
    echo "== churn: pods created, used and deleted for ${ONEBOX_CHURN_SECONDS} s =="
    usage() { # usage <pid>: open fds and RSS (KiB)
        echo "$(ls "/proc/$1/fd" | wc -l) $(awk '/^VmRSS/ {print $2}' "/proc/$1/status")"
    }
    cycles=0; requests=0; failures=0
    cycle() { # one pod's life: created, three requests through HBONE and a connection left open, deleted
        local p=${churners[$((cycles % 16))]}
        create "$p"
        for _ in 1 2 3; do
            requests=$((requests + 1))
            result=$(request "$p" http://10.96.0.20:8000/)
            if [ "$result" != "exit=0 status=200" ]; then
                failures=$((failures + 1)); echo "$(date +%T.%N) $p $result" >> "$dir/churn-failures.log"
            fi
        done
        # still open when the pod is deleted: ztunnel must drop it with the pod
        ip netns exec "hbob-$p" python3 -c 'import socket,time;s=socket.create_connection(("10.96.0.20",8000),timeout=3);s.sendall(b"GET / HTTP/1.1\r\n");time.sleep(5)' >/dev/null 2>&1 &
        sleep 0.2
        delete "$p"
        cycles=$((cycles + 1))
    }
    # A deleted pod's veth is gone before ztunnel hears of the deletion, so the peers of its
    # HBONE connections see no FIN: their keepalive ends them (PING every 10 s, dead after
    # 20 s unanswered, then up to 5 s for the TLS close). Measure after that has passed.
    settle=40
    cycle; cycle   # warm-up: the first pods create the caches and pools that stay
    sleep $settle
    z0=$(usage "$ztunnel_pid"); a0=$(usage "$agent_pid"); ls -l "/proc/$ztunnel_pid/fd" > "$dir/ztunnel.fds.before"
    end=$((SECONDS + ONEBOX_CHURN_SECONDS))
    samples=""; next=$((SECONDS + 60))
    while [ $SECONDS -lt $end ]; do
        cycle
        if [ $SECONDS -ge $next ]; then samples+=" $(awk '/^VmRSS/ {print $2}' "/proc/$ztunnel_pid/status")"; next=$((SECONDS + 60)); fi
    done
    wait_ready; sleep $settle
    z1=$(usage "$ztunnel_pid"); a1=$(usage "$agent_pid"); ls -l "/proc/$ztunnel_pid/fd" > "$dir/ztunnel.fds.after"
    echo "  $cycles pods created and deleted, $requests requests, $failures failed"
    [ ! -s "$dir/churn-failures.log" ] || sed 's/^/    failed: /' "$dir/churn-failures.log" >&2
    echo "  ztunnel: fds ${z0% *} -> ${z1% *}, RSS ${z0#* } -> ${z1#* } KiB"
    echo "  agent:   fds ${a0% *} -> ${a1% *}, RSS ${a0#* } -> ${a1#* } KiB"
    echo "  ztunnel RSS each minute (KiB):${samples:- (run shorter than a minute)}"
    echo "  pods served now: $(ip netns exec $node curl -s http://127.0.0.1:15000/config_dump | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["pods"]))'), churn namespaces left: $(ip netns list | grep -c 'hbob-churn' || true)"
fi
[ -n "${ONEBOX_HOLD_END:-}" ] && sleep "$ONEBOX_HOLD_END"
echo
echo "access log: $(cat "$dir"/ztunnel.access.* | grep -c 'connection complete') connections; logs in $dir/{agent.log,ztunnel.log,ztunnel.access.log,ztunnel.access.json}"
