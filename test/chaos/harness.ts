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
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises'
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
        const lag = await this.lag().catch(() => undefined)
        const want = !this.held && lag !== undefined && lag <= this.lead
        if (want && !this.gen) await this.run()
        else if (!want && this.gen && (lag === undefined || lag > this.lead + 16 || this.held)) await this.pause()
        // Between the load's blocks, empty ones (as on a quiet L2): the chain grows twice as fast.
        if (this.gen && !this.held) await this.mineEmpty().catch(() => undefined)
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
  let checked: { chain: ChainReport; jobs: JobsReport } | undefined
  let l2Head = 0
  let dir = ''
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
    const l1Endpoints: TcpProxy[] = [await tcpProxy({ host: '127.0.0.1', port: l1.port }), await tcpProxy({ host: '127.0.0.1', port: l1.port })]
    cleanups.push(async () => {
      for (const p of l1Endpoints) await p.stop()
    })
    const l2c: PublicClient = createPublicClient({ transport: http(l2.rpcUrl, { timeout: 30_000 }), cacheTime: 0 })
    const l1c: PublicClient = createPublicClient({ transport: http(l1.rpcUrl, { timeout: 30_000 }), cacheTime: 0 })
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
    const db = new pg.Pool({ connectionString: pgsrv.url, max: 2, connectionTimeoutMillis: 3_000 })
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
      PROOFLINE_SOURCE__RPC_URL: l2.rpcUrl,
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
    const load = new PacedLoad(l2.rpcUrl, opts.seed, lag, 48, () => l2c.request({ method: 'anvil_mine' as never, params: ['0x2'] as never }))
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
            await l2c.request({
              method: 'anvil_reorg' as never,
              params: [d, [[{ from: REORG_SENDER, to: '0x000000000000000000000000000000000000dEaD', value: `0x${(timeline.length + 1).toString(16)}` }, 0]]] as never,
            })
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
        const jobs = await query<{ state: string; n: number }>(`select state, count(*)::int as n from ${SCHEMA}.state_jobs group by state`)
        log(`progress: L2 head ${l2Head}, watcher lag ${String(l)}, oracle at ${latest}, jobs ${JSON.stringify(Object.fromEntries((jobs ?? []).map((r) => [r.state, r.n])))}`)
      })()
    }, 30_000)
    cleanups.push(() => Promise.resolve(clearInterval(progress)))
    const tChaos = Date.now()
    // The L2 head only grows while the pipeline keeps up (the load is paced): a head that does
    // not move for 5 minutes means proofline stalled; stop early instead of waiting for the deadline.
    let lastHead = { n: -1, at: Date.now() }
    const stalled = (): boolean => {
      if (l2Head !== lastHead.n) lastHead = { n: l2Head, at: Date.now() }
      return Date.now() - lastHead.at > 5 * 60_000
    }
    for (let i = 0; i < schedule.length; i++) {
      const s = schedule[i] as { kind: Injection['kind']; at: number }
      while ((await head().catch(() => 0)) < s.at && Date.now() < Math.min(chaosDeadline, deadline) && !stalled()) await sleep(200)
      if (Date.now() >= Math.min(chaosDeadline, deadline) || stalled()) {
        error = `the chaos phase ${stalled() ? 'stalled (the L2 head did not move for 5 minutes)' : 'ran out of time'} before ${schedule.length - i} of ${schedule.length} disruptions (L2 at ${l2Head})`
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
    await l2c.request({ method: 'anvil_mine' as never, params: [`0x${(maxDepth + 200).toString(16)}`] as never })
    const endHead = await head()
    log(`load stopped; L2 head ${endHead}; waiting for proposals up to ${TARGET} and for every job to finish`)
    const drained = async (): Promise<boolean> => {
      const latest = await oracleLatest(l1c, oracle.address).catch(() => 0)
      if (latest < TARGET) return false
      const rows = await query<{ n: number }>(`select count(*)::int as n from ${SCHEMA}.state_jobs where state in ('pending', 'running', 'retrying', 'failed')`)
      const cursor = await lag()
      return rows !== undefined && rows[0]?.n === 0 && cursor !== undefined && cursor <= 1
    }
    let settled = false
    while (!settled && Date.now() < deadline - 60_000) {
      settled = await drained()
      if (!settled) await sleep(1_000)
    }
    if (!settled) error ??= `did not drain within the deadline (oracle at ${await oracleLatest(l1c, oracle.address).catch(() => -1)}, target ${TARGET})`
    phases.settleMs = Date.now() - tSettle

    // --- stop and check ---------------------------------------------------------------------
    for (const w of workers) await w.stop()
    await orchestrator.stop()
    const tCheck = Date.now()
    checked = {
      chain: await checkChains({ l1RpcUrl: l1.rpcUrl, l2RpcUrl: l2.rpcUrl, oracle: oracle.address, start: START, target: TARGET, orphaned }),
      jobs: await checkJobs(pgsrv.url, SCHEMA),
    }
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
  const c = checked
  const result: ChaosResult = {
    ok: false,
    lost: c?.chain.lost ?? -1,
    duplicates: c?.chain.duplicates ?? -1,
    gaps: c?.chain.gaps ?? -1,
    orphaned_in_proposals: c?.chain.orphanedInProposals ?? -1,
    stuck_jobs: c?.jobs.stuck ?? -1,
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
      proposedTo: c?.chain.proposedTo ?? -1,
      orphanedRecorded: orphaned.length,
      orphanedConfirmed: c?.chain.orphanedConfirmed ?? -1,
    },
    proposals: c?.chain.proposals ?? 0,
    non_canonical_proposals: c?.chain.nonCanonicalProposals ?? -1,
    discontinuities: c?.chain.discontinuities ?? -1,
    jobs: c?.jobs.byState ?? {},
    attempts_left_running: c?.jobs.attemptsLeftRunning ?? -1,
    findings: c?.chain.findings ?? [],
    stuck_examples: c?.jobs.examples ?? [],
    seed: opts.seed,
    durationMs: Date.now() - t0,
    phases,
    timeline,
    ...(opts.keepDir ? { workDir: dir } : {}),
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
