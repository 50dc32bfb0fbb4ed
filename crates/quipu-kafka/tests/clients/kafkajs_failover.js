// An idempotent kafkajs producer that keeps producing through a leader failover, driven by
// crates/quipu-kafka/tests/t40_failover.rs.
//
// usage: node kafkajs_failover.js BOOTSTRAP TOPIC COUNT
//
// Sends COUNT values "v-<i>" to partition 0 of TOPIC one at a time (acks=all, idempotent: each
// send retried until acknowledged) and prints "ack <i> <offset>" or "fail <i> <error>" per value.
const { Kafka, logLevel } = require('kafkajs')

const [bootstrap, topic, countText] = process.argv.slice(2)
const count = Number(countText)
const kafka = new Kafka({
  clientId: 'quipu-failover',
  brokers: bootstrap.split(','),
  logLevel: logLevel.NOTHING,
  retry: { initialRetryTime: 100, maxRetryTime: 1000, retries: 60 }
})

async function main () {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, metadataMaxAge: 1000 })
  await producer.connect()
  for (let i = 0; i < count; i++) {
    try {
      const [result] = await producer.send({ topic, acks: -1, messages: [{ value: `v-${i}`, partition: 0 }] })
      console.log(`ack ${i} ${Number(result.baseOffset)}`)
    } catch (e) {
      console.log(`fail ${i} ${e.name}`)
    }
  }
  await producer.disconnect()
}

main().catch(e => { console.error(e); process.exit(1) })
