// kafkajs against a Quipu cluster, driven by crates/quipu-kafka/tests/t30_kafkajs.rs.
//
// usage: node kafkajs_client.js BOOTSTRAP TOPIC_PREFIX COUNT
//
// For each codec kafkajs has built in (none, gzip): produce COUNT keyed records with a header
// (acks=all), then the topic's earliest and latest offsets, and an offset by timestamp. Prints one
// JSON object: every acknowledged (key, partition, base offset of its batch) and the offsets;
// the Rust test reads the records back from the cluster and checks them. (kafkajs consumes
// through consumer groups: kafkajs_members.js.)
const { Kafka, CompressionTypes, logLevel } = require('kafkajs')

const [bootstrap, prefix, countText] = process.argv.slice(2)
const count = Number(countText)
const kafka = new Kafka({ clientId: 'quipu-test', brokers: bootstrap.split(','), logLevel: logLevel.WARN })

async function main () {
  const producer = kafka.producer({ allowAutoTopicCreation: true, idempotent: true })
  const admin = kafka.admin()
  await producer.connect()
  await admin.connect()
  const summary = {}
  for (const [codec, compression] of [['none', CompressionTypes.None], ['gzip', CompressionTypes.GZIP]]) {
    const topic = `${prefix}-${codec}`
    const acks = []
    // 100 records per send, so that batches of many records are tested too.
    for (let start = 0; start < count; start += 100) {
      const messages = []
      for (let i = start; i < Math.min(start + 100, count); i++) {
        messages.push({ key: `key-${i}`, value: `value-${i}-${'x'.repeat(i % 50)}`, headers: { n: String(i) } })
      }
      const result = await producer.send({ topic, acks: -1, compression, messages })
      acks.push(...result.map(r => ({ partition: r.partition, baseOffset: Number(r.baseOffset) })))
    }
    const offsets = await admin.fetchTopicOffsets(topic)
    summary[codec] = {
      acks,
      offsets: offsets.map(o => ({ partition: o.partition, low: Number(o.low), high: Number(o.high) }))
    }
  }
  const topic = `${prefix}-time`
  await producer.send({ topic, acks: -1, messages: [{ value: 'early', partition: 0 }] })
  const mark = Date.now() + 1
  await new Promise(resolve => setTimeout(resolve, 10))
  await producer.send({ topic, acks: -1, messages: [{ value: 'late', partition: 0 }] })
  const [found] = await admin.fetchTopicOffsetsByTimestamp(topic, mark)
  summary.timestampOffset = Number(found.offset)
  await producer.disconnect()
  await admin.disconnect()
  console.log(JSON.stringify(summary))
}

main().catch(error => {
  console.error(`kafkajs: ${error.stack || error}`)
  process.exit(1)
})
