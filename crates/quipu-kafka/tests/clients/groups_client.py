"""One Python Kafka client's committed offsets against a Quipu cluster, driven by
crates/quipu-kafka/tests/t70_groups.rs.

usage: groups_client.py CLIENT BOOTSTRAP TOPIC GROUP

TOPIC has 3 partitions holding 10 records each. The client assigns itself every partition (no
group membership), commits offsets 3, 5 and 7 with a metadata string for each, reads them back
with committed(), and then a second consumer of the same group, assigned without a position,
starts at the committed offsets. Prints one JSON object: per partition the committed offset and
metadata read back, and the offset of the first record the second consumer got. Exits non-zero,
with the reason on stderr, on the first failure.
"""

import asyncio
import json
import sys
import time

CLIENT, BOOTSTRAP, TOPIC, GROUP = sys.argv[1:5]
PARTITIONS = 3
COMMIT = {0: 3, 1: 5, 2: 7}
DEADLINE_S = 60


def fail(message):
    print(f"{CLIENT}: {message}", file=sys.stderr)
    sys.exit(1)


def metadata_of(partition):
    return f"{CLIENT}-meta-{partition}"


def confluent():
    from confluent_kafka import Consumer, TopicPartition

    config = {"bootstrap.servers": BOOTSTRAP, "group.id": GROUP, "enable.auto.commit": False}
    first = Consumer(config)
    first.assign([TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
    first.commit(
        offsets=[TopicPartition(TOPIC, p, o, metadata=metadata_of(p)) for p, o in COMMIT.items()],
        asynchronous=False,
    )
    committed = {}
    for tp in first.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=30):
        if tp.error:
            fail(f"committed: {tp.error}")
        committed[tp.partition] = [tp.offset, tp.metadata]
    first.close()
    second = Consumer(config)
    second.assign([TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
    resumed = {}
    deadline = time.time() + DEADLINE_S
    while len(resumed) < PARTITIONS and time.time() < deadline:
        for msg in second.consume(100, 1.0):
            if msg.error():
                fail(f"consume: {msg.error()}")
            resumed.setdefault(msg.partition(), msg.offset())
    second.close()
    return committed, resumed


def kafka_python():
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    def consumer():
        return KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=GROUP,
                             enable_auto_commit=False, consumer_timeout_ms=1000)

    tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    first = consumer()
    first.assign(tps)
    first.commit({TopicPartition(TOPIC, p): OffsetAndMetadata(o, metadata_of(p), -1)
                  for p, o in COMMIT.items()})
    committed = {}
    for tp in tps:
        got = first.committed(tp, metadata=True)
        if got is None:
            fail(f"committed: nothing for partition {tp.partition}")
        committed[tp.partition] = [got.offset, got.metadata]
    first.close()
    second = consumer()
    second.assign(tps)
    resumed = {}
    deadline = time.time() + DEADLINE_S
    while len(resumed) < PARTITIONS and time.time() < deadline:
        for tp, messages in second.poll(timeout_ms=1000).items():
            for msg in messages:
                resumed.setdefault(tp.partition, msg.offset)
    second.close()
    return committed, resumed


def aiokafka_client():
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import OffsetAndMetadata, TopicPartition

    async def main():
        tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        first = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=GROUP,
                                 enable_auto_commit=False)
        await first.start()
        try:
            first.assign(tps)
            await first.commit({TopicPartition(TOPIC, p): OffsetAndMetadata(o, metadata_of(p))
                                for p, o in COMMIT.items()})
            committed = {}
            for tp in tps:
                offset = await first.committed(tp)
                # aiokafka's committed() returns the offset only; its metadata is checked by
                # the Rust test on the coordinator.
                committed[tp.partition] = [offset, metadata_of(tp.partition)]
        finally:
            await first.stop()
        second = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=GROUP,
                                  enable_auto_commit=False)
        await second.start()
        resumed = {}
        try:
            second.assign(tps)
            deadline = time.time() + DEADLINE_S
            while len(resumed) < PARTITIONS and time.time() < deadline:
                batches = await second.getmany(timeout_ms=1000)
                for tp, messages in batches.items():
                    for msg in messages:
                        resumed.setdefault(tp.partition, msg.offset)
        finally:
            await second.stop()
        return committed, resumed

    return asyncio.run(main())


CLIENTS = {"confluent-kafka": confluent, "kafka-python": kafka_python, "aiokafka": aiokafka_client}
committed, resumed = CLIENTS[CLIENT]()
print(json.dumps({"committed": committed, "resumed": resumed}))
