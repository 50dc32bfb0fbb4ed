"""Partition reassignment and leader election through kafka-python's KafkaAdminClient (and
confluent-kafka's elect_leaders), driven by crates/quipu-kafka/tests/t80_reassign.rs.

usage: reassign_client.py BOOTSTRAP TOPIC REPLICAS

Produces 1,000 records of 512 bytes to TOPIC (2 partitions, replication factor 3, created
here; one record per batch, so partition 0's log is 500 entries of about 0.5 KiB), moves
partition 0 to REPLICAS (comma-separated broker ids) with AlterPartitionReassignments, lists the
move with ListPartitionReassignments until it is done, refuses a move of the wrong size and the
cancellation of a move that is not under way, reads every record back, and asks for preferred
leader elections (kafka-python, then confluent-kafka). Prints one JSON object of what it saw;
exits non-zero on the first surprise.
"""

import json
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

BOOTSTRAP, TOPIC, REPLICAS = sys.argv[1], sys.argv[2], [int(r) for r in sys.argv[3].split(",")]
seen = {}


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


RECORDS = 1000


def value(i):
    return f"v{i}".ljust(512, ".").encode()


admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
admin.create_topics([NewTopic(TOPIC, num_partitions=2, replication_factor=3)])
# batch_size=1: every record is a batch of its own (one Raft entry).
producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", batch_size=1)
deadline = time.time() + 30
for i in range(2):
    while True:
        try:
            producer.send(TOPIC, value=value(i), partition=i % 2).get(timeout=10)
            break
        except Exception as e:  # a new topic's leaders are being elected
            if time.time() > deadline:
                fail(f"produce: {e!r}")
            time.sleep(0.2)
# The leaders are known: the rest in flight together (no retries, so in order or a failure).
sent = [producer.send(TOPIC, value=value(i), partition=i % 2) for i in range(2, RECORDS)]
producer.flush()
for future in sent:
    future.get(timeout=10)

tp0 = TopicPartition(TOPIC, 0)
result = admin.alter_partition_reassignments({tp0: REPLICAS})
if result.get(tp0) is not None:
    fail(f"reassignment refused: {result}")
listed = []
deadline = time.time() + 60
while True:
    ongoing = admin.list_partition_reassignments()
    if tp0 in ongoing:
        listed.append(ongoing[tp0])
    elif time.time() > deadline:
        fail("the move never completed")
    if tp0 not in ongoing:
        break
    time.sleep(0.1)
seen["listed_while_moving"] = listed[:1]
# Wrong size: refused with INVALID_REPLICATION_FACTOR; nothing to cancel: NO_REASSIGNMENT_IN_PROGRESS.
wrong = admin.alter_partition_reassignments({TopicPartition(TOPIC, 1): REPLICAS[:2]})
seen["wrong_size"] = wrong[TopicPartition(TOPIC, 1)].__name__
cancel = admin.alter_partition_reassignments({TopicPartition(TOPIC, 1): None})
seen["cancel_idle"] = cancel[TopicPartition(TOPIC, 1)].__name__

consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, auto_offset_reset="earliest",
                         consumer_timeout_ms=10000)
consumer.assign([TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)])
values = sorted((m.partition, m.offset, m.value.decode().rstrip(".")) for m in consumer)
seen["consumed"] = len(values)
half = RECORDS // 2
seen["in_order"] = all(values[i][2] == f"v{2 * i}" for i in range(half)) and all(
    values[half + i][2] == f"v{2 * i + 1}" for i in range(half))

response = admin.elect_leaders(0, {TOPIC: [0, 1]}, raise_errors=False)
codes = sorted(p.error_code for r in response.replica_election_results for p in r.partition_result)
seen["kafka_python_election_codes"] = codes

from confluent_kafka import ElectionType, KafkaException
from confluent_kafka import TopicPartition as CTopicPartition
from confluent_kafka.admin import AdminClient

confluent = AdminClient({"bootstrap.servers": BOOTSTRAP})
try:
    elected = confluent.elect_leaders(ElectionType.PREFERRED,
                                      [CTopicPartition(TOPIC, 0), CTopicPartition(TOPIC, 1)]).result(30)
    seen["confluent_election"] = sorted(
        (tp.partition, err.name() if err is not None else "NONE")
        for tp, err in elected.items())
except KafkaException as e:
    # A per-partition refusal (the preferred replica leads already) fails the whole future.
    seen["confluent_election"] = [e.args[0].name()]
print(json.dumps(seen))
