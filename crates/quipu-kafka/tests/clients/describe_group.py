"""Describes one consumer group with confluent-kafka's AdminClient (librdkafka picks
ConsumerGroupDescribe for a KIP-848 group, DescribeGroups for a classic one), driven by
crates/quipu-kafka/tests/t70_groups.rs.

usage: describe_group.py BOOTSTRAP GROUP

Prints one JSON object: the group's type and state, and per member its client id and partitions.
"""

import json
import sys

from confluent_kafka.admin import AdminClient

BOOTSTRAP, GROUP = sys.argv[1], sys.argv[2]
admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
described = admin.describe_consumer_groups([GROUP], request_timeout=10)[GROUP].result()
print(json.dumps({
    "type": str(getattr(described, "type", "")).split(".")[-1],
    "state": str(described.state).split(".")[-1],
    "members": sorted(
        [{"client_id": m.client_id,
          "partitions": sorted(tp.partition for tp in m.assignment.topic_partitions)}
         for m in described.members],
        key=lambda m: m["partitions"]),
}))
