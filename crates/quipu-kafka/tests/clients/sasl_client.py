"""Kafka clients with SASL over TLS, driven by crates/quipu-kafka/tests/t91_sasl.rs.

usage: sasl_client.py BOOTSTRAP CA_FILE TOPIC

As the user "admin" (SCRAM-SHA-512, made by the test), confluent-kafka's admin client creates
the user "alice" (SCRAM-SHA-256, AlterUserScramCredentials) and reads it back
(DescribeUserScramCredentials). Then alice produces with confluent-kafka (SCRAM-SHA-256), reads
back with confluent-kafka over PLAIN, produces and reads with kafka-python (SCRAM-SHA-256), and a
wrong password is refused. Prints one JSON object; exits non-zero with the reason on stderr on
the first surprise.
"""

import json
import sys
import time

BOOTSTRAP, CA, TOPIC = sys.argv[1:4]
DEADLINE_S = 60


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def confluent_config(user, password, mechanism):
    return {
        "bootstrap.servers": BOOTSTRAP, "security.protocol": "SASL_SSL", "ssl.ca.location": CA,
        "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password,
    }


def main():
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition, OFFSET_BEGINNING
    from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                       UserScramCredentialUpsertion, NewTopic)

    admin = AdminClient(confluent_config("admin", "admin-secret", "SCRAM-SHA-512"))
    futures = admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
        "alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"alice-secret")])
    for future in futures.values():
        future.result(DEADLINE_S)
    described = admin.describe_user_scram_credentials(["alice"])
    infos = described["alice"].result(DEADLINE_S).scram_credential_infos
    if [(i.mechanism, i.iterations) for i in infos] != [(ScramMechanism.SCRAM_SHA_256, 4096)]:
        fail(f"alice is described as {infos}")
    admin.create_topics([NewTopic(TOPIC, 1, 3)])[TOPIC].result(DEADLINE_S)

    producer = Producer({**confluent_config("alice", "alice-secret", "SCRAM-SHA-256"), "acks": "all"})
    for i in range(100):
        producer.produce(TOPIC, value=f"confluent-{i}".encode(), partition=0)
    if producer.flush(DEADLINE_S) != 0:
        fail("confluent-kafka: not every record was acknowledged")

    from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KTopicPartition
    sasl = dict(bootstrap_servers=BOOTSTRAP, security_protocol="SASL_SSL", ssl_cafile=CA,
                sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="alice",
                sasl_plain_password="alice-secret")
    kp = KafkaProducer(acks="all", **sasl)
    for i in range(50):
        kp.send(TOPIC, value=f"kafka-python-{i}".encode(), partition=0).get(DEADLINE_S)
    kp.close()
    kc = KafkaConsumer(enable_auto_commit=False, group_id=None, **sasl)
    tp = KTopicPartition(TOPIC, 0)
    kc.assign([tp])
    kc.seek_to_beginning(tp)
    seen = []
    deadline = time.time() + DEADLINE_S
    while len(seen) < 150 and time.time() < deadline:
        for _, msgs in kc.poll(timeout_ms=1000).items():
            seen.extend(m.value for m in msgs)
    kc.close()
    if len(seen) != 150:
        fail(f"kafka-python read {len(seen)} records, not 150")

    consumer = Consumer({**confluent_config("alice", "alice-secret", "PLAIN"),
                         "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(TOPIC, 0, OFFSET_BEGINNING)])
    read = []
    deadline = time.time() + DEADLINE_S
    while len(read) < 150 and time.time() < deadline:
        for msg in consumer.consume(1000, 1.0):
            if msg.error():
                fail(f"consume error {msg.error()}")
            read.append(msg.value())
    consumer.close()
    if read != seen:
        fail("confluent-kafka over PLAIN read other records than kafka-python")

    refused = 0
    for mechanism in ["SCRAM-SHA-256", "PLAIN"]:
        wrong = AdminClient(confluent_config("alice", "not-her-password", mechanism))
        try:
            wrong.list_topics(timeout=10)
        except KafkaException:
            refused += 1
    if refused != 2:
        fail("a wrong password was accepted")
    print(json.dumps({"read": len(read), "refused": refused}))


main()
