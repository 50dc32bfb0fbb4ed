#!/usr/bin/env bash
# TLS on and off, in one run on one machine: a release `quipu dev --nodes 3` cluster in plaintext,
# then the same with `--tls` (mutual TLS between nodes, TLS on the client API and the Kafka
# listener), then plaintext again (this VM's disk drifts; the two plaintext runs bracket the TLS
# one). Each: RECORDS records of SIZE bytes produced as fast as possible (acks=all, RF 3, 3
# partitions, after 20,000 to warm up), then RATE records/s for latency, then CONSUME_RECORDS
# consumed twice over gRPC and twice over the Kafka listener (`quipu bench kafka-consume`).
# Figures go to docs/benchmarks.md by hand.
set -euo pipefail
cd "$(dirname "$0")/../.."
records="${1:-200000}"
size="${2:-1024}"
rate="${3:-10000}"
consume_records="${4:-500000}"
cargo build --release -p quipu
dir="$(mktemp -d)"
dev=""
stop_dev() {
  if [ -n "$dev" ]; then kill -TERM "$dev" 2>/dev/null || true; wait "$dev" 2>/dev/null || true; fi
  dev=""
}
trap 'stop_dev; rm -rf "$dir"' EXIT
quipu=target/release/quipu
bootstrap=127.0.0.1:27101,127.0.0.1:27102,127.0.0.1:27103

run() {
  local label="$1"; shift
  local data="$dir/$label"
  $quipu dev --nodes 3 --data-dir "$data" --raft-port 27001 --api-port 27101 --admin-port 27201 --kafka-port 29092 \
    "$@" > "$dir/$label.out" 2>&1 &
  dev=$!
  local tls=()
  if [ "$#" -gt 0 ]; then tls=(--tls-ca "$data/tls/ca.pem"); fi
  for _ in $(seq 1 100); do
    $quipu cluster --bootstrap "$bootstrap" "${tls[@]}" health >/dev/null 2>&1 && break
    sleep 0.2
  done
  echo "== $label: warm-up, then produce as fast as possible, then $rate records/s"
  $quipu bench produce --bootstrap "$bootstrap" "${tls[@]}" --topic t --records 20000 \
    --record-size "$size" --partitions 3 --acks all > /dev/null
  $quipu bench produce --bootstrap "$bootstrap" "${tls[@]}" --topic t --records "$records" \
    --record-size "$size" --partitions 3 --acks all
  $quipu bench produce --bootstrap "$bootstrap" "${tls[@]}" --topic t --records $((rate * 10)) \
    --record-size "$size" --partitions 3 --acks all --rate "$rate"
  echo "== $label: consume $consume_records records, gRPC and Kafka, twice each"
  $quipu bench produce --bootstrap "$bootstrap" "${tls[@]}" --topic c --records "$consume_records" \
    --record-size "$size" --partitions 3 --acks all > /dev/null
  for _ in 1 2; do
    $quipu bench consume --bootstrap "$bootstrap" "${tls[@]}" --topic c
    $quipu bench kafka-consume --kafka-bootstrap 127.0.0.1:29092 "${tls[@]}" --topic c
  done
  stop_dev
}

run plain
run tls --tls
run plain-again
