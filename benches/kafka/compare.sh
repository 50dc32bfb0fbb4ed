#!/usr/bin/env bash
# The Kafka path beside the gRPC path and the storage engine, in one run on one machine:
# a release `quipu dev --nodes 3` cluster in a temporary directory, `quipu bench produce` and
# `consume` over gRPC beside `kafka-consume` (the Kafka protocol from Rust) on the same topic,
# then benches/kafka/bench.py (confluent-kafka) over the Kafka listener,
# with the same load: RECORDS records of SIZE bytes, acks=all, 3 partitions, replication 3 (and
# CONSUME_RECORDS records for the consume comparison); the
# storage engine alone on the same disk (the raw baseline) in the same run.
# Needs the Python clients and kcat that scripts/test.sh installs (it says so at once if they are
# missing). Figures go to docs/benchmarks.md by hand.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x target/kafka-clients/venv/bin/python ] || ! command -v kcat > /dev/null; then
  echo "benches/kafka/compare.sh needs the Python Kafka clients (target/kafka-clients/venv) and kcat: run 'bash scripts/test.sh' once, which installs both" >&2
  exit 1
fi
records="${1:-200000}"
size="${2:-1024}"
rate="${3:-10000}"
consume_records="${4:-1000000}"
cargo build --release -p quipu
dir="$(mktemp -d)"
target/release/quipu dev --nodes 3 --data-dir "$dir/dev" --raft-port 27001 --api-port 27101 --admin-port 27201 \
  --kafka-port 29092 > "$dir/dev.out" 2>&1 &
dev=$!
trap 'kill -TERM $dev 2>/dev/null; wait $dev 2>/dev/null; rm -rf "$dir"' EXIT
bootstrap=127.0.0.1:27101,127.0.0.1:27102,127.0.0.1:27103
for _ in $(seq 1 100); do
  target/release/quipu cluster health --bootstrap "$bootstrap" >/dev/null 2>&1 && break
  sleep 0.2
done
kafka=127.0.0.1:29092,127.0.0.1:29093,127.0.0.1:29094
python=target/kafka-clients/venv/bin/python
echo "== warming up: each topic created and given 20,000 records first (leader elections out of the way)"
target/release/quipu bench produce --bootstrap "$bootstrap" --topic grpc-bench --records 20000 \
  --record-size "$size" --partitions 3 --acks all > /dev/null
$python benches/kafka/bench.py "$kafka" kafka-bench 20000 "$size" 3 > /dev/null
echo "== gRPC (quipu bench): as fast as possible, then $rate records/s for latency"
target/release/quipu bench produce --bootstrap "$bootstrap" --topic grpc-bench --records "$records" \
  --record-size "$size" --partitions 3 --acks all --storage-baseline "$dir/baseline"
echo "== consume one topic of $consume_records records over gRPC and over the Kafka listener (the"
echo "   Kafka protocol from Rust, no client library: quipu bench kafka-consume), three times each,"
echo "   alternating"
target/release/quipu bench produce --bootstrap "$bootstrap" --topic consume-bench \
  --records "$consume_records" --record-size "$size" --partitions 3 --acks all > /dev/null
for _ in 1 2 3; do
  target/release/quipu bench consume --bootstrap "$bootstrap" --topic consume-bench
  target/release/quipu bench kafka-consume --kafka-bootstrap 127.0.0.1:29092 --topic consume-bench
done
target/release/quipu bench produce --bootstrap "$bootstrap" --topic grpc-bench --records $((rate * 10)) \
  --record-size "$size" --partitions 3 --acks all --rate "$rate"
echo "== Kafka (confluent-kafka over the Kafka listener): the same"
$python benches/kafka/bench.py "$kafka" kafka-bench "$records" "$size" 3
$python benches/kafka/bench.py "$kafka" kafka-bench $((rate * 10)) "$size" 3 "$rate"
echo "== Kafka consume with kcat (librdkafka, no per-record Python cost)"
start=$(date +%s%N)
read_count=$(kcat -b "$kafka" -C -t kafka-bench -o beginning -e -q -f '.\n' | wc -l)
elapsed_ns=$(( $(date +%s%N) - start ))
echo "$read_count records read in $((elapsed_ns / 1000000)) ms: $(( read_count * size * 1000 / (elapsed_ns / 1000000) / 1048576 )) MiB/s of values (kcat wall time, start-up included)"
