"""Consumer groups through confluent-kafka's AdminClient, driven by
crates/quipu-kafka/tests/t70_groups.rs.

usage: group_admin.py BOOTSTRAP TOPIC

Group "admin-members" has one live member (subscribed to TOPIC); group "admin-simple" only
committed offsets (a consumer that assigned TOPIC's partitions itself). Lists the groups, describes
them, reads and alters committed offsets, tries to delete the live group (refused: it has a
member), deletes the simple one, then the first once its member left (waiting until the group is
empty). Prints one JSON object of
what was seen; exits non-zero, with the reason on stderr, on the first failure.
"""

import json
import sys
import time

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

BOOTSTRAP, TOPIC = sys.argv[1], sys.argv[2]
DEADLINE_S = 45


def fail(message):
    print(f"admin: {message}", file=sys.stderr)
    sys.exit(1)


def until(what, condition, deadline_s=DEADLINE_S):
    deadline = time.time() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.time() > deadline:
            fail(f"timed out waiting for {what}")
        time.sleep(0.1)


admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
out = {}

simple = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "admin-simple",
                   "enable.auto.commit": False})
simple.commit(offsets=[TopicPartition(TOPIC, 0, 4), TopicPartition(TOPIC, 1, 6)],
              asynchronous=False)
simple.close()

member = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "admin-members",
                   "client.id": "the-member", "enable.auto.commit": False,
                   "auto.offset.reset": "earliest"})
member.subscribe([TOPIC])
until("the member's assignment", lambda: member.consume(10, 0.2) is not None and member.assignment())


def listed():
    result = admin.list_consumer_groups(request_timeout=10).result()
    return {g.group_id: (str(g.state).split(".")[-1]) for g in result.valid}


out["listed"] = until("both groups listed", lambda: (lambda l: l if {"admin-members", "admin-simple"} <= set(l) else None)(listed()))
described = admin.describe_consumer_groups(["admin-members"], request_timeout=10)["admin-members"].result()
out["described"] = {
    "state": str(described.state).split(".")[-1],
    "members": [{"client_id": m.client_id,
                 "partitions": sorted(tp.partition for tp in m.assignment.topic_partitions)}
                for m in described.members],
}
offsets = admin.list_consumer_group_offsets(
    [ConsumerGroupTopicPartitions("admin-simple")], request_timeout=10)["admin-simple"].result()
out["simple_offsets"] = sorted((tp.partition, tp.offset) for tp in offsets.topic_partitions)
altered = admin.alter_consumer_group_offsets(
    [ConsumerGroupTopicPartitions("admin-simple", [TopicPartition(TOPIC, 0, 9)])])["admin-simple"].result()
offsets = admin.list_consumer_group_offsets(
    [ConsumerGroupTopicPartitions("admin-simple")], request_timeout=10)["admin-simple"].result()
out["altered_offsets"] = sorted((tp.partition, tp.offset) for tp in offsets.topic_partitions)

# OffsetDelete through kafka-python: refused for the live group's subscribed topic, done for the
# simple group.
from kafka import KafkaAdminClient, TopicPartition as KTopicPartition

kadmin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
refused = kadmin.delete_group_offsets("admin-members", [KTopicPartition(TOPIC, 0)])
out["offset_delete_live"] = [e.__name__ for e in refused.values()]
deleted = kadmin.delete_group_offsets("admin-simple", [KTopicPartition(TOPIC, 1)])
out["offset_delete_simple"] = [e.__name__ for e in deleted.values()]
offsets = admin.list_consumer_group_offsets(
    [ConsumerGroupTopicPartitions("admin-simple")], request_timeout=10)["admin-simple"].result()
out["after_offset_delete"] = sorted((tp.partition, tp.offset) for tp in offsets.topic_partitions)
kadmin.close()

try:
    admin.delete_consumer_groups(["admin-members"], request_timeout=10)["admin-members"].result()
    out["delete_live"] = "deleted"
except KafkaException as e:
    out["delete_live"] = e.args[0].name()
admin.delete_consumer_groups(["admin-simple"], request_timeout=10)["admin-simple"].result()
closed_at = time.time()
member.close()


def members_left():
    group = admin.describe_consumer_groups(["admin-members"], request_timeout=10)["admin-members"].result()
    return str(group.state).split(".")[-1] == "EMPTY"


# librdkafka's close() sends LeaveGroup only while its coordinator connection is up; otherwise
# the member stays until its session times out (45 s by default), and a delete meanwhile is
# rightly refused (NON_EMPTY_GROUP, as Kafka would). Wait for the group to be empty first, and
# say how long that took (about 0 s when LeaveGroup was sent).
until("the member to be gone after close()", members_left, deadline_s=60)
out["empty_after_close_s"] = round(time.time() - closed_at, 1)
if out["empty_after_close_s"] > 5:
    print(f"admin: the group emptied {out['empty_after_close_s']} s after close()", file=sys.stderr)
admin.delete_consumer_groups(["admin-members"], request_timeout=10)["admin-members"].result()
try:
    admin.delete_consumer_groups(["admin-members"], request_timeout=10)["admin-members"].result()
    out["delete_again"] = "deleted"
except KafkaException as e:
    out["delete_again"] = e.args[0].name()
out["listed_after"] = sorted(listed())
print(json.dumps(out))
