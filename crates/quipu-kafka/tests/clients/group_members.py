"""Two members of one consumer group, driven by crates/quipu-kafka/tests/t70_groups.rs.

usage: group_members.py CLIENT BOOTSTRAP TOPIC GROUP [member NAME]

With `member NAME`, runs one member only, forever, and prints its assignment (a JSON list of
partitions) each time it changes; the Rust test kills such members.

CLIENT is confluent-kafka, kafka-python or aiokafka (the classic protocol; confluent-kafka with
the range assignor, confluent-kafka-cooperative with cooperative-sticky, confluent-kafka-static
as static members), or confluent-kafka-consumer (group.protocol=consumer: KIP-848, the
coordinator assigns with `uniform`; confluent-kafka-consumer-range with `range`).

TOPIC has 4 partitions holding 10 records each. Members A and B subscribe to it in group GROUP
(classic protocol, range assignor), share its partitions, consume every record and commit what
they consumed. Then B leaves and A takes every partition; 20 more records are produced and A
consumes them, commits and leaves. Finally a third member C joins, gets every partition and
starts at the committed offsets, so it sees nothing before a last record it then consumes.
Prints one JSON object with what each step saw; exits non-zero, with the reason on stderr, on
the first failure.
"""

import asyncio
import json
import logging
import sys
import threading
import time

CLIENT, BOOTSTRAP, TOPIC, GROUP = sys.argv[1:5]
PARTITIONS = 4
DEADLINE_S = 45

# The Python clients' group coordinators log each join, sync and revocation: on stderr, which
# the test shows only when this script fails, so a failed rebalance can be read afterwards.
logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                    format="%(relativeCreated)8.0f ms %(threadName)s %(name)s: %(message)s")
for name in ("kafka.coordinator", "aiokafka.consumer.group_coordinator"):
    logging.getLogger(name).setLevel(logging.INFO)


def fail(message):
    print(f"{CLIENT}: {message}", file=sys.stderr)
    sys.exit(1)


class Seen:
    """What one member consumed, and its assignment, shared with the main thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.records = []
        self.assignment = set()
        self.member_id = None
        self.stop = threading.Event()


# Exceptions that ended a member's thread: reported at once, not as a later timeout.
ERRORS = []


# Every member started, by name: a failure reports what each had.
MEMBERS = {}


def members_state():
    parts = []
    for name, seen in MEMBERS.items():
        records, assignment = snapshot(seen)
        parts.append(f"{name}: assignment {sorted(assignment)}, {len(records)} records, "
                     f"member id {seen.member_id}, stopped {seen.stop.is_set()}")
    return "; ".join(parts)


def until(what, condition):
    deadline = time.time() + DEADLINE_S
    while not condition():
        if ERRORS:
            fail(f"a member failed while waiting for {what}: {ERRORS[0]} ({members_state()})")
        if time.time() > deadline:
            fail(f"timed out waiting for {what} ({members_state()})")
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# confluent-kafka (librdkafka)

def confluent_member(seen, client_id, kip848=False, assignor=None, static=False):
    from confluent_kafka import Consumer

    config = {
        "bootstrap.servers": BOOTSTRAP, "group.id": GROUP, "client.id": client_id,
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
    }
    if kip848:
        # The coordinator assigns (KIP-848); timeouts are the coordinator's.
        config.update({"group.protocol": "consumer",
                       "group.remote.assignor": assignor or "uniform"})
    else:
        config.update({"partition.assignment.strategy": assignor or "range",
                       "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    if static:
        # A static member (KIP-345): its instance id is its name's.
        config["group.instance.id"] = client_id
    consumer = Consumer(config)
    consumer.subscribe([TOPIC])
    while not seen.stop.is_set():
        msgs = consumer.consume(100, 0.2)
        for msg in msgs:
            if msg.error():
                fail(f"{client_id}: {msg.error()}")
        with seen.lock:
            seen.records.extend((m.partition(), m.offset()) for m in msgs)
            seen.assignment = {tp.partition for tp in consumer.assignment()}
            seen.member_id = consumer.memberid()
        if msgs:
            consumer.commit(asynchronous=False)
    consumer.close()


def confluent_produce(count, start):
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all"})
    for i in range(count):
        producer.produce(TOPIC, value=f"more-{start + i}".encode(), partition=i % PARTITIONS)
    if producer.flush(DEADLINE_S) != 0:
        fail("not every record was acknowledged")


# ---------------------------------------------------------------------------------------------
# kafka-python

def kafka_python_member(seen, client_id):
    from kafka import KafkaConsumer
    from kafka.coordinator.assignors.range import RangePartitionAssignor

    consumer = KafkaConsumer(
        TOPIC, bootstrap_servers=BOOTSTRAP, group_id=GROUP, client_id=client_id,
        enable_auto_commit=False, auto_offset_reset="earliest",
        partition_assignment_strategy=[RangePartitionAssignor],
        session_timeout_ms=6000, heartbeat_interval_ms=500)
    while not seen.stop.is_set():
        batches = consumer.poll(timeout_ms=200)
        got = [(tp.partition, m.offset) for tp, msgs in batches.items() for m in msgs]
        with seen.lock:
            seen.records.extend(got)
            seen.assignment = {tp.partition for tp in consumer.assignment()}
        if got:
            consumer.commit()
    consumer.close()


def kafka_python_produce(count, start):
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    for i in range(count):
        producer.send(TOPIC, value=f"more-{start + i}".encode(), partition=i % PARTITIONS)
    producer.flush(DEADLINE_S)
    producer.close()


# ---------------------------------------------------------------------------------------------
# aiokafka: each member runs its own event loop in a thread.

def aiokafka_member(seen, client_id):
    from aiokafka import AIOKafkaConsumer
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor

    async def main():
        consumer = AIOKafkaConsumer(
            TOPIC, bootstrap_servers=BOOTSTRAP, group_id=GROUP, client_id=client_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
            partition_assignment_strategy=[RangePartitionAssignor],
            session_timeout_ms=6000, heartbeat_interval_ms=500)
        await consumer.start()
        try:
            while not seen.stop.is_set():
                batches = await consumer.getmany(timeout_ms=200)
                got = [(tp.partition, m.offset) for tp, msgs in batches.items() for m in msgs]
                with seen.lock:
                    seen.records.extend(got)
                    seen.assignment = {tp.partition for tp in consumer.assignment()}
                if got:
                    await consumer.commit()
        finally:
            await consumer.stop()

    asyncio.run(main())


def aiokafka_produce(count, start):
    from aiokafka import AIOKafkaProducer

    async def main():
        producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
        await producer.start()
        try:
            for i in range(count):
                await producer.send_and_wait(TOPIC, value=f"more-{start + i}".encode(),
                                             partition=i % PARTITIONS)
        finally:
            await producer.stop()

    asyncio.run(main())


CLIENTS = {
    "confluent-kafka": (confluent_member, confluent_produce),
    "confluent-kafka-consumer": (lambda seen, client_id: confluent_member(seen, client_id, True),
                                 confluent_produce),
    "confluent-kafka-consumer-range": (
        lambda seen, client_id: confluent_member(seen, client_id, True, "range"),
        confluent_produce),
    "confluent-kafka-cooperative": (
        lambda seen, client_id: confluent_member(seen, client_id, False, "cooperative-sticky"),
        confluent_produce),
    "confluent-kafka-static": (
        lambda seen, client_id: confluent_member(seen, client_id, static=True),
        confluent_produce),
    "kafka-python": (kafka_python_member, kafka_python_produce),
    "aiokafka": (aiokafka_member, aiokafka_produce),
}
member, produce = CLIENTS[CLIENT]


def start(name):
    seen = Seen()

    def run():
        try:
            member(seen, f"{CLIENT}-{name}")
        except Exception as e:  # noqa: BLE001 - any failure of the client is the test's answer
            ERRORS.append(f"member {name}: {type(e).__name__}: {e}")

    thread = threading.Thread(target=run, name=name, daemon=True)
    MEMBERS[name] = seen
    thread.start()
    return seen, thread


def stop(seen, thread):
    seen.stop.set()
    thread.join(DEADLINE_S)
    if thread.is_alive():
        fail("a member did not leave in time")


def snapshot(seen):
    with seen.lock:
        return list(seen.records), set(seen.assignment)


if len(sys.argv) > 6 and sys.argv[5] == "member":
    seen, thread = start(sys.argv[6])
    shown = None
    while thread.is_alive():
        now = sorted(snapshot(seen)[1])
        if now != shown:
            print(json.dumps(now), flush=True)
            shown = now
        time.sleep(0.05)
    if ERRORS:
        fail(ERRORS[0])
    sys.exit(1)

a, a_thread = start("a")
b, b_thread = start("b")
until("A and B to share the partitions", lambda: (
    snapshot(a)[1] and snapshot(b)[1]
    and snapshot(a)[1] | snapshot(b)[1] == set(range(PARTITIONS))
    and not snapshot(a)[1] & snapshot(b)[1]))
shared = [sorted(snapshot(a)[1]), sorted(snapshot(b)[1])]
member_id = a.member_id
until("every record consumed", lambda: len(set(snapshot(a)[0]) | set(snapshot(b)[0])) >= 40)
first = sorted(set(snapshot(a)[0]) | set(snapshot(b)[0]))
stop(b, b_thread)
until("A to take every partition", lambda: snapshot(a)[1] == set(range(PARTITIONS)))
produce(20, 0)
until("A to consume the new records", lambda: len(set(snapshot(a)[0]) | set(first)) >= 60)
second = sorted(set(snapshot(a)[0]) | set(first))
stop(a, a_thread)
c, c_thread = start("c")
until("C to get every partition", lambda: snapshot(c)[1] == set(range(PARTITIONS)))
produce(1, 20)
until("C to consume the last record", lambda: len(snapshot(c)[0]) >= 1)
time.sleep(0.5)
last = sorted(set(snapshot(c)[0]))
stop(c, c_thread)
print(json.dumps({"shared": shared, "first": len(first), "second": len(second), "last": last,
                  "member_id": member_id}))
