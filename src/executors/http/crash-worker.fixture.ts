/**
 * Test fixture for http-executor.test.ts: a worker process that runs one HTTP executor attempt
 * and never gets to finish — the test SIGKILLs it once the service holds the request.
 * Env: SERVICE_URL, STORE_DIR, TOKEN; the job comes as JSON in JOB.
 */
import { fsArtifacts } from '../../artifacts/fs/fs-artifacts.js'
import { fsRecords } from '../../artifacts/fs/fs-records.js'
import { httpExecutor } from './http-executor.js'

const { SERVICE_URL, STORE_DIR, TOKEN, JOB } = process.env
if (SERVICE_URL === undefined || STORE_DIR === undefined || JOB === undefined) throw new Error('set SERVICE_URL, STORE_DIR and JOB')
const ex = httpExecutor({
  url: SERVICE_URL,
  ...(TOKEN === undefined ? {} : { token: TOKEN }),
  artifacts: fsArtifacts({ dir: STORE_DIR }),
  records: fsRecords({ dir: STORE_DIR }),
  timeoutMs: 600_000,
  pollIntervalMs: 50,
})
const req = JSON.parse(JOB) as Parameters<typeof ex.execute>[0]
process.stdout.write('started\n')
await ex.execute({ ...req, signal: new AbortController().signal })
process.stdout.write('finished (unexpected)\n')
