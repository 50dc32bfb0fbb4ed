"""Produce and consume throughput and latency through Quipu's Kafka listener with a real Kafka
client (confluent-kafka, i.e. librdkafka), with the same shape of load as `quipu bench`.

usage: bench.py BOOTSTRAP TOPIC RECORDS RECORD_SIZE PARTITIONS [RATE]

Creates TOPIC (PARTITIONS partitions, replication factor 3) through the admin API, produces
RECORDS records of RECORD_SIZE bytes with acks=all (batches up to 64 KiB, linger 5 ms, like
`quipu bench produce`'s defaults), and reports throughput and the produce latency of each record
(from produce() to its delivery report, percentiles over every record; as fast as possible the
latency is mostly time queued in the client, so measure latency with RATE records/s). Then
consumes the topic from the start and reports throughput (a Python consumer: its own per-record
cost bounds this figure; compare.sh also times kcat). Prints one JSON object.
"""

import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, topic, records, size, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rate = int(sys.argv[6]) if len(sys.argv) > 6 else 0
admin = AdminClient({"bootstrap.servers": bootstrap})
if topic not in admin.list_topics(timeout=10).topics:
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=3)])[topic].result(30)

producer = Producer({
    "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "batch.size": 64 * 1024,
    "enable.idempotence": False, "queue.buffering.max.kbytes": 256 * 1024,
    "queue.buffering.max.messages": 1000000,
})
value = b"x" * size
latencies = []
failed = 0


def report(err, msg, sent):
    global failed
    if err is not None:
        failed += 1
    else:
        latencies.append(time.perf_counter() - sent)


start = time.perf_counter()
for i in range(records):
    if rate:
        due = start + i / rate
        while time.perf_counter() < due:
            producer.poll(0.0005)
    sent = time.perf_counter()
    while True:
        try:
            producer.produce(topic, value=value, key=str(i).encode(), on_delivery=lambda err, msg, sent=sent: report(err, msg, sent))
            break
        except BufferError:
            producer.poll(0.001)
    if i % 1000 == 0:
        producer.poll(0)
producer.flush(120)
produce_s = time.perf_counter() - start
if failed:
    sys.exit(f"{failed} records were not acknowledged")

consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False,
                     "fetch.max.bytes": 50 * 1024 * 1024, "max.partition.fetch.bytes": 16 * 1024 * 1024})
consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
records_total = sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions))
read = 0
start = time.perf_counter()
while read < records_total:
    for msg in consumer.consume(10000, 1.0):
        if msg.error():
            sys.exit(f"consume error: {msg.error()}")
        read += 1
consume_s = time.perf_counter() - start
consumer.close()

latencies.sort()
mib = records * size / (1024 * 1024)


def pct(p):
    return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000, 2)


print(json.dumps({
    "rate": rate, "records": records, "record_size": size, "partitions": partitions,
    "produce_mib_s": round(mib / produce_s, 1), "produce_records_s": round(records / produce_s),
    "latency_ms": {"p50": pct(50), "p99": pct(99), "p999": pct(99.9), "max": round(latencies[-1] * 1000, 2)},
    "consume_records": records_total,
    "consume_mib_s": round(records_total * size / (1024 * 1024) / consume_s, 1),
    "consume_records_s": round(records_total / consume_s),
}))
