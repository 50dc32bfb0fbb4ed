"""Kafka ACLs with confluent-kafka, driven by crates/quipu-kafka/tests/t92_acls.rs.

usage: acl_client.py sasl BOOTSTRAP CA_FILE
       acl_client.py mtls BOOTSTRAP CA_FILE ADMIN_CERT ADMIN_KEY CAROL_CERT CAROL_KEY

sasl: the listener takes SASL_SSL (SCRAM-SHA-256) and authorization is on with User:admin a
superuser (made by the test). admin creates the users alice and bob and the topics logs-a and
orders. Then, each step checked:
- alice, with no ACL, may not produce or create a topic, and lists no topic;
- a prefixed ALLOW WRITE on logs- lets alice produce to logs-a, still not to orders, and list
  logs-a only; alice may not describe ACLs;
- bob, with ALLOW READ on logs-a, reads what alice wrote;
- a DENY READ on logs-a for bob overrides his allow; deleting it lets him read again;
- DescribeAcls and DeleteAcls with filters (match, prefixed, any) answer what was made.

mtls: the listener takes SSL with client certificates; admin's certificate names a superuser
(User:CN=admin), carol's (User:CN=carol) holds ALLOW WRITE on logs-a only.

Prints one JSON object; exits non-zero with the reason on stderr on the first surprise.
"""

import json
import sys
import time

DEADLINE_S = 60


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def until(what, check, timeout_s=DEADLINE_S):
    """Waits (bounded) until check() is true: ACLs reach every node's metadata shortly after
    the controller commits them."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.2)
    fail(f"never: {what}")


def main():
    from confluent_kafka import (Consumer, KafkaError, KafkaException, Producer, TopicPartition,
                                 OFFSET_BEGINNING)
    from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation,
                                       AclPermissionType, AdminClient, NewTopic, ResourcePatternType,
                                       ResourceType, ScramCredentialInfo, ScramMechanism,
                                       UserScramCredentialUpsertion)

    mode, bootstrap, ca = sys.argv[1:4]
    base = {"bootstrap.servers": bootstrap, "ssl.ca.location": ca}

    def as_user(user):
        if mode == "sasl":
            return {**base, "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256",
                    "sasl.username": user, "sasl.password": f"{user}-secret"}
        cert, key = {"admin": sys.argv[4:6], "carol": sys.argv[6:8]}[user]
        return {**base, "security.protocol": "SSL", "ssl.certificate.location": cert,
                "ssl.key.location": key}

    def produced(user, topic):
        """The error code producing one record as `user` ends with (0: stored)."""
        outcome = []
        producer = Producer({**as_user(user), "acks": "all", "message.timeout.ms": 10000})
        producer.produce(topic, value=b"x", partition=0,
                         on_delivery=lambda err, msg: outcome.append(err.code() if err else 0))
        producer.flush(15)
        return outcome[0] if outcome else None

    def read(user, topic, want):
        """Records `user` reads from partition 0 of `topic` (stops at `want`), or the error
        code of the first error."""
        consumer = Consumer({**as_user(user), "group.id": f"{user}-group",
                             "enable.auto.commit": False})
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        count = 0
        deadline = time.time() + 15
        try:
            while count < want and time.time() < deadline:
                for msg in consumer.consume(100, 0.5):
                    if msg.error():
                        if msg.error().code() == KafkaError._PARTITION_EOF:
                            continue
                        return msg.error().code()
                    count += 1
        finally:
            consumer.close()
        return count

    def topics_listed(user):
        return sorted(t for t in AdminClient(as_user(user)).list_topics(timeout=10).topics
                      if not t.startswith("__"))

    admin = AdminClient(as_user("admin"))
    principal = {"sasl": lambda u: f"User:{u}", "mtls": lambda u: f"User:CN={u}"}[mode]
    if mode == "sasl":
        upserts = [UserScramCredentialUpsertion(user, ScramCredentialInfo(
            ScramMechanism.SCRAM_SHA_256, 4096), f"{user}-secret".encode())
            for user in ["alice", "bob"]]
        for future in admin.alter_user_scram_credentials(upserts).values():
            future.result(DEADLINE_S)
    for future in admin.create_topics([NewTopic("logs-a", 1, 3), NewTopic("orders", 1, 3)]).values():
        future.result(DEADLINE_S)

    writer = "alice" if mode == "sasl" else "carol"
    report = {}
    # No ACL: nothing allowed.
    until("a user without ACLs is refused", lambda: produced(
        writer, "logs-a") == KafkaError.TOPIC_AUTHORIZATION_FAILED)
    report["listed_without_acls"] = topics_listed(writer)
    writer_admin = AdminClient(as_user(writer))
    if mode == "sasl":
        try:
            writer_admin.create_topics([NewTopic("alices", 1, 1)])["alices"].result(DEADLINE_S)
            fail("alice created a topic without an ACL")
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_AUTHORIZATION_FAILED:
                fail(f"alice's create refused with {e}")

    # A prefixed ALLOW WRITE on logs- (a literal one for carol).
    pattern = ResourcePatternType.PREFIXED if mode == "sasl" else ResourcePatternType.LITERAL
    name = "logs-" if mode == "sasl" else "logs-a"
    write = AclBinding(ResourceType.TOPIC, name, pattern, principal(writer), "*",
                       AclOperation.WRITE, AclPermissionType.ALLOW)
    for future in admin.create_acls([write]).values():
        future.result(DEADLINE_S)
    until("the writer may produce to logs-a", lambda: produced(writer, "logs-a") == 0)
    report["orders"] = produced(writer, "orders")
    report["listed_with_acls"] = topics_listed(writer)
    # librdkafka drops DescribeAcls' error code (an empty list comes back); kafka-python raises it.
    listed = writer_admin.describe_acls(AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
        AclPermissionType.ANY)).result(DEADLINE_S)
    report["described_by_writer"] = len(listed)
    from kafka.admin import (ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType,
                             KafkaAdminClient, ResourcePatternFilter,
                             ResourceType as KResourceType)
    import kafka.errors
    if mode == "sasl":
        kafka_python = dict(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256",
                            sasl_plain_username=writer, sasl_plain_password=f"{writer}-secret")
    else:
        kafka_python = dict(security_protocol="SSL", ssl_certfile=sys.argv[6],
                            ssl_keyfile=sys.argv[7])
    kadmin = KafkaAdminClient(bootstrap_servers=bootstrap, ssl_cafile=ca, **kafka_python)
    try:
        kadmin.describe_acls(ACLFilter(principal=None, host="*", operation=ACLOperation.ANY,
                                       permission_type=ACLPermissionType.ANY,
                                       resource_pattern=ResourcePatternFilter(
                                           KResourceType.ANY, None, ACLResourcePatternType.ANY)))
        fail("kafka-python: the writer described the ACLs")
    except kafka.errors.ClusterAuthorizationFailedError:
        report["describe_acls_by_writer"] = "CLUSTER_AUTHORIZATION_FAILED"
    finally:
        kadmin.close()

    if mode == "sasl":
        allow = AclBinding(ResourceType.TOPIC, "logs-a", ResourcePatternType.LITERAL,
                           "User:bob", "*", AclOperation.READ, AclPermissionType.ALLOW)
        group = AclBinding(ResourceType.GROUP, "bob-group", ResourcePatternType.LITERAL,
                           "User:bob", "*", AclOperation.READ, AclPermissionType.ALLOW)
        for future in admin.create_acls([allow, group]).values():
            future.result(DEADLINE_S)
        until("bob reads logs-a", lambda: read("bob", "logs-a", 1) == 1)
        deny = AclBinding(ResourceType.TOPIC, "logs-a", ResourcePatternType.LITERAL,
                          "User:bob", "*", AclOperation.READ, AclPermissionType.DENY)
        for future in admin.create_acls([deny]).values():
            future.result(DEADLINE_S)
        until("a deny overrides bob's allow",
              lambda: read("bob", "logs-a", 1) == KafkaError.TOPIC_AUTHORIZATION_FAILED)
        # What applies to logs-a (MATCH): alice's prefixed allow, bob's allow and deny.
        matched = admin.describe_acls(AclBindingFilter(
            ResourceType.TOPIC, "logs-a", ResourcePatternType.MATCH, None, None,
            AclOperation.ANY, AclPermissionType.ANY)).result(DEADLINE_S)
        report["matched"] = sorted(f"{b.principal} {b.operation.name} {b.permission_type.name} "
                                   f"{b.resource_pattern_type.name}" for b in matched)
        deleted = admin.delete_acls([AclBindingFilter(
            ResourceType.TOPIC, "logs-a", ResourcePatternType.LITERAL, "User:bob", None,
            AclOperation.ANY, AclPermissionType.DENY)])
        report["deleted"] = [len(f.result(DEADLINE_S)) for f in deleted.values()]
        until("bob reads again once the deny is gone", lambda: read("bob", "logs-a", 1) == 1)
        everything = admin.describe_acls(AclBindingFilter(
            ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
            AclPermissionType.ANY)).result(DEADLINE_S)
        report["left"] = len(everything)
    print(json.dumps(report))


main()
