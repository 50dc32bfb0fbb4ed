"""The admin API of a Python Kafka client against a Quipu cluster, driven by
crates/quipu-kafka/tests/t50_admin.rs.

usage: admin_client.py CLIENT BOOTSTRAP TOPIC

Creates TOPIC (3 partitions, retention.ms set) after a validate_only try; refuses a duplicate,
an unknown config and cleanup.policy=compact; describes its configs (value and whether each is
the default); changes one with an incremental alter and reads it back; grows it to 5 partitions;
deletes it. Prints one JSON object of what it saw; exits non-zero on the first surprise.
"""

import asyncio
import json
import sys
import time

CLIENT, BOOTSTRAP, TOPIC = sys.argv[1], sys.argv[2], sys.argv[3]
seen = {}


def fail(message):
    print(f"{CLIENT}: {message}", file=sys.stderr)
    sys.exit(1)


def confluent():
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                       NewPartitions, NewTopic, ResourceType)

    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})

    def wait(futures):
        return {k: f.result(30) for k, f in futures.items()}

    topic = NewTopic(TOPIC, num_partitions=3, replication_factor=3, config={"retention.ms": "3600000"})
    wait(admin.create_topics([topic], validate_only=True))
    if TOPIC in admin.list_topics(timeout=10).topics:
        fail("validate_only created the topic")
    wait(admin.create_topics([topic]))
    for bad, code in [(topic, "TOPIC_ALREADY_EXISTS"),
                      (NewTopic(TOPIC + "-x", 1, 1, config={"no.such.config": "1"}), "INVALID_CONFIG"),
                      (NewTopic(TOPIC + "-y", 1, 1, config={"cleanup.policy": "compact"}), "INVALID_CONFIG")]:
        try:
            wait(admin.create_topics([bad]))
            fail(f"{bad.topic} was created")
        except KafkaException as e:
            if e.args[0].name() != code:
                fail(f"{bad.topic}: {e.args[0].name()}, expected {code}")
    seen["refused"] = True
    resource = ConfigResource(ResourceType.TOPIC, TOPIC)
    configs = wait(admin.describe_configs([resource]))[resource]
    seen["described"] = {name: [entry.value, entry.is_default] for name, entry in configs.items()}
    change = ConfigResource(ResourceType.TOPIC, TOPIC, incremental_configs=[
        ConfigEntry("retention.bytes", "1048576", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)])
    wait(admin.incremental_alter_configs([change]))
    deadline = time.time() + 30
    while True:
        # The broker answering may apply the committed change a moment later.
        configs = wait(admin.describe_configs([resource]))[resource]
        seen["altered"] = {name: [entry.value, entry.is_default] for name, entry in configs.items()}
        if seen["altered"]["retention.bytes"][0] == "1048576" or time.time() > deadline:
            break
        time.sleep(0.1)
    wait(admin.create_partitions([NewPartitions(TOPIC, 5)]))
    seen["partitions"] = len(admin.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions)
    # ListOffsets MAX_TIMESTAMP (v7): the record with the largest timestamp.
    from confluent_kafka import Producer, TopicPartition
    from confluent_kafka.admin import OffsetSpec
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all", "linger.ms": 0})
    for ts in (1_000_000, 5_000_000, 3_000_000):
        producer.produce(TOPIC, value=b"v", partition=0, timestamp=ts)
        producer.flush(30)
    [result] = admin.list_offsets({TopicPartition(TOPIC, 0): OffsetSpec.max_timestamp()}).values()
    info = result.result(30)
    seen["max_timestamp"] = [info.offset, info.timestamp]
    # message.timestamp.type=LogAppendTime, set live: the leader stamps the batch with its clock,
    # the delivery report and the consumer both see that time, as LOG_APPEND_TIME.
    from confluent_kafka import Consumer, TIMESTAMP_LOG_APPEND_TIME
    wait(admin.incremental_alter_configs([ConfigResource(ResourceType.TOPIC, TOPIC, incremental_configs=[
        ConfigEntry("message.timestamp.type", "LogAppendTime", incremental_operation=AlterConfigOpType.SET)])]))
    delivered = []
    before = int(time.time() * 1000)
    deadline = time.time() + 30
    while not delivered:
        # Until every replica applied the change (their settings change live, in log order).
        producer.produce(TOPIC, value=b"stamped", partition=1, timestamp=2_000_000,
                         on_delivery=lambda err, msg: delivered.append(msg.timestamp()) if err is None
                         and msg.timestamp()[0] == TIMESTAMP_LOG_APPEND_TIME else None)
        producer.flush(30)
        if time.time() > deadline:
            fail("no batch was stamped with the log append time")
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(TOPIC, 1, 0)])
    consumed = None
    while consumed is None and time.time() < deadline:
        for msg in consumer.consume(100, 1.0):
            if msg.value() == b"stamped" and msg.timestamp()[0] == TIMESTAMP_LOG_APPEND_TIME:
                consumed = msg.timestamp()
    consumer.close()
    (kind, stamp) = delivered[0]
    seen["log_append_time"] = [stamp >= before, consumed == (kind, stamp)]
    configs = wait(admin.describe_configs([resource]))[resource]
    seen["timestamp_type"] = configs["message.timestamp.type"].value
    wait(admin.delete_topics([TOPIC]))
    deadline = time.time() + 30
    while TOPIC in admin.list_topics(timeout=10).topics:
        if time.time() > deadline:
            fail("the deleted topic is still listed")
        time.sleep(0.1)
    seen["deleted"] = True


def kafka_python():
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewPartitions, NewTopic
    from kafka.errors import InvalidConfigurationError, TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    topic = NewTopic(TOPIC, num_partitions=3, replication_factor=3, topic_configs={"retention.ms": "3600000"})
    admin.create_topics([topic], validate_only=True)
    if TOPIC in admin.list_topics():
        fail("validate_only created the topic")
    admin.create_topics([topic])
    for bad, error in [(topic, TopicAlreadyExistsError),
                       (NewTopic(TOPIC + "-x", 1, 1, topic_configs={"no.such.config": "1"}), InvalidConfigurationError),
                       (NewTopic(TOPIC + "-y", 1, 1, topic_configs={"cleanup.policy": "compact"}), InvalidConfigurationError)]:
        try:
            admin.create_topics([bad], raise_errors=True)
            fail(f"{bad.name} was created")
        except error:
            pass
    seen["refused"] = True

    def describe():
        result = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, TOPIC)], config_filter="all")
        configs = result["topic"][TOPIC]
        return {name: [c["value"], c["config_source"] == "DEFAULT_CONFIG"] for name, c in configs.items()}

    # The broker asked may learn of the new topic a moment after the create was answered
    # (asynchronous propagation, as in Kafka): it answers UNKNOWN_TOPIC_OR_PARTITION meanwhile,
    # which kafka-python hands back as no configs.
    deadline = time.time() + 30
    seen["described"] = describe()
    while not seen["described"] and time.time() < deadline:
        time.sleep(0.1)
        seen["described"] = describe()
    # kafka-python's alter_configs reads the topic's other configs first and sends them along,
    # so that AlterConfigs (which replaces) keeps them.
    admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, TOPIC, configs={"retention.bytes": "1048576"})])
    # The broker answering may apply the committed change a moment later (asynchronous
    # propagation, as in Kafka).
    deadline = time.time() + 30
    seen["altered"] = describe()
    while seen["altered"]["retention.bytes"][0] != "1048576" and time.time() < deadline:
        time.sleep(0.1)
        seen["altered"] = describe()
    admin.create_partitions({TOPIC: NewPartitions(5)})
    # Every node learns of the new partitions once it applied the controller's change (Kafka's
    # metadata propagation, too, is asynchronous).
    deadline = time.time() + 30
    while True:
        [described] = admin.describe_topics([TOPIC])
        if len(described["partitions"]) == 5 or time.time() > deadline:
            break
        time.sleep(0.1)
    seen["partitions"] = len(described["partitions"])
    # DescribeTopicPartitions, paged: three partitions, then the cursor for the other two.
    page = admin.describe_topic_partitions([TOPIC], response_partition_limit=3)
    rest = admin.describe_topic_partitions([TOPIC], cursor=page["next_cursor"])
    seen["paged"] = [[p["partition_index"] for p in answer["topics"][0]["partitions"]]
                     for answer in (page, rest)] + [rest["next_cursor"]]
    # DescribeLogDirs on every broker: each replica of the topic once (once every node opened
    # its new ones), on a disk of known size.
    deadline = time.time() + 30
    while True:
        replicas, sized = 0, True
        for broker in admin.describe_log_dirs({TOPIC: list(range(5))}):
            for log_dir in broker["log_dirs"]:
                sized = sized and log_dir["total_bytes"] > 0 and log_dir["usable_bytes"] > 0
                for topic in log_dir["topics"]:
                    replicas += len(topic["partitions"]) if topic["name"] == TOPIC else 0
        if replicas == 15 or time.time() > deadline:
            break
        time.sleep(0.1)
    seen["log_dir_replicas"] = replicas
    seen["log_dirs_sized"] = sized
    # DeleteRecords: five records in partition 0, the first three deleted; the earliest offset
    # a consumer then finds is 3; beyond the high watermark is refused.
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.errors import OffsetOutOfRangeError
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    for i in range(5):
        producer.send(TOPIC, value=b"r%d" % i, partition=0).get(timeout=30)
    producer.close()
    tp = TopicPartition(TOPIC, 0)
    deleted = admin.delete_records({tp: 3})
    seen["low_watermark"] = deleted[tp]["low_watermark"]
    try:
        admin.delete_records({tp: 6})
        fail("deleting beyond the high watermark succeeded")
    except OffsetOutOfRangeError:
        pass
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    seen["earliest"] = consumer.position(tp)
    consumer.close()
    admin.delete_topics([TOPIC])
    deadline = time.time() + 30
    while TOPIC in admin.list_topics():
        if time.time() > deadline:
            fail("the deleted topic is still listed")
        time.sleep(0.1)
    seen["deleted"] = True
    admin.close()


async def aiokafka_admin():
    """aiokafka's admin client answers with the protocol's responses: errors are codes in them."""
    from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    TOPIC_ALREADY_EXISTS, INVALID_CONFIG = 36, 40
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        def codes(response):
            # CreateTopics answers topic_errors, DeleteTopics topic_error_codes: (name, code, ...).
            errors = getattr(response, "topic_errors", None) or response.topic_error_codes
            return {t[0]: t[1] for t in errors}

        topic = NewTopic(TOPIC, num_partitions=3, replication_factor=3, topic_configs={"retention.ms": "3600000"})
        answer = await admin.create_topics([topic], validate_only=True)
        if codes(answer)[TOPIC] != 0:
            fail(f"validate_only refused the topic: {answer}")
        if TOPIC in await admin.list_topics():
            fail("validate_only created the topic")
        answer = await admin.create_topics([topic])
        if codes(answer)[TOPIC] != 0:
            fail(f"create failed: {answer}")
        for bad, code in [(topic, TOPIC_ALREADY_EXISTS),
                          (NewTopic(TOPIC + "-x", 1, 1, topic_configs={"no.such.config": "1"}), INVALID_CONFIG),
                          (NewTopic(TOPIC + "-y", 1, 1, topic_configs={"cleanup.policy": "compact"}), INVALID_CONFIG)]:
            got = codes(await admin.create_topics([bad]))[bad.name]
            if got != code:
                fail(f"{bad.name}: error code {got}, expected {code}")
        seen["refused"] = True

        async def describe():
            # aiokafka asks any broker; one may not have applied the create yet (Kafka's metadata
            # propagation is asynchronous too): UNKNOWN_TOPIC_OR_PARTITION (3) is retried, bounded.
            deadline = time.time() + 30
            while True:
                [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, TOPIC)])
                [(error, _message, _type, name, entries)] = response.resources
                if error != 3 or time.time() > deadline:
                    break
                await asyncio.sleep(0.1)
            if error != 0 or name != TOPIC:
                fail(f"describe_configs: {response}")
            # DescribeConfigs v1+: (name, value, read_only, config_source, is_sensitive, synonyms);
            # source 5 is DEFAULT_CONFIG.
            return {e[0]: [e[1], e[3] == 5] for e in entries}

        seen["described"] = await describe()
        # AlterConfigs replaces every config of the topic: send retention.ms along to keep it.
        [answer] = await admin.alter_configs([ConfigResource(
            ConfigResourceType.TOPIC, TOPIC, configs={"retention.ms": "3600000", "retention.bytes": "1048576"})])
        if any(r[0] != 0 for r in answer.resources):
            fail(f"alter_configs: {answer}")
        deadline = time.time() + 30
        seen["altered"] = await describe()
        while seen["altered"]["retention.bytes"][0] != "1048576" and time.time() < deadline:
            await asyncio.sleep(0.1)
            seen["altered"] = await describe()
        answer = await admin.create_partitions({TOPIC: NewPartitions(5)})
        if any(r[1] != 0 for r in answer.topic_errors):
            fail(f"create_partitions: {answer}")
        deadline = time.time() + 30
        while True:
            [described] = await admin.describe_topics([TOPIC])
            if len(described["partitions"]) == 5 or time.time() > deadline:
                break
            await asyncio.sleep(0.1)
        seen["partitions"] = len(described["partitions"])
        answer = await admin.delete_topics([TOPIC])
        if codes(answer)[TOPIC] != 0:
            fail(f"delete failed: {answer}")
        deadline = time.time() + 30
        while TOPIC in await admin.list_topics():
            if time.time() > deadline:
                fail("the deleted topic is still listed")
            await asyncio.sleep(0.1)
        seen["deleted"] = True
    finally:
        await admin.close()


{"confluent-kafka": confluent, "kafka-python": kafka_python,
 "aiokafka": lambda: asyncio.run(aiokafka_admin())}[CLIENT]()
print(json.dumps(seen))
