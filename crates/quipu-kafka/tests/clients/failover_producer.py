"""A Kafka producer that keeps producing through a leader failover, driven by
crates/quipu-kafka/tests/t40_failover.rs.

usage: failover_producer.py BOOTSTRAP TOPIC COUNT MODE

Produces COUNT values "v-<i>" to partition 0 of TOPIC with acks=all, a few ms apart, and prints
"ack <i> <offset>" or "fail <i> <error>" per record as its delivery report arrives. MODE:
- plain: confluent-kafka with retries off: a produce whose outcome is unknown is reported
  failed, never resent, so a record can be stored once at most;
- idempotent: confluent-kafka with enable.idempotence (up to five requests in flight, retried
  until acknowledged within 60 s);
- kafka-python, aiokafka: that client with enable_idempotence=True.
With idempotence the broker must store each record exactly once, in order.
"""

import asyncio
import sys
import time

bootstrap, topic, count, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
PAUSE_S = 0.003


def acked(i, offset):
    print(f"ack {i} {offset}", flush=True)


def failed(i, error):
    print(f"fail {i} {error}", flush=True)


def confluent(idempotent):
    from confluent_kafka import Producer
    settings = {
        "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
        "topic.metadata.refresh.interval.ms": 1000,
    }
    if idempotent:
        settings.update({"enable.idempotence": True, "message.timeout.ms": 60000})
    else:
        settings.update({
            "enable.idempotence": False, "message.send.max.retries": 0,
            "message.timeout.ms": 10000,
        })
    producer = Producer(settings)

    def report(err, msg):
        i = int(msg.value().decode().split("-")[1])
        if err is None:
            acked(i, msg.offset())
        else:
            failed(i, err.name())

    for i in range(count):
        producer.produce(topic, value=f"v-{i}".encode(), partition=0, on_delivery=report)
        producer.poll(PAUSE_S)
    producer.flush(60)


def kafka_python():
    from kafka import KafkaProducer
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0,
        delivery_timeout_ms=60000, metadata_max_age_ms=1000,
    )
    for i in range(count):
        future = producer.send(topic, value=f"v-{i}".encode(), partition=0)
        future.add_callback(lambda meta, i=i: acked(i, meta.offset))
        future.add_errback(lambda error, i=i: failed(i, type(error).__name__))
        time.sleep(PAUSE_S)
    producer.flush(60)
    producer.close()


def aiokafka():
    from aiokafka import AIOKafkaProducer

    async def run():
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0,
            request_timeout_ms=60000, metadata_max_age_ms=1000,
        )
        await producer.start()
        pending = []
        for i in range(count):
            sent = await producer.send(topic, value=f"v-{i}".encode(), partition=0)

            def report(done, i=i):
                if done.exception() is None:
                    acked(i, done.result().offset)
                else:
                    failed(i, type(done.exception()).__name__)

            sent.add_done_callback(report)
            pending.append(sent)
            await asyncio.sleep(PAUSE_S)
        await asyncio.gather(*pending, return_exceptions=True)
        await producer.stop()

    asyncio.run(run())


if mode in ("plain", "idempotent"):
    confluent(mode == "idempotent")
elif mode == "kafka-python":
    kafka_python()
elif mode == "aiokafka":
    aiokafka()
else:
    sys.exit(f"unknown mode {mode}")
