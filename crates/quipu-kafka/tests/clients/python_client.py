"""One Python Kafka client against a Quipu cluster, driven by crates/quipu-kafka/tests/t20_python.rs.

usage: python_client.py CLIENT BOOTSTRAP TOPIC_PREFIX COUNT

For each compression codec the client supports: produce COUNT keyed records with a header
(acks=all), read them back by partition from the beginning, and check each record's key, value,
headers, partition and offset against what the producer was told. Then the offsets of each
partition (earliest, latest) and an offset by timestamp. Prints one JSON object: the partition of
every key (the Rust test checks it against Quipu's murmur2 partitioner) and what was checked.
Exits non-zero, with the reason on stderr, on the first mismatch.
"""

import asyncio
import json
import sys
import time

CLIENT, BOOTSTRAP, PREFIX, COUNT = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
DEADLINE_S = 60


def fail(message):
    print(f"{CLIENT}: {message}", file=sys.stderr)
    sys.exit(1)


def records():
    for i in range(COUNT):
        yield f"key-{i}".encode(), f"value-{i}-{'x' * (i % 50)}".encode(), [("n", str(i).encode())]


def check(codec, delivered, consumed):
    """delivered: key -> (partition, offset); consumed: list of (partition, offset, key, value, headers)."""
    if len(consumed) != COUNT:
        fail(f"{codec}: consumed {len(consumed)} records, produced {COUNT}")
    seen = set()
    expected = {k: (v, h) for k, v, h in records()}
    for partition, offset, key, value, headers in consumed:
        if key in seen:
            fail(f"{codec}: {key!r} consumed twice")
        seen.add(key)
        want_value, want_headers = expected[key]
        if value != want_value:
            fail(f"{codec}: {key!r} has value {value!r}, produced {want_value!r}")
        if list(headers) != want_headers:
            fail(f"{codec}: {key!r} has headers {headers!r}, produced {want_headers!r}")
        if delivered[key] != (partition, offset):
            fail(f"{codec}: {key!r} at {(partition, offset)}, acknowledged at {delivered[key]}")


def confluent():
    from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING

    partitions_of = {}
    for codec in CODECS:
        topic = f"{PREFIX}-{codec}"
        producer = Producer({
            "bootstrap.servers": BOOTSTRAP, "acks": "all", "compression.type": codec,
            "enable.idempotence": True, "partitioner": "murmur2_random", "linger.ms": 5,
        })
        delivered = {}

        def report(err, msg):
            if err is not None:
                fail(f"{codec}: delivery failed: {err}")
            delivered[msg.key()] = (msg.partition(), msg.offset())

        for key, value, headers in records():
            while True:
                try:
                    producer.produce(topic, value=value, key=key, headers=headers, on_delivery=report)
                    break
                except BufferError:
                    producer.poll(0.1)
        if producer.flush(DEADLINE_S) != 0:
            fail(f"{codec}: not every record was acknowledged")
        partitions = sorted({p for p, _ in delivered.values()})
        consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "unused", "enable.auto.commit": False})
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        consumed = []
        deadline = time.time() + DEADLINE_S
        while len(consumed) < COUNT and time.time() < deadline:
            for msg in consumer.consume(1000, 1.0):
                if msg.error():
                    fail(f"{codec}: consume error {msg.error()}")
                consumed.append((msg.partition(), msg.offset(), msg.key(), msg.value(), msg.headers() or []))
        check(codec, delivered, consumed)
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            count = sum(1 for q, _ in delivered.values() if q == p)
            if (low, high) != (0, count):
                fail(f"{codec}: partition {p} offsets {(low, high)}, expected (0, {count})")
        consumer.close()
        partitions_of.update({k.decode(): p for k, (p, _) in delivered.items()})
    return partitions_of, by_timestamp_confluent()


def by_timestamp_confluent():
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
    topic = f"{PREFIX}-time"
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all"})
    producer.produce(topic, value=b"early", partition=0)
    producer.flush(DEADLINE_S)
    mark = int(time.time() * 1000) + 1
    time.sleep(0.01)
    producer.produce(topic, value=b"late", partition=0)
    producer.flush(DEADLINE_S)
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "unused"})
    # The broker asked may not have applied the topic's creation yet (librdkafka then fails
    # with "unknown partition" instead of waiting, as the other clients do): ask again, bounded.
    deadline = time.time() + DEADLINE_S
    while True:
        try:
            [found] = consumer.offsets_for_times([TopicPartition(topic, 0, mark)], timeout=10)
            break
        except KafkaException as e:
            if time.time() > deadline or e.args[0].code() not in (KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART):
                raise
            time.sleep(0.2)
    consumer.close()
    return found.offset


def kafka_python():
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    partitions_of = {}
    for codec in CODECS:
        topic = f"{PREFIX}-{codec}"
        producer = KafkaProducer(
            bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5, enable_idempotence=True,
            compression_type=None if codec == "none" else codec,
        )
        futures = [(key, producer.send(topic, key=key, value=value, headers=headers)) for key, value, headers in records()]
        producer.flush(DEADLINE_S)
        delivered = {}
        for key, future in futures:
            meta = future.get(DEADLINE_S)
            delivered[key] = (meta.partition, meta.offset)
        producer.close()
        partitions = sorted({p for p, _ in delivered.values()})
        consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, group_id=None)
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        consumed = []
        deadline = time.time() + DEADLINE_S
        while len(consumed) < COUNT and time.time() < deadline:
            for tp, msgs in consumer.poll(timeout_ms=1000).items():
                consumed.extend((m.partition, m.offset, m.key, m.value, m.headers) for m in msgs)
        check(codec, delivered, consumed)
        ends = consumer.end_offsets(tps)
        starts = consumer.beginning_offsets(tps)
        for tp in tps:
            count = sum(1 for q, _ in delivered.values() if q == tp.partition)
            if (starts[tp], ends[tp]) != (0, count):
                fail(f"{codec}: partition {tp.partition} offsets {(starts[tp], ends[tp])}, expected (0, {count})")
        consumer.close()
        partitions_of.update({k.decode(): p for k, (p, _) in delivered.items()})
    topic = f"{PREFIX}-time"
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    producer.send(topic, value=b"early", partition=0).get(DEADLINE_S)
    mark = int(time.time() * 1000) + 1
    time.sleep(0.01)
    producer.send(topic, value=b"late", partition=0).get(DEADLINE_S)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=None)
    found = consumer.offsets_for_times({TopicPartition(topic, 0): mark})[TopicPartition(topic, 0)]
    consumer.close()
    return partitions_of, found.offset


def aiokafka_client():
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    async def run():
        partitions_of = {}
        for codec in CODECS:
            topic = f"{PREFIX}-{codec}"
            producer = AIOKafkaProducer(
                bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5, enable_idempotence=True,
                compression_type=None if codec == "none" else codec,
            )
            await producer.start()
            futures = [(key, await producer.send(topic, key=key, value=value, headers=headers)) for key, value, headers in records()]
            delivered = {}
            for key, future in futures:
                meta = await future
                delivered[key] = (meta.partition, meta.offset)
            await producer.stop()
            partitions = sorted({p for p, _ in delivered.values()})
            consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, group_id=None)
            await consumer.start()
            tps = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            consumed = []
            deadline = time.time() + DEADLINE_S
            while len(consumed) < COUNT and time.time() < deadline:
                batches = await consumer.getmany(timeout_ms=1000)
                for tp, msgs in batches.items():
                    consumed.extend((m.partition, m.offset, m.key, m.value, list(m.headers)) for m in msgs)
            check(codec, delivered, consumed)
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            for tp in tps:
                count = sum(1 for q, _ in delivered.values() if q == tp.partition)
                if (starts[tp], ends[tp]) != (0, count):
                    fail(f"{codec}: partition {tp.partition} offsets {(starts[tp], ends[tp])}, expected (0, {count})")
            await consumer.stop()
            partitions_of.update({k.decode(): p for k, (p, _) in delivered.items()})
        topic = f"{PREFIX}-time"
        producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
        await producer.start()
        await producer.send_and_wait(topic, value=b"early", partition=0)
        mark = int(time.time() * 1000) + 1
        await asyncio.sleep(0.01)
        await producer.send_and_wait(topic, value=b"late", partition=0)
        await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=None)
        await consumer.start()
        found = (await consumer.offsets_for_times({TopicPartition(topic, 0): mark}))[TopicPartition(topic, 0)]
        await consumer.stop()
        return partitions_of, found.offset

    return asyncio.run(run())


partitions, timestamp_offset = {"confluent-kafka": confluent, "kafka-python": kafka_python, "aiokafka": aiokafka_client}[CLIENT]()
print(json.dumps({"partitions": partitions, "timestamp_offset": timestamp_offset, "codecs": CODECS}))
