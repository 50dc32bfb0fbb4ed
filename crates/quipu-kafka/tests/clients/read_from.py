"""Reads COUNT records of partition 0 of TOPIC from OFFSET with one Python Kafka client, driven
by crates/quipu-kafka/tests/t65_shared_entries.rs; prints "offset value" per record.

usage: read_from.py CLIENT BOOTSTRAP TOPIC OFFSET COUNT
"""

import asyncio
import sys
import time

CLIENT, BOOTSTRAP, TOPIC = sys.argv[1], sys.argv[2], sys.argv[3]
OFFSET, COUNT = int(sys.argv[4]), int(sys.argv[5])
DEADLINE_S = 30


def collect(poll):
    """Calls `poll` (which returns (offset, value) pairs) until COUNT records or the deadline."""
    out = []
    deadline = time.time() + DEADLINE_S
    while len(out) < COUNT and time.time() < deadline:
        out.extend(poll())
    return out


def confluent():
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(TOPIC, 0, OFFSET)])

    def poll():
        msgs = consumer.consume(COUNT, 1.0)
        for msg in msgs:
            if msg.error():
                sys.exit(f"consume error {msg.error()}")
        return [(msg.offset(), msg.value()) for msg in msgs]

    out = collect(poll)
    consumer.close()
    return out


def kafka_python():
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, group_id=None)
    tp = TopicPartition(TOPIC, 0)
    consumer.assign([tp])
    consumer.seek(tp, OFFSET)
    out = collect(lambda: [(m.offset, m.value) for msgs in consumer.poll(timeout_ms=1000).values() for m in msgs])
    consumer.close()
    return out


async def aiokafka_read():
    from aiokafka import AIOKafkaConsumer, TopicPartition
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(TOPIC, 0)
        consumer.assign([tp])
        consumer.seek(tp, OFFSET)
        out = []
        deadline = time.time() + DEADLINE_S
        while len(out) < COUNT and time.time() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=1000)).values():
                out.extend((m.offset, m.value) for m in msgs)
        return out
    finally:
        await consumer.stop()


records = {
    "confluent-kafka": confluent,
    "kafka-python": kafka_python,
    "aiokafka": lambda: asyncio.run(aiokafka_read()),
}[CLIENT]()
for offset, value in records[:COUNT]:
    print(offset, value.decode())
