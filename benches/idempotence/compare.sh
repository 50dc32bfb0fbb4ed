#!/usr/bin/env bash
# Idempotent producers beside plain ones, in one run on one machine: a release
# `quipu dev --nodes NODES` cluster in a temporary directory (RF = NODES, fsync=always,
# acks=all, 1 KiB records, 3 partitions warmed up with 20,000 records, with the storage engine's
# own figure on the same disk as the raw baseline), then ROUNDS rounds of
# `quipu bench produce` at full speed with plain batches (--no-idempotence), idempotent with one
# batch in flight per partition, idempotent with five, one again and plain again; then plain and
# idempotent (five in flight) at a fixed RATE for 8 s, for latency. One JSON line per run. Figures go to
# docs/benchmarks.md by hand.
#
# usage: benches/idempotence/compare.sh [NODES] [RECORDS] [ROUNDS] [RATE]
set -euo pipefail
cd "$(dirname "$0")/../.."
nodes="${1:-1}"
records="${2:-300000}"
rounds="${3:-3}"
rate="${4:-80000}"
cargo build --release -p quipu
dir="$(mktemp -d)"
target/release/quipu dev --nodes "$nodes" --data-dir "$dir/dev" --raft-port 27001 \
  --api-port 27101 --admin-port 27201 --kafka-port 29092 > "$dir/dev.out" 2>&1 &
dev=$!
trap 'kill -TERM $dev 2>/dev/null; wait $dev 2>/dev/null; rm -rf "$dir"' EXIT
export QUIPU_BOOTSTRAP
QUIPU_BOOTSTRAP=$(seq -s, -f '127.0.0.1:%g' 27101 $((27100 + nodes)))
for _ in $(seq 1 100); do
  target/release/quipu cluster health >/dev/null 2>&1 && break
  sleep 0.2
done
bench() { target/release/quipu bench produce --topic t --json "$@"; }
# The warm-up also measures the storage engine alone on the same disk (the raw baseline: the
# same 64 KiB batches appended and fdatasynced one at a time for 5 s).
echo "nodes=$nodes warm-up $(bench --partitions 3 --replication-factor "$nodes" --records 20000 --storage-baseline "$dir/baseline")"
for round in $(seq 1 "$rounds"); do
  # Symmetric (plain, 1, 5, 1, plain), so that the disk's drift within a round cancels out.
  echo "nodes=$nodes round=$round plain max $(bench --records "$records" --no-idempotence)"
  echo "nodes=$nodes round=$round idempotent-1 max $(bench --records "$records" --max-in-flight 1)"
  echo "nodes=$nodes round=$round idempotent-5 max $(bench --records "$records" --max-in-flight 5)"
  echo "nodes=$nodes round=$round idempotent-1 max $(bench --records "$records" --max-in-flight 1)"
  echo "nodes=$nodes round=$round plain max $(bench --records "$records" --no-idempotence)"
  echo "nodes=$nodes round=$round plain rate=$rate $(bench --records $((rate * 8)) --rate "$rate" --duration 8 --no-idempotence)"
  echo "nodes=$nodes round=$round idempotent-5 rate=$rate $(bench --records $((rate * 8)) --rate "$rate" --duration 8 --max-in-flight 5)"
done
