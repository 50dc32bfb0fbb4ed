#!/usr/bin/env bash
# How long a short stall of the nodes holds produces up: a fresh release `quipu dev --nodes 3`
# (three node processes), an RF 3 topic of 3 partitions, 20,000 records to warm up, then
# `quipu bench produce` at RATE records/s for 10 s (1 KiB records, acks=all, 32 producer
# tasks); 4 s in, two of the three node processes are stopped with SIGSTOP for STOP_MS, then
# continued. Prints the bench's throughput and latency line. Compare builds in alternating runs
# (this VM drifts); figures go to docs/benchmarks.md by hand.
#
# usage: benches/produce/stall.sh BINARY [RATE] [STOP_MS]
set -euo pipefail
quipu="$1"; rate="${2:-70000}"; stop_ms="${3:-250}"
export QUIPU_BOOTSTRAP=127.0.0.1:27101,127.0.0.1:27102,127.0.0.1:27103
dir=$(mktemp -d)
"$quipu" dev --nodes 3 --data-dir "$dir/d" --raft-port 27001 --api-port 27101 \
  --admin-port 27201 --kafka-port 29092 > "$dir/out" 2>&1 &
dev=$!
trap 'kill -TERM $dev 2>/dev/null; wait $dev 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 150); do "$quipu" cluster health > /dev/null 2>&1 && break; sleep 0.2; done
"$quipu" bench produce --topic t --partitions 3 --replication-factor 3 --records 20000 \
  --json > /dev/null
# Two of the node processes `quipu dev` started (its children), by PID.
nodes=$(ps -o pid= --ppid "$dev" | head -2 | tr '\n' ' ')
(
  sleep 4
  # shellcheck disable=SC2086 # one PID per word
  kill -STOP $nodes
  python3 -c "import time; time.sleep($stop_ms / 1000)"
  # shellcheck disable=SC2086
  kill -CONT $nodes
) &
"$quipu" bench produce --concurrency 32 --topic t --records $((rate * 10)) --duration 10 \
  --rate "$rate" 2>&1 |
  grep -o "[0-9]* records/s\|latency p50 [0-9.]* ms, p99 [0-9.]* ms, p99.9 [0-9.]* ms, max [0-9.]* ms" |
  tr '\n' ' '
echo
