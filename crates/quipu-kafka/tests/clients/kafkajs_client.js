// kafkajs against a Quipu cluster, driven by crates/quipu-kafka/tests/t30_kafkajs.rs.
//
// usage: node kafkajs_client.js BOOTSTRAP TOPIC_PREFIX COUNT
//
// For each codec kafkajs has built in (none, gzip): produce COUNT keyed records with a header
// (acks=all), then the topic's earliest and latest offsets; read every record back with a
// consumer (kafkajs consumes through consumer groups), and partition 0 again from offset 5 with
// seek; then an offset by timestamp. Prints one JSON object: every acknowledged (partition, base
// offset of its batch), the offsets, and every record consumed (partition, offset, key, value,
// header n); the Rust test reads the records back from the cluster and checks them all.
const { Kafka, CompressionTypes, logLevel } = require('kafkajs')

const [bootstrap, prefix, countText] = process.argv.slice(2)
const count = Number(countText)
const kafka = new Kafka({ clientId: 'quipu-test', brokers: bootstrap.split(','), logLevel: logLevel.WARN })

// Every record of `topic` (`expected` of them) through a new consumer group, from the start.
async function consumeAll (topic, expected) {
  const consumer = kafka.consumer({ groupId: `${topic}-reader`, maxWaitTimeInMs: 100 })
  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  const records = []
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${topic}: consumed ${records.length} of ${expected} records in 60 s`)), 60000)
    consumer.run({
      eachMessage: async ({ partition, message }) => {
        records.push([partition, Number(message.offset), message.key.toString(), message.value.toString(), message.headers.n.toString()])
        if (records.length === expected) {
          clearTimeout(timer)
          resolve()
        }
      }
    }).catch(reject)
  })
  await consumer.disconnect()
  return records
}

// The first record a consumer that seeks partition 0 of `topic` to `offset` gets there.
async function seekTo (topic, offset) {
  const consumer = kafka.consumer({ groupId: `${topic}-seeker`, maxWaitTimeInMs: 100 })
  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: false })
  const first = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${topic}: nothing after seeking to ${offset} in 60 s`)), 60000)
    consumer.run({
      eachMessage: async ({ partition, message }) => {
        if (partition === 0) {
          clearTimeout(timer)
          resolve([Number(message.offset), message.key.toString()])
        }
      }
    }).catch(reject)
    consumer.seek({ topic, partition: 0, offset: String(offset) })
  })
  await consumer.disconnect()
  return first
}

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
      offsets: offsets.map(o => ({ partition: o.partition, low: Number(o.low), high: Number(o.high) })),
      consumed: await consumeAll(topic, count),
      seeked: await seekTo(topic, 5)
    }
  }
  const topic = `${prefix}-time`
  await producer.send({ topic, acks: -1, messages: [{ value: 'early', partition: 0 }] })
  const mark = Date.now() + 1
  await new Promise(resolve => setTimeout(resolve, 10))
  await producer.send({ topic, acks: -1, messages: [{ value: 'late', partition: 0 }] })
  // One answer per partition, in no set order: partition 0's.
  const found = (await admin.fetchTopicOffsetsByTimestamp(topic, mark)).find(o => o.partition === 0)
  summary.timestampOffset = Number(found.offset)
  await producer.disconnect()
  await admin.disconnect()
  console.log(JSON.stringify(summary))
}

main().catch(error => {
  console.error(`kafkajs: ${error.stack || error}`)
  process.exit(1)
})
