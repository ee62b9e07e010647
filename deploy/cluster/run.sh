#!/usr/bin/env bash
# run.sh starts a local idle-worker cluster on 127.0.0.1: three nats-servers
# (n1, n2, n3, configured by n1.conf, n2.conf, n3.conf next to this script)
# routed into one JetStream cluster, then three idle-workers (w1, w2, w3)
# sharing the subject prefix, their stream replicated on all three nodes
# (IDLE_STORE_REPLICAS=3). Logs, pid files and the JetStream stores go to
# RUN_DIR. Ctrl-C (or SIGTERM) stops the workers first, each handing its
# partitions over and leaving, then the servers. A new run on the same
# RUN_DIR finds the stores, so the workers restore what they tracked.
#
# Usage:
#   make build && deploy/cluster/run.sh   start everything; Ctrl-C stops it
#   deploy/cluster/run.sh worker N        from another terminal: start worker
#                                         wN again (after it was killed), with
#                                         the same name and settings
#   deploy/cluster/run.sh node N          the same for nats-server nN
#
# Environment (defaults in brackets):
#   IDLE_WORKER    the idle-worker binary [bin/idle-worker of this checkout]
#   NATS_SERVER    the nats-server binary [built into RUN_DIR/bin from the
#                  version in go.mod, with the go command]
#   RUN_DIR        logs, pid files, stores [cluster-run in this checkout]
#   CLIENT_PORTS   the nodes' client ports [4222 4223 4224]
#   ROUTE_PORTS    their cluster (route) ports [6222 6223 6224]
#   MONITOR_PORTS  their monitoring ports [8222 8223 8224]
#   HTTP_PORTS     the workers' /metrics, /healthz, /readyz ports
#                  [9464 9465 9466]
#   IDLE_*         passed on to every worker (IDLE_DEFAULT_TIMEOUT=10s, ...),
#                  except those run.sh sets: IDLE_NATS_URL, IDLE_WORKER_NAME,
#                  IDLE_HTTP_ADDR, IDLE_STORE_REPLICAS, IDLE_PERSIST
set -euo pipefail
# Job control: every process started in the background gets a process
# group of its own, so Ctrl-C reaches this script only, which stops the
# workers before the servers.
set -m

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
IDLE_WORKER=${IDLE_WORKER:-$root/bin/idle-worker}
RUN_DIR=${RUN_DIR:-$root/cluster-run}
read -r -a client_ports <<<"${CLIENT_PORTS:-4222 4223 4224}"
read -r -a route_ports <<<"${ROUTE_PORTS:-6222 6223 6224}"
read -r -a monitor_ports <<<"${MONITOR_PORTS:-8222 8223 8224}"
read -r -a http_ports <<<"${HTTP_PORTS:-9464 9465 9466}"
for list in client_ports route_ports monitor_ports http_ports; do
	declare -n ports=$list
	if [ "${#ports[@]}" -ne 3 ]; then
		echo "run.sh: ${list^^} needs three ports, got '${ports[*]}'" >&2
		exit 2
	fi
done
mkdir -p "$RUN_DIR/logs" "$RUN_DIR/pids" "$RUN_DIR/data"
RUN_DIR=$(cd "$RUN_DIR" && pwd)

urls=""
routes=""
for i in 0 1 2; do
	urls+="${urls:+,}nats://127.0.0.1:${client_ports[$i]}"
	routes+="${routes:+,}nats-route://127.0.0.1:${route_ports[$i]}"
done

# http_ok PORT PATH: does 127.0.0.1:PORT answer GET PATH with status 200?
http_ok() {
	local status
	{ exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
	printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
	read -r _ status _ <&3 2>/dev/null || status=""
	exec 3>&-
	[ "$status" = 200 ]
}

# wait_ok WHAT PORT PATH PIDFILE: wait up to 60 s for http_ok, failing early
# if the process of PIDFILE exits.
wait_ok() {
	for _ in $(seq 600); do
		if http_ok "$2" "$3"; then
			return 0
		fi
		if ! kill -0 "$(cat "$4")" 2>/dev/null; then
			echo "run.sh: $1 exited; see its log" >&2
			return 1
		fi
		sleep 0.1
	done
	echo "run.sh: $1 not ready on 127.0.0.1:$2$3 after 60 s" >&2
	return 1
}

# start_node N: start nats-server nN (N = 1, 2 or 3) in the background, in
# RUN_DIR, where the conf's store_dir ./data/nN is.
start_node() {
	local n=$1 i=$(($1 - 1))
	(cd "$RUN_DIR" && exec "$NATS_SERVER" -c "$here/n$n.conf" -p "${client_ports[$i]}" -m "${monitor_ports[$i]}" \
		--cluster "nats://127.0.0.1:${route_ports[$i]}" --routes "$routes" >>"$RUN_DIR/logs/n$n.log" 2>&1) &
	echo $! >"$RUN_DIR/pids/n$n"
	echo "n$n: pid $!, nats://127.0.0.1:${client_ports[$i]}, log $RUN_DIR/logs/n$n.log"
}

# start_worker N: start worker wN (N = 1, 2 or 3) in the background.
start_worker() {
	local n=$1 i=$(($1 - 1))
	IDLE_NATS_URL=$urls IDLE_WORKER_NAME="w$n" IDLE_HTTP_ADDR="127.0.0.1:${http_ports[$i]}" \
		IDLE_STORE_REPLICAS=3 IDLE_PERSIST=on \
		nohup "$IDLE_WORKER" >>"$RUN_DIR/logs/w$n.log" 2>&1 &
	echo $! >"$RUN_DIR/pids/w$n"
	echo "w$n: pid $!, /readyz on 127.0.0.1:${http_ports[$i]}, log $RUN_DIR/logs/w$n.log"
}

if [ ! -x "$IDLE_WORKER" ]; then
	echo "run.sh: no idle-worker binary at $IDLE_WORKER: run make build, or set IDLE_WORKER" >&2
	exit 2
fi

if [ -z "${NATS_SERVER:-}" ]; then
	NATS_SERVER=$RUN_DIR/bin/nats-server
	if [ "${1:-}" != worker ] && { [ "${1:-}" != node ] || [ ! -x "$NATS_SERVER" ]; }; then
		echo "building nats-server (the version in go.mod) into $NATS_SERVER"
		(cd "$root" && CGO_ENABLED=0 go build -o "$NATS_SERVER" github.com/nats-io/nats-server/v2)
	fi
fi

case "${1:-}" in
worker | node)
	kind=${1:0:1}
	case "${2:-}" in
	1 | 2 | 3) ;;
	*)
		echo "usage: run.sh $1 1|2|3" >&2
		exit 2
		;;
	esac
	if kill -0 "$(cat "$RUN_DIR/pids/$kind$2" 2>/dev/null)" 2>/dev/null; then
		echo "run.sh: $kind$2 still runs (pid $(cat "$RUN_DIR/pids/$kind$2"))" >&2
		exit 1
	fi
	if [ "$1" = worker ]; then
		start_worker "$2"
		wait_ok "w$2" "${http_ports[$(($2 - 1))]}" /readyz "$RUN_DIR/pids/w$2"
	else
		start_node "$2"
		wait_ok "n$2" "${monitor_ports[$(($2 - 1))]}" /healthz "$RUN_DIR/pids/n$2"
	fi
	echo "$kind$2 ready"
	exit 0
	;;
"") ;;
*)
	echo "usage: run.sh [worker|node 1|2|3]" >&2
	exit 2
	;;
esac

for f in "$RUN_DIR/pids/"*; do
	[ -e "$f" ] || continue
	if kill -0 "$(cat "$f")" 2>/dev/null; then
		echo "run.sh: $(basename "$f") of an earlier run still runs (pid $(cat "$f")); stop that run first" >&2
		exit 1
	fi
	rm -f "$f"
done

# stop [STATUS]: SIGTERM the workers, wait for them (each hands its
# partitions over first), then the servers, and exit with STATUS (0). Only
# processes of this run's pid files.
stop() {
	trap - INT TERM
	echo
	echo "stopping"
	for kind in w n; do
		local pids=()
		for f in "$RUN_DIR/pids/$kind"?; do
			[ -e "$f" ] || continue
			pid=$(cat "$f")
			if kill -TERM "$pid" 2>/dev/null; then
				pids+=("$pid")
			fi
			rm -f "$f"
		done
		for pid in "${pids[@]}"; do
			for _ in $(seq 150); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.1
			done
			kill -KILL "$pid" 2>/dev/null || true
		done
	done
	echo "stopped; logs in $RUN_DIR/logs"
	exit "${1:-0}"
}
trap stop INT TERM

for n in 1 2 3; do
	start_node "$n"
done
# A node's /healthz answers 200 once it is current with the JetStream meta
# leader: the cluster has formed.
for i in 0 1 2; do
	wait_ok "n$((i + 1))" "${monitor_ports[$i]}" /healthz "$RUN_DIR/pids/n$((i + 1))" || stop 1
done
echo "cluster formed"

# w1 first, alone: it creates the stream. Workers started at the same
# moment on a cluster without the stream may all time out creating it
# (nats-server 2.15 leaves a stream update unanswered while another
# client's create of that stream is in flight), and exit.
start_worker 1
wait_ok w1 "${http_ports[0]}" /readyz "$RUN_DIR/pids/w1" || stop 1
for n in 2 3; do
	start_worker "$n"
done
for n in 2 3; do
	wait_ok "w$n" "${http_ports[$((n - 1))]}" /readyz "$RUN_DIR/pids/w$n" || stop 1
done
echo "workers ready; IDLE_NATS_URL=$urls"
echo "Ctrl-C stops everything"
while :; do
	sleep 1 &
	wait $! || true
done
