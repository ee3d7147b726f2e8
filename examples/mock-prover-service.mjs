#!/usr/bin/env node
// A MOCK prover service speaking proofline.prover-api/v1 (docs/executor-protocol.md §11), for
// development: it "proves" with the mock commitment (no cryptography), like the mock executor.
// Needs the build (`npm run build`, also run on install).
//
//   node examples/mock-prover-service.mjs [--port 8547] [--token T] [--latency-ms 500]
//
// Then point a stage at it: examples/http-partner.yaml.
import { parseArgs } from 'node:util'
import { mockProverService } from '../dist/executors/http/mock-service.js'

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '8547' },
    host: { type: 'string', default: '127.0.0.1' },
    token: { type: 'string' },
    'latency-ms': { type: 'string', default: '500' },
  },
})
const service = await mockProverService({
  host: values.host,
  port: Number(values.port),
  latencyMs: Number(values['latency-ms']),
  ...(values.token === undefined ? {} : { token: values.token }),
})
process.stderr.write(`mock prover service (no cryptography) listening on ${service.url}\n`)
const stop = () => {
  service.close().then(() => process.exit(0), () => process.exit(1))
}
process.once('SIGINT', stop)
process.once('SIGTERM', stop)
