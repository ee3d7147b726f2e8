import { createHash } from 'node:crypto'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { loadConfig } from '../config/load.js'
import { ConfigError, errorMessage } from '../core/errors.js'
import { reapOrphans } from '../executors/process/reap.js'
import { createDispatcher, type WorkerCapabilities } from '../pipeline/dispatcher.js'
import { createExecutor, createLogger, openArtifacts, openBus } from '../wiring.js'

export interface WorkerCommandOptions {
  config: string
  /** One stage, or several separated by commas. */
  stage: string
  workerId?: string
  concurrency?: string
  /** Pool served (default: each stage's first pool). */
  pool?: string
  /** Comma-separated capability labels, e.g. `gpu,a100`. */
  labels?: string
  maxCost?: string
  /** Comma-separated program ids this worker can prove (default: any). */
  programs?: string
}

/**
 * `proofline worker`: a dispatcher for one stage on a prover machine. It needs the bus and
 * the artifact store, never the state store: its lease on a job is the bus's ack deadline,
 * extended by heartbeats, and the orchestrator records what it reports.
 */
export async function workerCommand(opts: WorkerCommandOptions): Promise<number> {
  const config = await loadConfig(opts.config, { env: process.env })
  const names = opts.stage.split(',').map((s) => s.trim()).filter(Boolean)
  const stages = names.map((name) => {
    const stage = config.stages.find((s) => s.name === name)
    if (!stage) throw new ConfigError(`${config.file}: no stage named "${name}" (stages: ${config.stages.map((s) => s.name).join(', ')})`)
    return stage
  })
  if (config.bus.type === 'local' || config.bus.type === 'memory') {
    throw new ConfigError(`${config.file}: bus.type "${config.bus.type}" is in-process; a separate worker needs a shared bus (bus.type: nats)`)
  }
  if (config.artifacts.type === 'fs') {
    // A folder works when workers share it (same machine or a network mount); say so once.
    process.stderr.write(`note: artifacts.type "fs" at ${String(config.artifacts.dir)} must be shared with the orchestrator\n`)
  }
  const concurrency = opts.concurrency === undefined ? undefined : Number(opts.concurrency)
  if (concurrency !== undefined && (!Number.isSafeInteger(concurrency) || concurrency <= 0)) {
    throw new ConfigError(`--concurrency must be a positive integer (got ${opts.concurrency})`)
  }
  const workerId = opts.workerId ?? `${hostname()}:${process.pid}`
  const log = createLogger(config.log.level).child({ worker: workerId })
  // Each worker's children carry their own owner tag, so a restarted worker reaps only its own.
  const tag = `pl-w-${createHash('sha256').update(`${config.dataDir}:${workerId}`).digest('hex').slice(0, 16)}`
  const reaped = await reapOrphans(tag)
  if (reaped.length > 0) log.warn({ pids: reaped }, 'killed orphaned executor processes of a previous run')

  const bus = await openBus(config, log)
  const artifacts = openArtifacts(config)
  if (opts.pool !== undefined) {
    for (const stage of stages) {
      if (!stage.dispatch.pools.some((p) => p.name === opts.pool)) {
        throw new ConfigError(`${config.file}: stage ${stage.name} has no pool "${opts.pool}" (pools: ${stage.dispatch.pools.map((p) => p.name).join(', ')})`)
      }
    }
  }
  const maxCost = opts.maxCost === undefined ? undefined : Number(opts.maxCost)
  if (maxCost !== undefined && !(maxCost > 0)) throw new ConfigError(`--max-cost must be a positive number (got ${opts.maxCost})`)
  const capabilities: WorkerCapabilities = {
    labels: (opts.labels ?? '').split(',').map((l) => l.trim()).filter(Boolean),
    ...(maxCost !== undefined ? { maxCost } : {}),
    ...(opts.programs !== undefined ? { programs: opts.programs.split(',').map((p) => p.trim()).filter(Boolean) } : {}),
  }
  const workDir = { ...config, dataDir: join(config.dataDir, 'workers', workerId.replace(/[^A-Za-z0-9._-]/g, '_')) }
  const dispatchers = stages.map((stage) =>
    createDispatcher({
      bus,
      artifacts,
      stage: stage.name,
      executor: createExecutor(workDir, stage, tag),
      workerId,
      concurrency: concurrency ?? stage.dispatch.concurrency,
      ackWaitMs: stage.dispatch.ackWaitMs,
      capabilities,
      // The first pool listens on the stage's main subject.
      ...(opts.pool !== undefined && opts.pool !== stage.dispatch.pools[0]?.name ? { pool: opts.pool } : {}),
      log,
    }),
  )
  for (const d of dispatchers) d.start()
  log.info({ stages: names, concurrency, pool: opts.pool ?? '(first)', capabilities }, 'worker started')
  await new Promise<void>((resolve) => {
    const stop = (sig: string): void => {
      log.info({ signal: sig }, 'worker stopping: in-flight jobs go back to the bus')
      resolve()
    }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
  try {
    await Promise.all(dispatchers.map((d) => d.stop()))
  } catch (err) {
    log.error({ err: errorMessage(err) }, 'worker stop failed')
  }
  await bus.close()
  await artifacts.close()
  return 0
}
