#!/usr/bin/env bash
# The one-box ambient mesh: a node and pods as network namespaces on this machine.
#
#  node netns   cni-agent (node agent) + ztunnel (node proxy), bridge cni-ob0 10.88.0.1
#  pods         curl-allow 10.88.0.10, curl-deny 10.88.0.11 (namespace client)
#               httpbin    10.88.0.20 behind VIP 10.96.0.20:8000 -> 80 (namespace apps)
#
# Pods are created by the real CNI chain a runtime would run (loopback, bridge +
# host-local, istio-cni last); the agent captures them and hands them to ztunnel over ZDS;
# ztunnel serves each pod from inside its namespace. Then the scenarios run. Everything is
# torn down on exit, Ctrl-C or failure. Needs root.
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
pids=()
cleanup() {
    # SIGTERM first (the agent and ztunnel shut down gracefully), then SIGKILL whatever is
    # still running in our namespaces (a signal mask inherited from a parent can leave a
    # child deaf to SIGTERM), then the namespaces.
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 30); do
        alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break; sleep 0.1
    done
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for n in "${pods[@]/#/hbob-}" $node; do
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

cat > "$dir/run/pods.yaml" <<YAML
namespaces:
  - name: client
    labels: {istio.io/dataplane-mode: ambient}
  - name: apps
    labels: {istio.io/dataplane-mode: ambient}
  - name: legacy
pods:
YAML
for p in "${pods[@]}"; do
    printf '  - {name: %s, namespace: %s, uid: %s, serviceAccount: %s, netns: /var/run/netns/hbob-%s, ips: [%s]}\n' \
        "$p" "${ns[$p]}" "${uid[$p]}" "${sa[$p]}" "$p" "${ip[$p]}" >> "$dir/run/pods.yaml"
done
cp Examples/onebox/mesh.yaml "$dir/mesh.yaml"

echo "== node agent and node proxy (in the node namespace) =="
ip netns exec $node "$bin/cni-agent" run --run-dir "$dir/run" --zds-socket "$dir/zds/ztunnel.sock" > "$dir/agent.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$dir/zds/ztunnel.sock" ] && [ -S "$dir/run/pluginevent.sock" ] && break; sleep 0.1; done
ip netns exec $node "$bin/ztunnel" --config "$dir/mesh.yaml" --zds-socket "$dir/zds/ztunnel.sock" --ca-dir "$dir/ca" \
    > "$dir/ztunnel.access.log" 2> "$dir/ztunnel.log" &
pids+=($!)
for _ in $(seq 100); do grep -q "ZDS snapshot received" "$dir/ztunnel.log" 2>/dev/null && break; sleep 0.1; done
echo "  agent: $(grep -c 'agent ready' "$dir/agent.log") ready; ztunnel: connected over ZDS"

echo "== pods through the CNI chain (loopback, bridge + host-local, istio-cni) =="
cni() { # cni <pod> <plugin> <command> <json>
    ip netns exec $node env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin CNI_COMMAND="$3" CNI_CONTAINERID="c-$1" \
        CNI_NETNS="/var/run/netns/hbob-$1" CNI_IFNAME=eth0 CNI_PATH="$dir/bin" \
        CNI_ARGS="IgnoreUnknown=1;IP=${ip[$1]};K8S_POD_NAMESPACE=${ns[$1]};K8S_POD_NAME=$1" "$dir/bin/$2" <<< "$4"
}
bridge='{"cniVersion":"1.0.0","name":"onebox","type":"bridge","bridge":"cni-ob0","isGateway":true,"isDefaultGateway":true,"ipam":{"type":"host-local","subnet":"10.88.0.0/16","dataDir":"'"$dir"'/ipam"}}'
for p in "${pods[@]}"; do
    ip netns add "hbob-$p"
    cni "$p" loopback ADD '{"cniVersion":"1.0.0","name":"lo","type":"loopback"}' >/dev/null
    result=$(cni "$p" bridge ADD "$bridge")
    istio='{"cniVersion":"1.0.0","name":"onebox","type":"istio-cni","cni_agent_run_dir":"'"$dir/run"'","ambient_enabled":true,"exclude_namespaces":["kube-system"],"prevResult":'"$result"'}'
    if ! cni "$p" istio-cni ADD "$istio" > "$dir/cni-$p.out" 2> "$dir/cni-$p.log"; then
        echo "  $p: istio-cni ADD failed: $(cat "$dir/cni-$p.out")"; exit 1
    fi
    echo "  $p: ${ip[$p]} (${ns[$p]}/${sa[$p]}) in-pod redirect rules: $(ip netns exec "hbob-$p" iptables-save | grep -c 'ISTIO_'), proxy started: $(grep -c "pod=${ns[$p]}/$p" "$dir/ztunnel.log" || true)"
done
ip netns exec hbob-httpbin python3 -m http.server 80 --bind 0.0.0.0 > "$dir/httpbin.log" 2>&1 &
pids+=($!)
ip netns exec hbob-tcp-echo socat TCP-LISTEN:9000,fork,reuseaddr EXEC:cat > /dev/null 2>&1 &
pids+=($!)
sleep 1

request() { # request <pod> <url> -> prints "exit=<curl exit> status=<http status>"
    set +e
    status=$(ip netns exec "hbob-$1" curl -s -o /dev/null -m 5 -w '%{http_code}' "$2")
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
echo "  $(request tcp-echo http://10.88.0.20/)   (reset by httpbin's proxy: curl 56, or 7 when the reset comes first)"
echo "== 4. curl-allow -> tcp-echo:9000 (a TCP workload, not HBONE) and -> a node server (passthrough) =="
set +e
echo "  tcp-echo answered: $(ip netns exec hbob-curl-allow python3 -c 'import socket;s=socket.create_connection(("10.88.0.30",9000),timeout=3);s.sendall(b"ping");s.shutdown(1);print(s.recv(64).decode())')"
set -e
ip netns exec $node python3 -m http.server 9999 --bind 10.88.0.1 > /dev/null 2>&1 &
pids+=($!)
sleep 0.5
echo "  node server: $(request curl-allow http://10.88.0.1:9999/)"
echo "== 5. a kubelet-style probe from the node: SNAT to 169.254.7.127, straight to the app =="
set +e; ip netns exec $node curl -s -o /dev/null -m 3 -w '  exit=%{exitcode} status=%{http_code}\n' http://10.88.0.20/; set -e
echo "== 6. a policy change closes a live connection that it now denies =="
# curl-allow holds a connection open; the ALLOW policy is edited to name someone else.
reloads() { grep -c 'config reloaded' "$dir/ztunnel.log" || true; }
wait_reloads() { # wait_reloads <count>: until ztunnel has reloaded its config that many times
    for _ in $(seq 100); do [ "$(reloads)" -ge "$1" ] && return; sleep 0.1; done
}
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
ip netns exec $node "$bin/ztunnel" zc workloads | sed 's/^/    /'
ip netns exec $node "$bin/ztunnel" zc services | sed 's/^/    /'
ip netns exec $node "$bin/ztunnel" zc certificates | cut -c1-150 | head -4 | sed 's/^/    /'
echo
echo "access log: $(grep -c 'connection complete' "$dir/ztunnel.access.log") connections; logs in $dir/{agent.log,ztunnel.log,ztunnel.access.log}"
