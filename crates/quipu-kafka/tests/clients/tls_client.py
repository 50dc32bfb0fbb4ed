"""A Python Kafka client over TLS with a client certificate, driven by
crates/quipu-kafka/tests/t90_tls.rs.

usage: tls_client.py CLIENT BOOTSTRAP TOPIC CA_FILE CERT_FILE KEY_FILE COUNT

Produces COUNT records (acks=all) over SSL, presenting CERT_FILE, reads them back from the
beginning and checks each value and offset. Prints one JSON object with what it checked; exits
non-zero, with the reason on stderr, on the first mismatch.
"""

import json
import sys
import time

CLIENT, BOOTSTRAP, TOPIC, CA, CERT, KEY = sys.argv[1:7]
COUNT = int(sys.argv[7])
DEADLINE_S = 60


def fail(message):
    print(f"{CLIENT}: {message}", file=sys.stderr)
    sys.exit(1)


def values():
    return [f"secret-{i}".encode() for i in range(COUNT)]


def confluent():
    from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING

    ssl = {
        "bootstrap.servers": BOOTSTRAP, "security.protocol": "SSL", "ssl.ca.location": CA,
        "ssl.certificate.location": CERT, "ssl.key.location": KEY,
    }
    producer = Producer({**ssl, "acks": "all", "enable.idempotence": True})
    delivered = []

    def report(err, msg):
        if err is not None:
            fail(f"delivery failed: {err}")
        delivered.append(msg.offset())

    for value in values():
        producer.produce(TOPIC, value=value, partition=0, on_delivery=report)
    if producer.flush(DEADLINE_S) != 0:
        fail("not every record was acknowledged")
    consumer = Consumer({**ssl, "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(TOPIC, 0, OFFSET_BEGINNING)])
    consumed = []
    deadline = time.time() + DEADLINE_S
    while len(consumed) < COUNT and time.time() < deadline:
        for msg in consumer.consume(1000, 1.0):
            if msg.error():
                fail(f"consume error {msg.error()}")
            consumed.append((msg.offset(), msg.value()))
    consumer.close()
    return sorted(delivered), consumed


def kafka_python():
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    ssl = dict(
        bootstrap_servers=BOOTSTRAP, security_protocol="SSL", ssl_cafile=CA,
        ssl_certfile=CERT, ssl_keyfile=KEY, ssl_check_hostname=True,
    )
    producer = KafkaProducer(acks="all", **ssl)
    futures = [producer.send(TOPIC, value=value, partition=0) for value in values()]
    producer.flush(DEADLINE_S)
    delivered = sorted(f.get(DEADLINE_S).offset for f in futures)
    producer.close()
    consumer = KafkaConsumer(enable_auto_commit=False, group_id=None, **ssl)
    tp = TopicPartition(TOPIC, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    consumed = []
    deadline = time.time() + DEADLINE_S
    while len(consumed) < COUNT and time.time() < deadline:
        for _, msgs in consumer.poll(timeout_ms=1000).items():
            consumed.extend((m.offset, m.value) for m in msgs)
    consumer.close()
    return delivered, consumed


delivered, consumed = {"confluent-kafka": confluent, "kafka-python": kafka_python}[CLIENT]()
if delivered != list(range(COUNT)):
    fail(f"acknowledged at {delivered[:5]}..., expected 0..{COUNT}")
if consumed != list(enumerate(values())):
    fail(f"consumed {len(consumed)} records, not what was produced")
print(json.dumps({"client": CLIENT, "produced": len(delivered), "consumed": len(consumed)}))
