#!/usr/bin/env bash
# Where a produce's CPU goes, per request (issue 16's "where the time goes"): a fresh release
# `quipu dev --nodes NODES` with a topic of PARTITIONS partitions (replication factor NODES),
# warmed up, then `quipu bench produce` (1 KiB records, acks=all, fsync=always, 32 producer
# tasks) at RATE records/s (0: as fast as it goes) for SECONDS + 4 s, with a system-wide
# `perf record -g` over SECONDS in the middle. The produce requests the nodes answered meanwhile
# come from their /metrics; benches/produce/cpu_split.py charges every sample to its process
# (the nodes, the bench client, the rest: other programs and kernel threads, among them the
# kworkers that finish the nodes' disk writes) and to a category (syncs, file writes, sockets,
# waiting and waking, interrupts, copies, CRC, allocator, gRPC, tokio, openraft, quipu) and
# writes the microseconds of CPU per request to OUT/profile.md. Needs `perf` (linux-perf) and
# permission to record every CPU (root, or kernel.perf_event_paranoid <= -1).
#
# usage: [QUIPU_BIN=path] benches/produce/profile.sh [OUT] [NODES] [PARTITIONS] [RATE] [SECONDS]
#   defaults: target/bench-profile 3 3 50000 6
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-target/bench-profile}"
nodes="${2:-3}"
partitions="${3:-3}"
rate="${4:-50000}"
seconds="${5:-6}"
command -v perf > /dev/null || { echo "profile.sh needs perf (apt-get install linux-perf)" >&2; exit 1; }
mkdir -p "$out"
if [ -z "${QUIPU_BIN:-}" ]; then
  cargo build --release -p quipu
fi
quipu="${QUIPU_BIN:-target/release/quipu}"
dir="$(mktemp -d)"
dev=""
bench=""
cleanup() {
  if [ -n "$bench" ]; then kill -TERM "$bench" 2>/dev/null || true; wait "$bench" 2>/dev/null || true; fi
  if [ -n "$dev" ]; then kill -TERM "$dev" 2>/dev/null || true; wait "$dev" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT
bootstrap=""
admin_ports=()
for n in $(seq 1 "$nodes"); do
  bootstrap="${bootstrap:+$bootstrap,}127.0.0.1:$((27100 + n))"
  admin_ports+=("$((27200 + n))")
done
export QUIPU_BOOTSTRAP="$bootstrap"
"$quipu" dev --nodes "$nodes" --data-dir "$dir/d" --raft-port 27001 --api-port 27101 \
  --admin-port 27201 --kafka-port 29092 > "$dir/dev.log" 2>&1 &
dev=$!
for _ in $(seq 1 150); do "$quipu" cluster health > /dev/null 2>&1 && break; sleep 0.2; done
"$quipu" bench produce --topic t --partitions "$partitions" --replication-factor "$nodes" \
  --records 20000 --json > /dev/null
# The produce requests every node has answered so far.
answered() {
  local port total=0 count
  for port in "${admin_ports[@]}"; do
    count=$(curl -s "http://127.0.0.1:$port/metrics" \
      | awk '/^quipu_produce_requests_total\{.*result="ok"/ {s += $NF} END {printf "%d", s}')
    total=$((total + count))
  done
  echo "$total"
}
node_pids=$(pgrep -d, -P "$dev" || true)
if [ -z "$node_pids" ]; then node_pids="$dev"; fi
rate_args=(--records 100000000)
if [ "$rate" -gt 0 ]; then rate_args=(--rate "$rate" --records $((rate * (seconds + 4)))); fi
QUIPU_LOG=warn "$quipu" bench produce --topic t --duration $((seconds + 4)) --concurrency 32 \
  "${rate_args[@]}" > "$dir/bench.log" 2>&1 &
bench=$!
sleep 2
before=$(answered)
# cpu-clock: every sample is 1/999 s of one CPU's time, which cpu_split.py relies on (the
# default event may be cycles).
if ! perf record -e cpu-clock -a -g -F 999 -o "$out/perf.data" -- sleep "$seconds" \
  > "$dir/perf.log" 2>&1; then
  cat "$dir/perf.log" >&2
  exit 1
fi
after=$(answered)
wait "$bench"
bench_pid=$bench
bench=""
grep "records sent" "$dir/bench.log" | tee "$out/bench.txt"
python3 benches/produce/cpu_split.py "$out/perf.data" $((after - before)) "$node_pids" \
  "$bench_pid" "$out/profile.md"
