/**
 * Test fixture for local-bus.test.ts: publishes forever, several at a time, and prints
 * `published <id>` once each publish has resolved. The test SIGKILLs it mid-stream.
 */
import { openPostgres } from '../../state/sql/database.js'
import { localBus } from './local-bus.js'

const url = process.env.PG_URL
const schema = process.env.PG_SCHEMA
if (url === undefined || schema === undefined) throw new Error('set PG_URL and PG_SCHEMA')

const database = await openPostgres(url, schema, 4)
const bus = await localBus({ database })
let next = 0
const worker = async () => {
  for (;;) {
    const id = `b${next++}`
    await bus.publish('crash.blocks', { id, data: { number: next, pad: 'x'.repeat(200) } })
    process.stdout.write(`published ${id}\n`)
  }
}
await Promise.all([worker(), worker(), worker(), worker()])
