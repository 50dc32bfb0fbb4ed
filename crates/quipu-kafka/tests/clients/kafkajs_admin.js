// kafkajs's admin client against a Quipu cluster, driven by crates/quipu-kafka/tests/t50_admin.rs.
//
// usage: node kafkajs_admin.js BOOTSTRAP TOPIC
//
// Creates TOPIC (3 partitions, retention.ms set) after a validateOnly try; refuses a duplicate,
// an unknown config and cleanup.policy=compact; describes its configs (value and whether each is
// the default); changes one with AlterConfigs and reads it back; grows it to 5 partitions;
// deletes it. Prints one JSON object of what it saw (the shape admin_client.py prints); exits
// non-zero on the first surprise.
const { Kafka, ConfigResourceTypes, logLevel } = require('kafkajs')

const [bootstrap, topic] = process.argv.slice(2)
const kafka = new Kafka({ clientId: 'quipu-admin-test', brokers: bootstrap.split(','), logLevel: logLevel.NOTHING })
const seen = {}

function fail (message) {
  throw new Error(message)
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

// Polls `read` until `done` holds of its answer, for at most 30 s (a broker applies a committed
// change a moment after the controller, as Kafka's metadata propagation). A `read` that throws
// is tried again until then: partitions just added have no leader for a moment, their metadata
// says LEADER_NOT_AVAILABLE (as Kafka's does), and kafkajs's fetchTopicMetadata then fails with
// a TypeError (its broker pool swallows each broker's error and hands back null).
async function until (read, done) {
  const deadline = Date.now() + 30000
  for (;;) {
    let answer
    try {
      answer = await read()
    } catch (error) {
      if (Date.now() > deadline) throw error
      await sleep(100)
      continue
    }
    if (done(answer) || Date.now() > deadline) return answer
    await sleep(100)
  }
}

// The error type a refused create throws (kafkajs wraps per-topic errors).
async function refusal (create) {
  try {
    await create()
  } catch (error) {
    const inner = (error.errors && error.errors[0]) || error
    return inner.type || String(error)
  }
  return null
}

async function main () {
  const admin = kafka.admin()
  await admin.connect()
  const spec = { topic, numPartitions: 3, replicationFactor: 3, configEntries: [{ name: 'retention.ms', value: '3600000' }] }
  // (kafkajs waits for leaders by default, which a validateOnly create never has.)
  await admin.createTopics({ validateOnly: true, waitForLeaders: false, topics: [spec] })
  if ((await admin.listTopics()).includes(topic)) fail('validateOnly created the topic')
  if (!(await admin.createTopics({ topics: [spec], waitForLeaders: true }))) fail('the topic was not created')
  // kafkajs answers false for a topic that exists, and throws for the others.
  if (await admin.createTopics({ topics: [spec] })) fail('the duplicate was created')
  for (const [config, value] of [['no.such.config', '1'], ['cleanup.policy', 'compact']]) {
    const type = await refusal(() => admin.createTopics({
      topics: [{ topic: `${topic}-${config}`, numPartitions: 1, replicationFactor: 1, configEntries: [{ name: config, value }] }]
    }))
    if (type !== 'INVALID_CONFIG') fail(`${config}=${value}: ${type}, expected INVALID_CONFIG`)
  }
  seen.refused = true

  // Any broker answers; one may not have applied the create yet (Kafka's metadata propagation
  // is asynchronous too): an unknown topic is asked again, for at most 30 s.
  const describeOnce = async () => {
    try {
      const { resources: [resource] } = await admin.describeConfigs({
        includeSynonyms: false,
        resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }]
      })
      return resource
    } catch (error) {
      if (error.type === 'UNKNOWN_TOPIC_OR_PARTITION') return { errorCode: 3 }
      throw error
    }
  }
  const describe = async () => {
    const resource = await until(describeOnce, r => r.errorCode !== 3)
    if (resource.errorCode !== 0) fail(`describeConfigs: ${JSON.stringify(resource)}`)
    return Object.fromEntries(resource.configEntries.map(e => [e.configName, [e.configValue, e.isDefault]]))
  }
  seen.described = await describe()
  // AlterConfigs replaces every config of the topic: retention.ms is sent along to keep it.
  await admin.alterConfigs({
    validateOnly: false,
    resources: [{
      type: ConfigResourceTypes.TOPIC,
      name: topic,
      configEntries: [{ name: 'retention.ms', value: '3600000' }, { name: 'retention.bytes', value: '1048576' }]
    }]
  })
  seen.altered = await until(describe, d => d['retention.bytes'][0] === '1048576')
  await admin.createPartitions({ topicPartitions: [{ topic, count: 5 }] })
  const metadata = await until(
    () => admin.fetchTopicMetadata({ topics: [topic] }),
    m => m.topics[0].partitions.length === 5)
  seen.partitions = metadata.topics[0].partitions.length
  await admin.deleteTopics({ topics: [topic] })
  const listed = await until(() => admin.listTopics(), topics => !topics.includes(topic))
  if (listed.includes(topic)) fail('the deleted topic is still listed')
  seen.deleted = true
  await admin.disconnect()
  console.log(JSON.stringify(seen))
}

main().catch(error => {
  console.error(`kafkajs admin: ${error.stack || error}`)
  process.exit(1)
})
