# An hbone-tunnel endpoint pair on loopback in front of meshload's echo, either endpoint
# optionally run under a command such as valgrind. Sourced by scripts/release-build and
# scripts/profile-instructions, from the package root.
#
#   pair_prepare BINARY DIR   a symbol-table-only copy of BINARY (valgrind 3.19 cannot read
#                             the DWARF 5 of a Swift release build), meshload, a CA, the echo
#   pair_start DIR            the server, then the client, each after the words in the arrays
#                             server_prefix / client_prefix (empty: run natively); sets
#                             pair_server and pair_client (pids) and pair_port (the client's
#                             listener, where the load goes)
#   pair_cleanup              stops everything started here
#
# PAIR_ARGS (environment): extra words for both endpoints, e.g. --no-splice;
# PAIR_CLIENT_ARGS: for the client only, e.g. --pool-off.

pair_pids=()
server_prefix=()
client_prefix=()

pair_cleanup() { for pid in "${pair_pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pair_wait() { # pair_wait FILE: until the process writing FILE prints its "listening" line
    for _ in $(seq 600); do grep -q listening "$1" && return; sleep 0.1; done
    echo "no listener: $(cat "$1")" >&2
    exit 1
}

pair_prepare() {
    objcopy --strip-debug "$1" "$2/hbone-tunnel"
    cc -O2 -pthread -o "$2/meshload" Benchmarks/e2e/meshload.c
    "$2/hbone-tunnel" ca --dir "$2/ca" >/dev/null
    pair_echo=$(free_port)
    "$2/meshload" serve "$pair_echo" >/dev/null & pair_pids+=($!)
}

pair_start() {
    local dir=$1 server_port
    server_port=$(free_port); pair_port=$(free_port)
    "${server_prefix[@]}" "$dir/hbone-tunnel" server --dir "$dir/ca" --listen "127.0.0.1:$server_port" \
        --upstream "127.0.0.1:$pair_echo" ${PAIR_ARGS:-} >"$dir/server.out" 2>&1 & pair_server=$!; pair_pids+=($pair_server)
    pair_wait "$dir/server.out"
    "${client_prefix[@]}" "$dir/hbone-tunnel" client --dir "$dir/ca" --listen "127.0.0.1:$pair_port" \
        --connect "127.0.0.1:$server_port" --authority "127.0.0.1:$pair_echo" ${PAIR_ARGS:-} ${PAIR_CLIENT_ARGS:-} >"$dir/client.out" 2>&1 & pair_client=$!
    pair_pids+=($pair_client)
    pair_wait "$dir/client.out"
}
