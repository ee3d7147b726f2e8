/**
 * The chaos harness: proofline's distributed setup on one machine — an orchestrator (watcher,
 * collectors, recorders, proposer), several `proofline worker` processes, NATS JetStream, a
 * private Postgres, an S3 server, a dev L2 with transaction load and a dev L1 reached through
 * two RPC endpoints — run over many L2 blocks while it, at seeded points, SIGKILLs and restarts
 * the orchestrator, workers and the proposer, crash-restarts nats-server and Postgres, takes
 * one L1 endpoint down and up, and reorganises the L2 chain up to 64 blocks deep. At the end
 * the independent checker (checker.ts) reads L1 and L2 and the state tables.
 *
 * The harness is the supervisor: a process that dies on its own (not killed by the harness) is
 * restarted too, and reported under `unexpected_exits`.
 *
 * `npm run chaos -- --json` runs it (scripts/chaos.ts; `--blocks 600` is a ~2 minute smoke run).
 * docs/reliability.md describes it and keeps the latest results.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createWriteStream, type WriteStream } from 'node:fs'
import { chmod, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { createPublicClient, createWalletClient, http, keccak256, stringToHex, type Address, type Hex, type PublicClient } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { privateNatsServer, type PrivateNatsServer } from '../../src/bus/nats/nats-server.fixture.js'
import { DEV_L1_CHAIN_ID, DEV_L2_CHAIN_ID, startAnvil, type AnvilInstance } from '../../src/chain/anvil.js'
import { deployMockVerifier, deployOracle } from '../../src/chain/deploy.js'
import { ANVIL_DEV_KEYS, installMessagePasser, startLoad, type LoadGenerator } from '../../src/chain/load.js'
import { mulberry32 } from '../../src/core/random.js'
import { BIN, ROOT } from '../support/cli.js'
import { privatePostgres, type PrivatePostgres } from '../support/private-postgres.js'
import { startS3Server, type S3TestServer } from '../support/s3-server.js'
import { miningGate, type MiningGate } from '../support/mining-gate.js'
import { tcpProxy, type TcpProxy } from '../support/tcp-proxy.js'
import { canonicalOutputRoot, checkChains, checkJobs, oracleLatest, type ChainReport, type JobsReport, type OrphanedBlock } from './checker.js'

/** How many disruptions of each kind a run injects. */
export interface ChaosPlan {
  orchestratorKills: number
  workerKills: number
  /** SIGKILLs of the orchestrator while its proposer has a proposal in flight (the proposer runs inside it). */
  proposerKills: number
  natsRestarts: number
  postgresRestarts: number
  /** The first of the two L1 RPC endpoints goes down, then up. */
  l1Outages: number
  reorgs: number
}

/** Options of {@link runChaos}. */
export interface ChaosOptions {
  /** L2 blocks that must be proposed (from the block after the anchor). */
  blocks: number
  seed: number
  /** `proofline worker` processes. @default 3 */
  workers?: number
  plan: ChaosPlan
  /** Deepest injected reorg; one reorg is always exactly this deep. @default 64 */
  maxReorgDepth?: number
  /** Hard bound on the whole run, setup and checks included. @default 28 min */
  deadlineMs?: number
  /**
   * Put the mining gate (test/support/mining-gate.ts) in front of the dev L2. Off only to
   * measure what it changes. @default true
   */
  l2Gate?: boolean
  /** Keep the work folder (logs) instead of removing it. @default false */
  keepDir?: boolean
  /** Progress lines. @default stderr */
  log?: (line: string) => void
  /** Aborting ends the run early (disruptions stop, everything is stopped and cleaned up). */
  signal?: AbortSignal
}

/** One injected disruption. */
export interface Injection {
  kind: 'orchestrator-kill' | 'worker-kill' | 'proposer-kill' | 'nats-restart' | 'postgres-restart' | 'l1-outage' | 'reorg'
  /** L2 head when it was injected. */
  atL2Block: number
  atMs: number
  /** Kills: whether the killed process had work in flight (a running attempt; for the proposer, a proposal not yet recorded). */
  inFlight?: boolean
  target?: string
  depth?: number
  downMs?: number
  /** Reorgs: whether the pipeline had caught up with the chain (everything proven) when it struck. */
  quiet?: boolean
}

/** What `npm run chaos -- --json` prints. */
export interface ChaosResult {
  ok: boolean
  lost: number
  duplicates: number
  gaps: number
  orphaned_in_proposals: number
  stuck_jobs: number
  kills: number
  restarts: number
  outages: number
  reorgs: number
  kills_in_flight: number
  injected: Record<Injection['kind'], number>
  max_reorg_depth_injected: number
  /** Processes that died without the harness killing them (restarted by the harness). */
  unexpected_exits: { name: string; code: number | null; signal: string | null; atMs: number; lastStderr: string }[]
  blocks: { start: number; target: number; l2Head: number; proposedTo: number; orphanedRecorded: number; orphanedConfirmed: number }
  proposals: number
  non_canonical_proposals: number
  discontinuities: number
  jobs: JobsReport['byState']
  attempts_left_running: number
  findings: string[]
  stuck_examples: JobsReport['examples']
  seed: number
  durationMs: number
  phases: Record<string, number>
  timeline: Injection[]
  workDir?: string
  /**
   * Set when the dev L2 node (anvil) stopped answering RPC: the run was stopped there. A fault
   * of the dev chain the harness runs, not a verdict on proofline; the chain checks were not
   * made (the node cannot answer them).
   */
  l2_node_hung?: { atMs: number; l2Head: number; detail: string }
  /** Calls through the mining gate in front of the dev L2 (see test/support/mining-gate.ts). */
  l2_gate?: { readers: number; writers: number; timeouts: number; failures: number; writerWaitMs: number }
  error?: string
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
/** A dev account the load generator does not use: it signs the reorgs' replacement transactions. */
const REORG_SENDER: Address = privateKeyToAccount(ANVIL_DEV_KEYS[8] as Hex).address

/** A supervised child process: restarted when it dies, unless the harness is stopping it. */
class Supervised {
  child: ChildProcess | undefined
  exits: ChaosResult['unexpected_exits'] = []
  restarts = 0
  private killedByUs = false
  private stopping = false
  private tail = ''
  /** The last line the process logged about a failed or refused proposer round. */
  lastProposerTrouble: string | undefined
  private readonly out: WriteStream

  constructor(
    readonly name: string,
    private readonly args: string[],
    private readonly env: Record<string, string>,
    logDir: string,
    private readonly t0: number,
    private readonly log: (l: string) => void,
  ) {
    this.out = createWriteStream(join(logDir, `${name}.log`), { flags: 'a' })
  }

  start(): void {
    this.killedByUs = false
    const c = spawn(process.execPath, [BIN, ...this.args], { cwd: ROOT, env: this.env, stdio: ['ignore', 'pipe', 'pipe'] })
    this.child = c
    this.out.write(`--- start pid ${String(c.pid)} at +${Date.now() - this.t0} ms\n`)
    c.stdout?.on('data', (d: Buffer) => this.out.write(d))
    c.stderr?.on('data', (d: Buffer) => {
      this.out.write(d)
      this.tail = (this.tail + d.toString()).slice(-1500)
      for (const line of d.toString().split('\n')) {
        if (/proposer round failed|refusing to propose|rejects the proposal/.test(line)) this.lastProposerTrouble = line.slice(0, 600)
      }
    })
    c.on('close', (code, signal) => {
      this.out.write(`--- exit code ${String(code)} signal ${String(signal)} at +${Date.now() - this.t0} ms\n`)
      if (this.child === c) this.child = undefined
      if (this.stopping || this.killedByUs) return
      this.exits.push({ name: this.name, code, signal, atMs: Date.now() - this.t0, lastStderr: this.tail.slice(-600) })
      this.log(`${this.name} exited on its own (code ${String(code)}, signal ${String(signal)}); restarting`)
      setTimeout(() => {
        if (!this.stopping && this.child === undefined) {
          this.restarts++
          this.start()
        }
      }, 1_000)
    })
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null
  }

  /** SIGKILLs it (the harness restarts it with `start()`). */
  async kill(): Promise<void> {
    const c = this.child
    if (!c || c.exitCode !== null || c.signalCode !== null) return
    this.killedByUs = true
    const closed = new Promise<void>((r) => c.once('close', () => r()))
    c.kill('SIGKILL')
    await closed
  }

  /** SIGTERM, then SIGKILL after `graceMs`; no restart. */
  async stop(graceMs = 20_000): Promise<number | null> {
    this.stopping = true
    const c = this.child
    if (!c || c.exitCode !== null || c.signalCode !== null) return c?.exitCode ?? null
    const closed = new Promise<number | null>((r) => c.once('close', (code) => r(code)))
    c.kill('SIGTERM')
    const t = setTimeout(() => c.kill('SIGKILL'), graceMs)
    const code = await closed
    clearTimeout(t)
    return code
  }

  async close(): Promise<void> {
    await new Promise<void>((r) => this.out.end(() => r()))
  }
}

/**
 * Runs the L2 load only while the watcher keeps up (`head − next emitted ≤ lead`), so the chain
 * does not run away from the pipeline and reorgs hit blocks that are already in jobs. Stopped
 * and restarted around each reorg (the load re-reads its nonces after a reorg dropped its
 * transactions).
 */
class PacedLoad {
  private gen: { load: LoadGenerator; abort: AbortController } | undefined
  private burner: Address | undefined
  private seed: number
  private held = false
  private loop: Promise<void> | undefined
  /** The loop's current step; `hold` waits for it, so no load starts or block is mined under a reorg. */
  private step: Promise<void> = Promise.resolve()
  private readonly halt = new AbortController()
  stopped = false

  constructor(
    private readonly rpcUrl: string,
    seed: number,
    private readonly lag: () => Promise<number | undefined>,
    private readonly lead: number,
    private readonly mineEmpty: () => Promise<unknown>,
  ) {
    this.seed = seed
  }

  start(): void {
    this.loop = (async () => {
      while (!this.halt.signal.aborted) {
        this.step = (async () => {
          const lag = await this.lag().catch(() => undefined)
          const want = !this.held && lag !== undefined && lag <= this.lead
          if (want && !this.gen) await this.run().catch(() => undefined)
          else if (!want && this.gen && (lag === undefined || lag > this.lead + 16 || this.held)) await this.pause()
          // Between the load's blocks, empty ones (as on a quiet L2): the chain grows twice as fast.
          if (this.gen && !this.held) await this.mineEmpty().catch(() => undefined)
        })()
        await this.step
        await sleep(100)
      }
      await this.pause()
    })()
  }

  private async run(): Promise<void> {
    const abort = new AbortController()
    const load = await startLoad({
      rpcUrl: this.rpcUrl,
      privateKeys: ANVIL_DEV_KEYS.slice(1, 4),
      txPerBlock: 1,
      blockIntervalMs: 0,
      seed: this.seed++,
      signal: abort.signal,
      ...(this.burner !== undefined ? { burner: this.burner } : {}),
    })
    this.burner = load.burner
    this.gen = { load, abort }
  }

  async pause(): Promise<void> {
    const g = this.gen
    this.gen = undefined
    if (!g) return
    g.abort.abort()
    await g.load.done
  }

  /** Stops the load for `fn` (a reorg). */
  async hold<T>(fn: () => Promise<T>): Promise<T> {
    this.held = true
    try {
      // A step in progress may be starting the load (startLoad) or mining: let it finish, then
      // stop the load; the next steps see `held` and do neither.
      await this.step
      await this.pause()
      return await fn()
    } finally {
      this.held = false
    }
  }

  async stop(): Promise<void> {
    this.stopped = true
    this.halt.abort()
    await this.loop
  }
}

/** A one-line picture of a process's threads from /proc (state and wait channel, counted), e.g. `12 × S futex_wait_queue`. */
async function anvilThreads(pid: number): Promise<string> {
  try {
    const tids = await readdir(`/proc/${pid}/task`)
    const counts = new Map<string, number>()
    for (const tid of tids) {
      const stat = await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8').catch(() => '')
      const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] ?? '?'
      const wchan = (await readFile(`/proc/${pid}/task/${tid}/wchan`, 'utf8').catch(() => '?')) || '-'
      const k = `${state} ${wchan}`
      counts.set(k, (counts.get(k) ?? 0) + 1)
    }
    return [...counts].map(([k, n]) => `${n} × ${k}`).join(', ')
  } catch (err) {
    return `unknown (${(err as Error).message})`
  }
}

/** The default plan of the full run. */
export const FULL_PLAN: ChaosPlan = { orchestratorKills: 5, workerKills: 8, proposerKills: 3, natsRestarts: 3, postgresRestarts: 3, l1Outages: 4, reorgs: 14 }

/** Runs the chaos scenario and checks the outcome. Never throws: failures are in the result. */
export async function runChaos(opts: ChaosOptions): Promise<ChaosResult> {
  const t0 = Date.now()
  const log = opts.log ?? ((l: string) => void process.stderr.write(`[chaos +${((Date.now() - t0) / 1000).toFixed(0)}s] ${l}\n`))
  const rand = mulberry32(opts.seed)
  const maxDepth = opts.maxReorgDepth ?? 64
  let deadline = t0 + (opts.deadlineMs ?? 28 * 60_000)
  opts.signal?.addEventListener('abort', () => (deadline = Date.now()), { once: true })
  const nWorkers = opts.workers ?? 3
  const START = 2 // block 1 is the oracle's anchor
  const TARGET = START + opts.blocks - 1
  const SCHEMA = 'chaos'
  const phases: Record<string, number> = {}
  const timeline: Injection[] = []
  const orphaned: OrphanedBlock[] = []
  const cleanups: (() => Promise<unknown>)[] = []
  const procs: Supervised[] = []
  let error: string | undefined
  let checked: { chain?: ChainReport; jobs?: JobsReport } | undefined
  let l2Head = 0
  let dir = ''
  let gate: MiningGate | undefined
  let l2Hung: ChaosResult['l2_node_hung']
  try {
    dir = await mkdtemp(join(tmpdir(), 'pl-chaos-'))
    await chmod(dir, 0o755)
    const logDir = join(dir, 'logs')
    await mkdir(logDir)
    log(`work folder ${dir}`)

    // --- infrastructure ---------------------------------------------------------------------
    const pgsrv: PrivatePostgres = await privatePostgres()
    cleanups.push(() => pgsrv.dispose())
    await pgsrv.start()
    const nats: PrivateNatsServer = await privateNatsServer()
    cleanups.push(() => nats.dispose())
    await nats.start()
    const s3: S3TestServer = await startS3Server()
    cleanups.push(() => s3.close())
    // L1 mines every second (transactions wait in the pool, as on a real chain); L2 is mined by the load.
    const l1: AnvilInstance = await startAnvil({ chainId: DEV_L1_CHAIN_ID, blockTimeSec: 1 })
    cleanups.push(() => l1.stop())
    const l2: AnvilInstance = await startAnvil({ chainId: DEV_L2_CHAIN_ID })
    cleanups.push(() => l2.stop())
    // Every client of the L2 — the orchestrator (watcher, proposer), the load, the harness's
    // own mining and reorgs — goes through the gate: block production never overlaps a state
    // lookup (anvil's deadlock, foundry-rs/foundry#10452), at most one mining call per 50 ms.
    const l2Gate = opts.l2Gate === false ? undefined : await miningGate({ target: l2.rpcUrl, minMiningIntervalMs: 50, upstreamTimeoutMs: 60_000 })
    gate = l2Gate
    if (l2Gate) cleanups.push(() => l2Gate.close())
    const l2Url = l2Gate?.url ?? l2.rpcUrl
    const l1Endpoints: TcpProxy[] = [await tcpProxy({ host: '127.0.0.1', port: l1.port }), await tcpProxy({ host: '127.0.0.1', port: l1.port })]
    cleanups.push(async () => {
      for (const p of l1Endpoints) await p.stop()
    })
    // The harness's own chain calls are bounded: 20 s, one retry (none for the ones that change
    // the chain, so a reorg is never sent twice).
    const l2c: PublicClient = createPublicClient({ transport: http(l2Url, { timeout: 20_000, retryCount: 1 }), cacheTime: 0 })
    const l1c: PublicClient = createPublicClient({ transport: http(l1.rpcUrl, { timeout: 20_000, retryCount: 1 }), cacheTime: 0 })
    /** Calls that change the L2 chain (mining, reorgs): never retried, up to 60 s (a 64-deep reorg under load is slow). */
    const l2w: PublicClient = createPublicClient({ transport: http(l2Url, { timeout: 60_000, retryCount: 0 }), cacheTime: 0 })
    /** One bounded call to the L2 node, without viem's retries: the watchdog's probe. Through the gate too, so even the probe never overlaps mining. */
    const l2Probe = async (method: string, params: unknown[] = [], timeoutMs = 10_000): Promise<unknown> => {
      const res = await fetch(l2Url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
        signal: AbortSignal.timeout(timeoutMs),
      })
      const j = (await res.json()) as { result?: unknown; error?: { message?: string } }
      if (j.error) throw new Error(`${method}: ${j.error.message ?? 'error'}`)
      return j.result
    }
    await installMessagePasser(l2c)
    await l2c.request({ method: 'anvil_mine' as never, params: ['0x1'] as never })
    const anchor = await canonicalOutputRoot(l2c, 1)
    const wallet = createWalletClient({ account: privateKeyToAccount(ANVIL_DEV_KEYS[0] as Hex), transport: http(l1.rpcUrl) })
    const verifier = await deployMockVerifier(wallet, l1c)
    const oracle = await deployOracle(wallet, l1c, {
      anchorRoot: anchor.outputRoot,
      anchorBlock: 1n,
      intervalBlocks: 1n,
      verifier: verifier.address,
      programId: keccak256(stringToHex('mock-v1')),
      chainConfigHash: keccak256(stringToHex('proofline-chaos')),
      proposer: wallet.account.address,
    })
    const db = new pg.Pool({ connectionString: pgsrv.url, max: 2, connectionTimeoutMillis: 3_000, query_timeout: 15_000 })
    db.on('error', () => {})
    cleanups.push(() => db.end())
    const query = async <T extends pg.QueryResultRow>(text: string, params: unknown[] = []): Promise<T[] | undefined> => {
      try {
        return (await db.query<T>(text, params)).rows
      } catch {
        return undefined
      }
    }
    const head = async (): Promise<number> => (l2Head = Number(await l2c.getBlockNumber()))
    /** How far the L2 head is ahead of the watcher (from its cursor in the state store). */
    const lag = async (): Promise<number | undefined> => {
      const rows = await query<{ value: string }>(`select value from ${SCHEMA}.state_meta where key = 'source.watcher'`)
      if (rows === undefined) return undefined
      const next = rows[0] ? (JSON.parse(rows[0].value) as { next: number }).next : START
      return (await head()) - next
    }
    phases.setupMs = Date.now() - t0

    // --- watchdog: a dev L2 node that stops answering ends the run with that verdict ---------
    // (anvil 1.7.1 was seen to stop answering every call for good, even a plain eth_blockNumber;
    // waiting on it would only burn the deadline.) The gate also reports a call the node has
    // left unanswered for that long.
    const HUNG_AFTER_MS = 90_000
    let l2AnsweredAt = Date.now()
    const watchdog = setInterval(() => {
      void (async () => {
        if (l2Hung !== undefined) return
        try {
          await l2Probe('eth_blockNumber', [], 10_000)
          l2AnsweredAt = Date.now()
        } catch {
          // counted below
        }
        const silentMs = Date.now() - l2AnsweredAt
        const stuck = l2Gate?.stuckFor()
        if (silentMs < HUNG_AFTER_MS && (stuck === undefined || stuck.ms < HUNG_AFTER_MS)) return
        const threads = await anvilThreads(l2.pid)
        const detail =
          silentMs >= HUNG_AFTER_MS
            ? `eth_blockNumber got no answer for ${Math.round(silentMs / 1000)} s`
            : `${stuck?.method ?? '?'} waited ${Math.round((stuck?.ms ?? 0) / 1000)} s for an answer while eth_blockNumber still answered`
        l2Hung = { atMs: Date.now() - t0, l2Head, detail: `${detail}; anvil pid ${l2.pid} threads: ${threads}` }
        error ??= `the dev L2 node (anvil) stopped answering at L2 ${l2Head} (+${Math.round((Date.now() - t0) / 1000)} s): ${l2Hung.detail}. A fault of the dev chain, not a proofline verdict; the run was stopped there`
        log(error)
        deadline = Date.now()
      })()
    }, 5_000)
    cleanups.push(() => Promise.resolve(clearInterval(watchdog)))
    log(`postgres ${pgsrv.url}, nats ${nats.url}, s3 ${s3.endpoint}, L1 ${l1.rpcUrl} via ${l1Endpoints.map((p) => p.url).join(' + ')}, L2 ${l2.rpcUrl}, oracle ${oracle.address}`)

    // --- proofline ---------------------------------------------------------------------------
    const file = join(ROOT, 'deploy', 'pipeline.yaml')
    const base: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/root',
      PROOFLINE_DATA_DIR: join(dir, 'data'),
      PROOFLINE_BUS__SERVERS: nats.url,
      PROOFLINE_ARTIFACTS__ENDPOINT: s3.endpoint,
      PROOFLINE_LOG__LEVEL: 'warn',
      AWS_ACCESS_KEY_ID: s3.credentials.accessKeyId,
      AWS_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey,
    }
    // The orchestrator gets the database and the proposer key; workers get neither.
    const orchestratorEnv: Record<string, string> = {
      ...base,
      PROOFLINE_STATE__URL: pgsrv.url,
      PROOFLINE_STATE__SCHEMA: SCHEMA,
      PROOFLINE_API__HOST: '127.0.0.1',
      PROOFLINE_API__PORT: '0',
      PROOFLINE_LEADER__LEASE_MS: '8000',
      PROOFLINE_SOURCE__RPC_URL: l2Url,
      PROOFLINE_SOURCE__MAX_REORG_DEPTH: String(Math.max(128, 2 * maxDepth)),
      PROOFLINE_PROPOSER__L1_RPC_URLS: `[${l1Endpoints.map((p) => p.url).join(', ')}]`,
      PROOFLINE_PROPOSER__ORACLE: oracle.address,
      PROOFLINE_PROPOSER__L2_CONFIRMATIONS: String(maxDepth + 1),
      PROPOSER_PRIVATE_KEY: ANVIL_DEV_KEYS[0] as string,
    }
    const orchestrator = new Supervised('orchestrator', ['run', '--config', file], orchestratorEnv, logDir, t0, log)
    const workers = Array.from({ length: nWorkers }, (_, i) => new Supervised(`w${i + 1}`, ['worker', '--config', file, '--stage', 'range,aggregate', '--worker-id', `w${i + 1}`, '--concurrency', '2'], base, logDir, t0, log))
    procs.push(orchestrator, ...workers)
    orchestrator.start()
    for (const w of workers) w.start()
    const load = new PacedLoad(l2Url, opts.seed, lag, 48, () => l2w.request({ method: 'anvil_mine' as never, params: ['0x2'] as never }))
    cleanups.push(() => load.stop())
    load.start()

    // --- the schedule: each disruption at a seeded L2 height ----------------------------------
    const kinds: Injection['kind'][] = []
    const add = (k: Injection['kind'], n: number): void => {
      for (let i = 0; i < n; i++) kinds.push(k)
    }
    add('orchestrator-kill', opts.plan.orchestratorKills)
    add('worker-kill', opts.plan.workerKills)
    add('proposer-kill', opts.plan.proposerKills)
    add('nats-restart', opts.plan.natsRestarts)
    add('postgres-restart', opts.plan.postgresRestarts)
    add('l1-outage', opts.plan.l1Outages)
    add('reorg', opts.plan.reorgs)
    // Heights spread over the run (after a warm-up, before the end); order shuffled by the seed.
    const lo = Math.min(150, Math.floor(opts.blocks * 0.1))
    const hi = Math.max(lo + 1, Math.floor(opts.blocks * 0.9))
    const schedule = kinds
      .map((kind) => ({ kind, at: START + lo + Math.floor(rand() * (hi - lo)) }))
      .sort((a, b) => a.at - b.at)
    const reorgIdx = schedule.findIndex((s) => s.kind === 'reorg')
    const depths = schedule.map((s, i) => (s.kind !== 'reorg' ? 0 : i === reorgIdx ? maxDepth : 1 + Math.floor(rand() * maxDepth)))
    log(`schedule: ${schedule.map((s) => `${s.kind}@${s.at}`).join(', ')}`)

    const runningAttempts = async (worker?: string): Promise<number> => {
      const rows = await query<{ n: number }>(
        worker === undefined
          ? `select count(*)::int as n from ${SCHEMA}.state_jobs where state = 'running'`
          : `select count(*)::int as n from ${SCHEMA}.state_attempts where worker_id = $1 and outcome = 'running'`,
        worker === undefined ? [] : [worker],
      )
      return rows?.[0]?.n ?? 0
    }
    const openJobs = async (): Promise<number> => {
      const rows = await query<{ n: number }>(`select count(*)::int as n from ${SCHEMA}.state_jobs where state in ('pending', 'running', 'retrying', 'failed')`)
      return rows?.[0]?.n ?? 1
    }
    const proposalInFlight = async (): Promise<boolean> => {
      const rows = await query<{ n: number }>(`select count(*)::int as n from ${SCHEMA}.proposer_proposals where status = 'in-flight'`)
      return (rows?.[0]?.n ?? 0) > 0
    }
    const waitUntil = async (cond: () => Promise<boolean>, ms: number): Promise<boolean> => {
      const end = Math.min(Date.now() + ms, deadline)
      while (Date.now() < end) {
        if (await cond()) return true
        await sleep(50)
      }
      return false
    }
    const downFor = (minMs: number, maxMs: number): number => minMs + Math.floor(rand() * (maxMs - minMs))
    const chaosDeadline = deadline - 6 * 60_000 // leave time to settle and check

    const inject = async (kind: Injection['kind'], depth: number): Promise<void> => {
      const at: Injection = { kind, atL2Block: l2Head, atMs: Date.now() - t0 }
      switch (kind) {
        case 'orchestrator-kill': {
          await waitUntil(async () => orchestrator.running && (await runningAttempts()) > 0, 15_000)
          at.inFlight = orchestrator.running && (await runningAttempts()) > 0
          await orchestrator.kill()
          at.downMs = downFor(300, 3_000)
          await sleep(at.downMs)
          orchestrator.start()
          orchestrator.restarts++
          break
        }
        case 'worker-kill': {
          const w = workers[Math.floor(rand() * workers.length)] as Supervised
          at.target = w.name
          await waitUntil(async () => w.running && (await runningAttempts(w.name)) > 0, 15_000)
          at.inFlight = w.running && (await runningAttempts(w.name)) > 0
          await w.kill()
          at.downMs = downFor(300, 3_000)
          await sleep(at.downMs)
          w.start()
          w.restarts++
          break
        }
        case 'proposer-kill': {
          // The proposer lives in the orchestrator: kill it while a proposal is sent but not recorded.
          await waitUntil(async () => orchestrator.running && (await proposalInFlight()), 60_000)
          at.inFlight = orchestrator.running && (await proposalInFlight())
          at.target = 'orchestrator (proposer)'
          await orchestrator.kill()
          at.downMs = downFor(300, 3_000)
          await sleep(at.downMs)
          orchestrator.start()
          orchestrator.restarts++
          break
        }
        case 'nats-restart': {
          await nats.kill()
          at.downMs = downFor(500, 4_000)
          await sleep(at.downMs)
          await nats.start()
          break
        }
        case 'postgres-restart': {
          await pgsrv.crash()
          at.downMs = downFor(500, 3_000)
          await sleep(at.downMs)
          await pgsrv.start()
          break
        }
        case 'l1-outage': {
          const p = l1Endpoints[0] as TcpProxy
          await p.stop()
          at.downMs = downFor(5_000, 20_000)
          at.target = p.url
          await sleep(at.downMs)
          await p.start()
          break
        }
        case 'reorg': {
          await load.hold(async () => {
            // Every other reorg waits (up to 20 s) for the pipeline to catch up with the
            // paused chain — blocks proven, aggregated and, where allowed, proposed — so it
            // orphans finished work; the others strike whatever is in flight.
            if (timeline.filter((t) => t.kind === 'reorg').length % 2 === 0) {
              at.quiet = await waitUntil(async () => ((await lag()) ?? 99) <= 1 && (await openJobs()) === 0, 20_000)
            }
            const h = await head()
            const d = Math.min(depth, h - 2) // never below the anchor
            for (let n = h - d + 1; n <= h; n++) {
              const b = await l2c.getBlock({ blockNumber: BigInt(n) })
              orphaned.push({ number: n, hash: b.hash })
            }
            await l2w.request(
              {
                method: 'anvil_reorg' as never,
                params: [d, [[{ from: REORG_SENDER, to: '0x000000000000000000000000000000000000dEaD', value: `0x${(timeline.length + 1).toString(16)}` }, 0]]] as never,
              },
            )
            at.depth = d
            at.atL2Block = h
          })
          break
        }
      }
      timeline.push(at)
      log(`${kind}${at.target ? ` ${at.target}` : ''}${at.depth !== undefined ? ` depth ${at.depth}` : ''}${at.inFlight !== undefined ? ` (in flight: ${String(at.inFlight)})` : ''}${at.quiet !== undefined ? ` (quiet: ${String(at.quiet)})` : ''} at L2 ${at.atL2Block}`)
    }

    const progress = setInterval(() => {
      void (async () => {
        const l = await lag().catch(() => undefined)
        const latest = await oracleLatest(l1c, oracle.address).catch(() => -1)
        if (latest >= 0 && latest !== lastOracle.n) lastOracle = { n: latest, at: Date.now() }
        const jobs = await query<{ state: string; n: number }>(`select state, count(*)::int as n from ${SCHEMA}.state_jobs group by state`)
        log(`progress: L2 head ${l2Head}, watcher lag ${String(l)}, oracle at ${latest}, jobs ${JSON.stringify(Object.fromEntries((jobs ?? []).map((r) => [r.state, r.n])))}`)
      })()
    }, 30_000)
    cleanups.push(() => Promise.resolve(clearInterval(progress)))
    const tChaos = Date.now()
    // The L2 head only grows while the pipeline keeps up (the load is paced): a head that does
    // not move for 5 minutes means proofline stalled; so does an oracle that does not move for
    // 5 minutes while L2 has blocks deep enough to propose. Stop early instead of waiting for
    // the deadline, and say what was seen.
    let lastHead = { n: -1, at: Date.now() }
    let lastOracle = { n: -1, at: Date.now() }
    const stallOf = (): string | undefined => {
      if (l2Head !== lastHead.n) lastHead = { n: l2Head, at: Date.now() }
      if (Date.now() - lastHead.at > 5 * 60_000) return 'the L2 head did not move for 5 minutes'
      if (Date.now() - lastOracle.at > 5 * 60_000 && l2Head > lastOracle.n + maxDepth + 1 + 64) return `the oracle stayed at L2 ${lastOracle.n} for 5 minutes while the L2 head reached ${l2Head}`
      return undefined
    }
    const stalled = (): boolean => stallOf() !== undefined
    /** What the outside world shows when the run stops short: where the oracle is, whether L2 has its next block, the proposer's last complaint. */
    const diagnose = async (): Promise<string> => {
      const latest = await oracleLatest(l1c, oracle.address).catch(() => -1)
      const direct = await l2Probe('eth_blockNumber').then((h) => `L2 head ${Number(h as string)}`, (e: Error) => `L2 node did not answer eth_blockNumber (${e.message})`)
      const next =
        latest < 0
          ? ''
          : await l2Probe('eth_getBlockByNumber', [`0x${(latest + 1).toString(16)}`, false]).then(
              (b) => (b === null ? `; L2 block ${latest + 1} does NOT exist on the node` : `; L2 block ${latest + 1} is ${(b as { hash: string }).hash}`),
              (e: Error) => `; L2 block ${latest + 1} could not be read (${e.message})`,
            )
      const jobs = await query<{ state: string; n: number }>(`select state, count(*)::int as n from ${SCHEMA}.state_jobs group by state`)
      const trouble = orchestrator.lastProposerTrouble === undefined ? '' : `; proposer's last complaint: ${orchestrator.lastProposerTrouble}`
      return `oracle at ${latest}, ${direct}${next}; jobs ${JSON.stringify(Object.fromEntries((jobs ?? []).map((r) => [r.state, r.n])))}${trouble}`
    }
    for (let i = 0; i < schedule.length; i++) {
      const s = schedule[i] as { kind: Injection['kind']; at: number }
      while ((await head().catch(() => 0)) < s.at && Date.now() < Math.min(chaosDeadline, deadline) && !stalled()) await sleep(200)
      if (Date.now() >= Math.min(chaosDeadline, deadline) || stalled()) {
        const stall = stallOf()
        error ??= `the chaos phase ${stall !== undefined ? `stalled (${stall})` : 'ran out of time'} before ${schedule.length - i} of ${schedule.length} disruptions (L2 at ${l2Head}): ${await diagnose()}`
        log(error)
        break
      }
      await inject(s.kind, depths[i] ?? 1)
    }
    phases.chaosMs = Date.now() - tChaos

    // --- settle: the chain grows past the target, then stops; everything must drain ----------
    const tSettle = Date.now()
    const finalHead = TARGET + maxDepth + 2
    while (error === undefined && (await head().catch(() => 0)) < finalHead && Date.now() < deadline - 4 * 60_000 && !stalled()) await sleep(250)
    await load.stop()
    // Enough empty blocks on top that every job up to the target is deep enough to propose.
    if (l2Hung === undefined) await l2w.request({ method: 'anvil_mine' as never, params: [`0x${(maxDepth + 200).toString(16)}`] as never })
    const endHead = await head().catch(() => l2Head)
    log(`load stopped; L2 head ${endHead}; waiting for proposals up to ${TARGET} and for every job to finish`)
    const drained = async (): Promise<boolean> => {
      const latest = await oracleLatest(l1c, oracle.address).catch(() => 0)
      if (latest < TARGET) return false
      const rows = await query<{ n: number }>(`select count(*)::int as n from ${SCHEMA}.state_jobs where state in ('pending', 'running', 'retrying', 'failed')`)
      const cursor = await lag().catch(() => undefined)
      return rows !== undefined && rows[0]?.n === 0 && cursor !== undefined && cursor <= 1
    }
    // Drained means quiet for 10 s: no open job and no new one. A collector's open group (the
    // tail blocks past the target) closes on its timeout (2 s) into a new job after a check that
    // saw none; stopping then would leave that job pending (a run stopped 1 s too early did so).
    const jobCount = async (): Promise<number | undefined> => (await query<{ n: number }>(`select count(*)::int as n from ${SCHEMA}.state_jobs`))?.[0]?.n
    let quiet: { since: number; jobs: number } | undefined
    let settled = false
    while (!settled && Date.now() < deadline - 60_000 && !stalled()) {
      const n = (await drained()) ? await jobCount() : undefined
      if (n === undefined) quiet = undefined
      else if (quiet === undefined || quiet.jobs !== n) quiet = { since: Date.now(), jobs: n }
      settled = quiet !== undefined && Date.now() - quiet.since >= 10_000
      if (!settled) await sleep(1_000)
    }
    if (!settled) error ??= `did not drain ${stalled() ? `(${stallOf() ?? ''})` : 'within the deadline'}, target ${TARGET}: ${await diagnose()}`
    phases.settleMs = Date.now() - tSettle

    // --- stop and check ---------------------------------------------------------------------
    for (const w of workers) await w.stop()
    await orchestrator.stop()
    const tCheck = Date.now()
    checked = {}
    // With the L2 node hung, the chain checks cannot be made (they would wait on it); the state
    // tables still can. The checks are bounded too: a node that hangs now ends them.
    const bounded = <T>(what: string, p: Promise<T>, ms: number): Promise<T> =>
      Promise.race([p, sleep(ms).then(() => Promise.reject(new Error(`${what} got no answer within ${Math.round(ms / 1000)} s`)))])
    if (l2Hung === undefined) checked.chain = await bounded('the chain check', checkChains({ l1RpcUrl: l1.rpcUrl, l2RpcUrl: l2.rpcUrl, oracle: oracle.address, start: START, target: TARGET, orphaned }), 5 * 60_000)
    checked.jobs = await bounded('the jobs check', checkJobs(pgsrv.url, SCHEMA), 60_000)
    phases.checkMs = Date.now() - tCheck
  } catch (err) {
    error = (err as Error).stack ?? String(err)
    log(`harness error: ${error}`)
  } finally {
    for (const p of procs) {
      await p.stop(5_000).catch(() => undefined)
      await p.close()
    }
    for (const c of cleanups.reverse()) await c().catch(() => undefined)
    if (dir && !opts.keepDir) await rm(dir, { recursive: true, force: true }).catch(() => undefined)
  }

  const count = (k: Injection['kind']): number => timeline.filter((t) => t.kind === k).length
  const injected = Object.fromEntries(
    (['orchestrator-kill', 'worker-kill', 'proposer-kill', 'nats-restart', 'postgres-restart', 'l1-outage', 'reorg'] as const).map((k) => [k, count(k)]),
  ) as ChaosResult['injected']
  const kills = injected['orchestrator-kill'] + injected['worker-kill'] + injected['proposer-kill']
  const unexpected = procs.flatMap((p) => p.exits)
  const c = { chain: checked?.chain, jobs: checked?.jobs }
  const result: ChaosResult = {
    ok: false,
    lost: c.chain?.lost ?? -1,
    duplicates: c.chain?.duplicates ?? -1,
    gaps: c.chain?.gaps ?? -1,
    orphaned_in_proposals: c.chain?.orphanedInProposals ?? -1,
    stuck_jobs: c.jobs?.stuck ?? -1,
    kills,
    restarts: procs.reduce((n, p) => n + p.restarts, 0) + injected['nats-restart'] + injected['postgres-restart'],
    outages: injected['l1-outage'],
    reorgs: injected.reorg,
    kills_in_flight: timeline.filter((t) => t.inFlight === true).length,
    injected,
    max_reorg_depth_injected: Math.max(0, ...timeline.map((t) => t.depth ?? 0)),
    unexpected_exits: unexpected,
    blocks: {
      start: START,
      target: TARGET,
      l2Head,
      proposedTo: c.chain?.proposedTo ?? -1,
      orphanedRecorded: orphaned.length,
      orphanedConfirmed: c.chain?.orphanedConfirmed ?? -1,
    },
    proposals: c.chain?.proposals ?? 0,
    non_canonical_proposals: c.chain?.nonCanonicalProposals ?? -1,
    discontinuities: c.chain?.discontinuities ?? -1,
    jobs: c.jobs?.byState ?? {},
    attempts_left_running: c.jobs?.attemptsLeftRunning ?? -1,
    findings: c.chain?.findings ?? [],
    stuck_examples: c.jobs?.examples ?? [],
    seed: opts.seed,
    durationMs: Date.now() - t0,
    phases,
    timeline,
    ...(opts.keepDir ? { workDir: dir } : {}),
    ...(l2Hung !== undefined ? { l2_node_hung: l2Hung } : {}),
    ...(gate !== undefined ? { l2_gate: gate.stats() } : {}),
    ...(error !== undefined ? { error } : {}),
  }
  result.ok =
    error === undefined &&
    result.lost === 0 &&
    result.duplicates === 0 &&
    result.gaps === 0 &&
    result.orphaned_in_proposals === 0 &&
    result.stuck_jobs === 0 &&
    result.non_canonical_proposals === 0 &&
    result.discontinuities === 0 &&
    Object.values(injected).every((n) => n > 0) &&
    result.kills_in_flight > 0
  return result
}
