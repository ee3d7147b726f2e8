/**
 * Child process of the scaling bench: `W` dispatchers (each its own NATS connection, like
 * separate prover machines) with `N/W` concurrency each, running the mock prover (simulated
 * latency, uniform in [min, max]). Prints `ready` once all consume; exits on SIGTERM.
 * Args: natsUrl stream prefix artifactsDir N W minMs maxMs seed
 */
import { pino } from 'pino'
import { fsArtifacts } from '../src/artifacts/index.js'
import { natsBus } from '../src/bus/nats/index.js'
import type { Bus } from '../src/bus/types.js'
import { mockExecutor } from '../src/executors/mock/mock-executor.js'
import { createDispatcher, type Dispatcher } from '../src/pipeline/dispatcher.js'

const [natsUrl, stream, prefix, dir, n, w, minMs, maxMs, seed] = process.argv.slice(2)
const N = Number(n)
const W = Number(w)
const log = pino({ level: 'silent' })
const artifacts = fsArtifacts({ dir: dir! })
const buses: Bus[] = []
const dispatchers: Dispatcher[] = []
for (let k = 0; k < W; k++) {
  const bus = await natsBus({ servers: natsUrl!, stream: stream!, subjectPrefix: prefix!, name: `bench-worker-${k}`, logger: { warn: () => {} } })
  buses.push(bus)
  const concurrency = Math.floor(N / W) + (k < N % W ? 1 : 0)
  const d = createDispatcher({
    bus,
    artifacts,
    stage: 'range',
    executor: mockExecutor({ latencyMs: { min: Number(minMs), max: Number(maxMs) }, seed: Number(seed), heartbeatMs: 5_000 }),
    workerId: `worker-${k}`,
    concurrency,
    log,
    presenceIntervalMs: 60_000,
  })
  d.start()
  dispatchers.push(d)
}
process.stdout.write('ready\n')
process.on('SIGTERM', () => {
  void (async () => {
    await Promise.all(dispatchers.map((d) => d.stop()))
    await Promise.all(buses.map((b) => b.close()))
    process.exit(0)
  })()
})
