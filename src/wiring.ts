import { createHash, randomBytes } from 'node:crypto'
import { mkdir } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join } from 'node:path'
import pino, { type Logger } from 'pino'
import { fsArtifacts } from './artifacts/fs/fs-artifacts.js'
import { fsRecords } from './artifacts/fs/fs-records.js'
import type { ArtifactStore, RecordStore } from './artifacts/types.js'
import { httpExecutor } from './executors/http/http-executor.js'
import { shadowExecutor } from './executors/shadow/shadow-executor.js'
import type { Hex } from 'viem'
import { localBus } from './bus/local/index.js'
import { memoryBus } from './bus/memory/index.js'
import type { Bus } from './bus/types.js'
import type { ResolvedConfig, ResolvedStage } from './config/load.js'
import { mockExecutor } from './executors/mock/mock-executor.js'
import { processExecutor } from './executors/process/process-executor.js'
import { reapOrphans } from './executors/process/reap.js'
import type { Executor } from './executors/types.js'
import { ConfigError, errorMessage } from './core/errors.js'
import { natsBus } from './bus/nats/index.js'
import type { PipelineContext } from './pipeline/context.js'
import { openSqlDatabase, type SqlDatabase } from './state/sql/database.js'
import { sqlStateStore } from './state/sql/sql-state.js'
import type { Fence } from './state/sql/leader.js'
import type { StateStore } from './state/types.js'

/**
 * The one place that picks implementations from config. Everything else receives ports.
 */

/** A process-wide logger writing JSON lines to stderr (stdout is kept for command output). */
export function createLogger(level: ResolvedConfig['log']['level']): Logger {
  return pino({ level, base: { pid: process.pid } }, pino.destination(2))
}

/** Identifies this instance's child processes: a hash of its data dir. */
export function ownerTag(config: ResolvedConfig): string {
  return `pl-${createHash('sha256').update(config.dataDir).digest('hex').slice(0, 16)}`
}

/** Opens the SQL database named by `state`. */
export async function openDatabase(config: ResolvedConfig): Promise<SqlDatabase> {
  const s = config.state
  if (s.type === 'embedded') return openSqlDatabase({ kind: 'embedded', dataDir: s.dir as string, schema: s.schema })
  return openSqlDatabase({ kind: 'postgres', url: s.url, schema: s.schema, poolSize: s.poolSize })
}

/** Opens the bus named by `bus`. The local bus lives in the state database. */
export async function openBus(config: ResolvedConfig, log: Logger, database?: SqlDatabase): Promise<Bus> {
  const b = config.bus
  switch (b.type) {
    case 'local':
      if (!database) throw new ConfigError(`${config.file}: bus.type "local" needs the state database; a worker process needs bus.type "nats"`)
      return localBus({
        database,
        pollIntervalMs: b.pollIntervalMs,
        // Embedded mode: this process is the only consumer, so leases left in the database
        // can only be a crashed predecessor's.
        reclaimOnOpen: config.state.type === 'embedded',
        logger: log.child({ part: 'bus' }),
      })
    case 'memory':
      return memoryBus()
    case 'nats':
      return natsBus({
        servers: b.servers,
        stream: b.stream,
        subjectPrefix: b.subjectPrefix,
        duplicateWindowMs: b.duplicateWindowMs,
        replicas: b.replicas,
        maxAgeMs: b.maxAgeMs,
        name: `proofline-${config.name}`,
        ...(b.token !== undefined ? { auth: { token: b.token } } : {}),
        logger: log.child({ part: 'bus' }),
      })
  }
}

/** Opens the artifact store named by `artifacts`. */
export function openArtifacts(config: ResolvedConfig): ArtifactStore {
  const a = config.artifacts
  switch (a.type) {
    case 'fs':
      return fsArtifacts({ dir: a.dir as string })
    case 's3':
      return lazyArtifacts(async () => (await import('./artifacts/s3/s3-artifacts.js')).s3Artifacts({
        bucket: a.bucket,
        prefix: a.prefix,
        region: a.region,
        forcePathStyle: a.forcePathStyle,
        multipartThresholdBytes: a.multipartThresholdBytes,
        partSizeBytes: a.partSizeBytes,
        createBucket: a.createBucket,
        ...(a.endpoint !== undefined ? { endpoint: a.endpoint } : {}),
        ...(a.accessKeyId !== undefined && a.secretAccessKey !== undefined ? { credentials: { accessKeyId: a.accessKeyId, secretAccessKey: a.secretAccessKey } } : {}),
      }))
  }
}

/** Opens the named-record store that lives beside the artifacts (same folder or bucket). */
export function openRecords(config: ResolvedConfig): RecordStore {
  const a = config.artifacts
  switch (a.type) {
    case 'fs':
      return fsRecords({ dir: a.dir as string })
    case 's3':
      return lazyRecords(async () => (await import('./artifacts/s3/s3-records.js')).s3Records({
        bucket: a.bucket,
        prefix: a.prefix,
        region: a.region,
        forcePathStyle: a.forcePathStyle,
        ...(a.endpoint !== undefined ? { endpoint: a.endpoint } : {}),
        ...(a.accessKeyId !== undefined && a.secretAccessKey !== undefined ? { credentials: { accessKeyId: a.accessKeyId, secretAccessKey: a.secretAccessKey } } : {}),
      }))
  }
}

/**
 * Loads a module on first use and keeps it; a failed load is tried again next time. Adapters
 * with heavy dependencies (the AWS SDK, viem, the proving backend) go through it, so a process
 * loads only what its config uses (docs/benchmarks.md: memory).
 */
function once<T>(load: () => Promise<T>): { get(): Promise<T>; loaded(): Promise<T> | undefined } {
  let p: Promise<T> | undefined
  return {
    get: () =>
      (p ??= load().catch((err: unknown) => {
        p = undefined
        throw err
      })),
    loaded: () => p,
  }
}

/** An artifact store whose adapter module is imported on first use. */
function lazyArtifacts(load: () => Promise<ArtifactStore>): ArtifactStore {
  const m = once(load)
  return {
    put: async (bytes, o) => (await m.get()).put(bytes, o),
    get: async (ref, o) => (await m.get()).get(ref, o),
    has: async (ref, o) => (await m.get()).has(ref, o),
    async close() {
      const p = m.loaded()
      if (p) await (await p).close()
    },
  }
}

/** A record store whose adapter module is imported on first use. */
function lazyRecords(load: () => Promise<RecordStore>): RecordStore {
  const m = once(load)
  return {
    get: async (name, o) => (await m.get()).get(name, o),
    set: async (name, bytes, o) => (await m.get()).set(name, bytes, o),
    delete: async (name, o) => (await m.get()).delete(name, o),
    async close() {
      const p = m.loaded()
      if (p) await (await p).close()
    },
  }
}

/** An executor whose adapter module is imported on its first job. */
function lazyExecutor(kind: string, load: () => Promise<Executor>): Executor {
  const m = once(load)
  return {
    kind,
    execute: async (req) => (await m.get()).execute(req),
    async close() {
      const p = m.loaded()
      if (p) await (await p).close()
    },
  }
}

/** Everything the orchestrator runs on. `close` releases it in reverse order. */
export interface Wired {
  ctx: PipelineContext
  database: SqlDatabase
  close(): Promise<void>
}

export interface WireOrchestratorOptions {
  /** An already open database (taken over: closed by `close`). */
  database?: SqlDatabase
  /** The leader's fence: every state write checks it (see docs/state.md). */
  fence?: () => Fence | undefined
}

/** Opens state, bus and artifacts for an orchestrator. */
export async function wireOrchestrator(config: ResolvedConfig, log: Logger, opts: WireOrchestratorOptions = {}): Promise<Wired> {
  await mkdir(config.dataDir, { recursive: true })
  const database = opts.database ?? (await openDatabase(config))
  let bus: Bus | undefined
  let artifacts: ArtifactStore | undefined
  try {
    const state: StateStore = await sqlStateStore(database, opts.fence ? { fence: opts.fence, fenceIdleTimeoutMs: config.leader.leaseMs } : {})
    bus = await openBus(config, log, database)
    artifacts = openArtifacts(config)
    const ctx: PipelineContext = {
      config,
      state,
      bus,
      artifacts,
      log,
      now: () => Date.now(),
      fatal: (err, where) => log.fatal({ err: errorMessage(err), where }, 'fatal error'),
    }
    const b = bus
    const a = artifacts
    return {
      ctx,
      database,
      async close() {
        await b.close()
        await a.close()
        await database.close()
      },
    }
  } catch (err) {
    await bus?.close()
    await database.close()
    throw err
  }
}

/** What `createExecutor` may take from its caller instead of opening or reading it itself. */
export interface ExecutorDeps {
  /** Environment for `tokenEnv` and similar. @default process.env */
  env?: Record<string, string | undefined>
  /** @default a logger at the config's level */
  log?: Logger
}

/** Builds the executor of a stage. */
export function createExecutor(config: ResolvedConfig, stage: ResolvedStage, owner: string = ownerTag(config), deps: ExecutorDeps = {}): Executor {
  return buildExecutor(config, stage, stage.executor, owner, deps, join(config.dataDir, 'work', stage.name))
}

/** Builds one executor from its config; a shadow executor builds its two sides, each with its own work folder. */
function buildExecutor(config: ResolvedConfig, stage: ResolvedStage, e: ResolvedStage['executor'], owner: string, deps: ExecutorDeps, workDir: string): Executor {
  switch (e.type) {
    case 'shadow': {
      const primary = buildExecutor(config, stage, e.primary, owner, deps, join(workDir, 'primary'))
      let shadow: Executor
      try {
        shadow = buildExecutor(config, stage, e.shadow, owner, deps, join(workDir, 'shadow'))
      } catch (err) {
        void primary.close()
        throw err
      }
      return shadowExecutor({
        primary,
        shadow,
        compare: e.compare,
        ignore: e.ignore,
        shadowTimeoutMs: e.shadowTimeoutMs,
        maxInFlight: e.maxInFlight,
        cost: {
          ...(e.cost.primaryPerHour === undefined ? {} : { primaryPerHour: e.cost.primaryPerHour }),
          ...(e.cost.shadowPerHour === undefined ? {} : { shadowPerHour: e.cost.shadowPerHour }),
        },
        log: (deps.log ?? createLogger(config.log.level)).child({ stage: stage.name }),
      })
    }
    case 'http': {
      const env = deps.env ?? process.env
      const token = e.token ?? (e.tokenEnv === undefined ? undefined : env[e.tokenEnv])
      if (e.tokenEnv !== undefined && (token === undefined || token === '')) {
        throw new ConfigError(`${config.file}: stage ${stage.name}: executor.tokenEnv names ${e.tokenEnv}, which is not set in the environment`)
      }
      // The executor's own handles on the shared store: every dispatcher of the pool reaches the same records.
      const artifacts = openArtifacts(config)
      const records = openRecords(config)
      const ex = httpExecutor({
        url: e.url,
        ...(token === undefined ? {} : { token }),
        artifacts,
        records,
        timeoutMs: e.timeoutMs,
        requestTimeoutMs: e.requestTimeoutMs,
        pollIntervalMs: e.pollIntervalMs,
        maxPollIntervalMs: e.maxPollIntervalMs,
        maxPollErrors: e.maxPollErrors,
        submitRetries: e.submitRetries,
        heartbeatMs: e.heartbeatMs,
        inlineArtifacts: e.inlineArtifacts,
        maxRequestBytes: e.maxRequestBytes,
        maxResponseBytes: e.maxResponseBytes,
        allowInsecureHttp: e.allowInsecureHttp,
        log: (deps.log ?? createLogger(config.log.level)).child({ stage: stage.name }),
      })
      return closing(ex, [artifacts, records])
    }
    case 'process':
      return processExecutor({
        command: e.command,
        protocol: e.protocol,
        timeoutMs: e.timeoutMs,
        killGraceMs: e.killGraceMs,
        env: e.env,
        heartbeatMs: e.heartbeatMs,
        stderrTailBytes: e.stderrTailBytes,
        workDir,
        ownerTag: owner,
      })
    case 'zkvm': {
      const artifacts = openArtifacts(config)
      const ex = lazyExecutor('zkvm', async () => (await import('./executors/zkvm/zkvm-executor.js')).zkvmExecutor({
        vm: e.vm,
        command: e.command,
        program: { vkey: e.program.vkey, ...(e.program.elf === undefined ? {} : { elf: e.program.elf }) },
        input: { format: e.input.format, file: e.input.file, fields: e.input.fields },
        output: {
          file: e.output.file,
          proof: e.output.proof,
          publicValues: e.output.publicValues,
          vkey: e.output.vkey,
          fields: e.output.fields,
          ...(e.output.publicValuesAbi === undefined ? {} : { publicValuesAbi: e.output.publicValuesAbi }),
        },
        exitCodes: e.exitCodes,
        errorPatterns: e.errorPatterns,
        artifacts,
        timeoutMs: e.timeoutMs,
        killGraceMs: e.killGraceMs,
        env: e.env,
        heartbeatMs: e.heartbeatMs,
        stderrTailBytes: e.stderrTailBytes,
        workDir,
        ownerTag: owner,
      }))
      return closing(ex, [artifacts])
    }
    case 'builtin': {
      const prover = config.prover
      if (prover === undefined) throw new ConfigError(`${config.file}: stage ${stage.name}: a builtin executor needs the prover section`)
      const artifacts = openArtifacts(config)
      const ex = lazyExecutor('builtin', async () => {
        const [{ builtinExecutor }, { sharedBuiltinBackend }] = await Promise.all([import('./executors/builtin/builtin-executor.js'), import('./backends/builtin/shared.js')])
        return builtinExecutor({
          program: e.program,
          backend: () => sharedBuiltinBackend(prover, { artifacts }),
          artifacts,
          chainConfigHash: prover.chainConfigHash as Hex,
          heartbeatMs: e.heartbeatMs,
        })
      })
      return closing(ex, [artifacts])
    }
    case 'mock':
      return mockExecutor({ latencyMs: e.latencyMs, failureRate: e.failureRate, hostileRate: e.hostileRate, seed: e.seed })
  }
}

/** An executor that also closes resources it was built on. */
function closing(ex: Executor, owned: { close(): Promise<void> }[]): Executor {
  return {
    kind: ex.kind,
    execute: (req) => ex.execute(req),
    async close() {
      await ex.close()
      for (const o of owned) await o.close()
    },
  }
}

/** Kills prover processes a crashed predecessor left behind. */
export async function reapPredecessorOrphans(config: ResolvedConfig, log: Logger): Promise<void> {
  const killed = await reapOrphans(ownerTag(config))
  if (killed.length > 0) log.warn({ pids: killed }, 'killed orphaned executor processes of a previous run')
}

/** A random bearer token for the admin API. */
export function randomToken(): string {
  return randomBytes(24).toString('base64url')
}

/** This process's worker id prefix. */
export function instanceId(): string {
  return `${hostname()}:${process.pid}`
}
