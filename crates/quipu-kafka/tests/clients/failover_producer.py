"""A confluent-kafka producer that keeps producing through a leader failover, driven by
crates/quipu-kafka/tests/t40_failover.rs.

usage: failover_producer.py BOOTSTRAP TOPIC COUNT [idempotent]

Produces COUNT values "v-<i>" to partition 0 of TOPIC with acks=all, a few ms apart, and prints
"ack <i> <offset>" or "fail <i> <error>" per record as its delivery report arrives. Without
"idempotent", retries are off: a produce whose outcome is unknown is reported failed, never
resent, so a record can be stored once at most. With it, the producer is idempotent
(enable.idempotence: up to five requests in flight, retried until acknowledged within 60 s) and
the broker must store each record exactly once, in order.
"""

import sys
import time

from confluent_kafka import Producer

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
idempotent = sys.argv[4:] == ["idempotent"]
settings = {
    "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
    "topic.metadata.refresh.interval.ms": 1000,
}
if idempotent:
    settings.update({"enable.idempotence": True, "message.timeout.ms": 60000})
else:
    settings.update({
        "enable.idempotence": False, "message.send.max.retries": 0, "message.timeout.ms": 10000,
    })
producer = Producer(settings)


def report(err, msg):
    i = int(msg.value().decode().split("-")[1])
    if err is None:
        print(f"ack {i} {msg.offset()}", flush=True)
    else:
        print(f"fail {i} {err.name()}", flush=True)


for i in range(count):
    producer.produce(topic, value=f"v-{i}".encode(), partition=0, on_delivery=report)
    producer.poll(0.003)
producer.flush(30)
