#!/usr/bin/env bash
# TLS on and off for reads, with the server and the client on separate cores of this machine:
# a release `quipu dev --nodes 3` pinned to CPU 0 (`taskset`), the benchmark clients to CPU 1, so
# that the server's encryption and the client's decryption do not share a core (as they would
# not on separate machines). For each of plaintext, TLS, plaintext again: CONSUME_RECORDS records
# of SIZE bytes (3 partitions, RF 3) are produced, then read PASSES times over gRPC (`quipu bench
# consume`) and over the Kafka listener (`quipu bench kafka-consume`), alternating. Figures go
# to docs/benchmarks.md by hand.
set -euo pipefail
cd "$(dirname "$0")/../.."
consume_records="${1:-500000}"
size="${2:-1024}"
passes="${3:-3}"
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
  taskset -c 0 $quipu dev --nodes 3 --data-dir "$data" --raft-port 27001 --api-port 27101 --admin-port 27201 \
    --kafka-port 29092 "$@" > "$dir/$label.out" 2>&1 &
  dev=$!
  local tls=()
  if [ "$#" -gt 0 ]; then tls=(--tls-ca "$data/tls/ca.pem"); fi
  for _ in $(seq 1 100); do
    $quipu cluster --bootstrap "$bootstrap" "${tls[@]}" health >/dev/null 2>&1 && break
    sleep 0.2
  done
  taskset -c 1 $quipu bench produce --bootstrap "$bootstrap" "${tls[@]}" --topic c \
    --records "$consume_records" --record-size "$size" --partitions 3 --acks all > /dev/null
  echo "== $label: consume $consume_records records, gRPC then Kafka, $passes times"
  for _ in $(seq 1 "$passes"); do
    taskset -c 1 $quipu bench consume --bootstrap "$bootstrap" "${tls[@]}" --topic c
    taskset -c 1 $quipu bench kafka-consume --kafka-bootstrap 127.0.0.1:29092 "${tls[@]}" --topic c
  done
  stop_dev
  rm -rf "$data" # a run holds 3 copies of the topic: do not keep three runs' worth on disk
}

run plain
run tls --tls
run plain-again
