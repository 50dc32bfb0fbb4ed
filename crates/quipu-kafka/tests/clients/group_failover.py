"""Two confluent-kafka members of one group consume while the group's coordinator crashes,
driven by crates/quipu-kafka/tests/t70_groups.rs.

usage: group_failover.py BOOTSTRAP TOPIC GROUP TOTAL

Members A and B subscribe to TOPIC in group GROUP and commit synchronously after each batch they
consume (a commit refused while the group moves to its new coordinator is left to the next
batch). They stop once TOTAL distinct records were consumed between them. Prints one JSON object:
distinct records consumed and deliveries in all (at-least-once: a record may come twice around
a rebalance). Exits non-zero, with the reason on stderr, if TOTAL is not reached in time.
"""

import json
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaException

BOOTSTRAP, TOPIC, GROUP, TOTAL = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
DEADLINE_S = 90

lock = threading.Lock()
seen = set()
deliveries = [0]
stop = threading.Event()


def member(name):
    consumer = Consumer({
        "bootstrap.servers": BOOTSTRAP, "group.id": GROUP, "client.id": name,
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
    })
    consumer.subscribe([TOPIC])
    while not stop.is_set():
        msgs = [m for m in consumer.consume(100, 0.2) if not m.error()]
        with lock:
            seen.update((m.partition(), m.offset()) for m in msgs)
            deliveries[0] += len(msgs)
            if len(seen) >= TOTAL:
                stop.set()
        if msgs:
            try:
                consumer.commit(asynchronous=False)
            except KafkaException:
                pass  # the coordinator moved or the group rebalances: the next batch commits
    consumer.close()


threads = [threading.Thread(target=member, args=(n,), daemon=True) for n in ("a", "b")]
for t in threads:
    t.start()
deadline = time.time() + DEADLINE_S
while not stop.is_set() and time.time() < deadline:
    time.sleep(0.1)
stop.set()
for t in threads:
    t.join(30)
with lock:
    if len(seen) < TOTAL:
        print(f"only {len(seen)} of {TOTAL} records consumed", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"distinct": len(seen), "deliveries": deliveries[0]}))
