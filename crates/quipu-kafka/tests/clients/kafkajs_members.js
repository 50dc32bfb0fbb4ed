// Two kafkajs members of one consumer group, driven by crates/quipu-kafka/tests/t70_groups.rs.
//
// usage: node kafkajs_members.js BOOTSTRAP TOPIC GROUP [member NAME]
//
// With `member NAME`: one member only, forever, printing its assignment (a JSON list of
// partitions) each time it changes; the Rust test kills such members.
//
// The same steps as group_members.py: TOPIC has 4 partitions holding 10 records each; members A
// and B share its partitions and consume every record (committing as they go); B leaves and A
// takes every partition; 20 more records are produced and A consumes them; a third member C
// starts at the committed offsets and sees only a last record. Prints one JSON object; exits
// non-zero with the reason on stderr on the first failure.
const { Kafka, logLevel, PartitionAssigners } = require('kafkajs')

const [bootstrap, topic, group] = process.argv.slice(2)
const PARTITIONS = 4
const DEADLINE_MS = 45000
const kafka = new Kafka({ clientId: 'quipu-kafkajs', brokers: bootstrap.split(','), logLevel: logLevel.WARN })

function fail (message) {
  process.stderr.write(`kafkajs: ${message}\n`)
  process.exit(1)
}

async function until (what, condition) {
  const deadline = Date.now() + DEADLINE_MS
  while (!condition()) {
    if (Date.now() > deadline) fail(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

async function member (name) {
  const seen = { records: new Set(), assignment: new Set() }
  const consumer = kafka.consumer({
    groupId: group,
    sessionTimeout: 6000,
    heartbeatInterval: 500,
    // kafkajs heartbeats between fetches: a short long-poll lets it see rebalances sooner.
    maxWaitTimeInMs: 500,
    partitionAssigners: [PartitionAssigners.roundRobin]
  })
  consumer.on(consumer.events.GROUP_JOIN, event => {
    const assigned = event.payload.memberAssignment[topic] || []
    seen.assignment = new Set(assigned)
  })
  await consumer.connect()
  await consumer.subscribe({ topic, fromBeginning: true })
  await consumer.run({
    autoCommitInterval: 100,
    eachMessage: async ({ partition, message }) => {
      seen.records.add(`${partition}:${message.offset}`)
    }
  })
  seen.stop = () => consumer.disconnect()
  return seen
}

async function produce (count) {
  const producer = kafka.producer({ createPartitioner: require('kafkajs').Partitioners.DefaultPartitioner })
  await producer.connect()
  for (let i = 0; i < count; i++) {
    await producer.send({ topic, acks: -1, messages: [{ value: `more-${i}`, partition: i % PARTITIONS }] })
  }
  await producer.disconnect()
}

const union = (...sets) => new Set(sets.flatMap(s => [...s]))

async function main () {
  const a = await member('a')
  const b = await member('b')
  await until('A and B to share the partitions', () =>
    a.assignment.size > 0 && b.assignment.size > 0 &&
    union(a.assignment, b.assignment).size === PARTITIONS &&
    a.assignment.size + b.assignment.size === PARTITIONS)
  const shared = [[...a.assignment].sort(), [...b.assignment].sort()]
  await until('every record consumed', () => union(a.records, b.records).size >= 40)
  const first = union(a.records, b.records)
  await b.stop()
  await until('A to take every partition', () => a.assignment.size === PARTITIONS)
  await produce(20)
  await until('A to consume the new records', () => union(a.records, first).size >= 60)
  const second = union(a.records, first)
  await a.stop()
  const c = await member('c')
  await until('C to get every partition', () => c.assignment.size === PARTITIONS)
  await produce(1)
  await until('C to consume the last record', () => c.records.size >= 1)
  await new Promise(resolve => setTimeout(resolve, 500))
  const last = [...c.records].map(r => r.split(':').map(Number)).sort()
  await c.stop()
  console.log(JSON.stringify({ shared, first: first.size, second: second.size, last }))
}

async function single () {
  const seen = await member(process.argv[6])
  let shown = null
  for (;;) {
    const now = JSON.stringify([...seen.assignment].sort())
    if (now !== shown) {
      process.stdout.write(now + '\n')
      shown = now
    }
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

if (process.argv[5] === 'member') {
  single().catch(e => fail(e.stack || String(e)))
} else {
  main().catch(e => fail(e.stack || String(e)))
}
