/**
 * Shared pieces of the benchmark harness (`npm run bench`): options, statistics, private
 * servers (nats-server, redis-server), Postgres schemas, and child-process resource readings.
 * Nothing here is used by proofline itself.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { connect as tcpConnect } from 'node:net'
import { promisify } from 'node:util'
import { sql } from 'kysely'
import { freePort } from '../src/core/net.js'
import { openPostgres, type SqlDatabase } from '../src/state/sql/database.js'

const run = promisify(execFile)

/** What every section gets. */
export interface BenchOptions {
  /** Tiny sizes: a smoke run that checks the harness works, not a measurement. */
  quick: boolean
  /** Postgres server for baselines and distributed mode (each section uses its own schema). */
  pgUrl: string
  seed: number
  /** Progress lines for people (stderr). */
  log: (line: string) => void
  /** Size overrides from `--set section.key=value`. */
  sizes: Record<string, number>
}

/** A size: `--set key=value` if given, else the quick or the full default. */
export function size(opts: BenchOptions, key: string, full: number, quick: number): number {
  return opts.sizes[key] ?? (opts.quick ? quick : full)
}

/** Percentile (nearest rank) of `xs`; NaN when empty. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return Number.NaN
  const s = [...xs].sort((a, b) => a - b)
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))
  return s[i]!
}

export function mean(xs: readonly number[]): number {
  return xs.length === 0 ? Number.NaN : xs.reduce((a, b) => a + b, 0) / xs.length
}

/** Rounds for the report (numbers keep 3 significant decimals at most). */
export function r3(x: number): number {
  return Number.isFinite(x) ? Math.round(x * 1000) / 1000 : x
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Resolves when 127.0.0.1:`port` accepts TCP connections, or throws after `timeoutMs`. */
export async function waitForPort(port: number, timeoutMs: number, what: string, child?: ChildProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (child && child.exitCode !== null) throw new Error(`${what} exited with code ${child.exitCode} before listening on ${port}`)
    const ok = await new Promise<boolean>((resolve) => {
      const s = tcpConnect({ host: '127.0.0.1', port })
      s.once('connect', () => {
        s.destroy()
        resolve(true)
      })
      s.once('error', () => resolve(false))
    })
    if (ok) return
    if (Date.now() > deadline) throw new Error(`${what} did not listen on ${port} within ${timeoutMs} ms`)
    await sleep(50)
  }
}

/** A server the bench started; `stop` kills it (SIGKILL) and waits for the exit. */
export interface PrivateServer {
  url: string
  port: number
  pid: number
  stop(): Promise<void>
}

function stopper(child: ChildProcess): () => Promise<void> {
  return async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise<void>((r) => child.once('exit', () => r()))
    child.kill('SIGKILL')
    await exited
  }
}

/** Debian's redis-server binary: installed with apt-get when missing (the bench never runs BullMQ without it). */
export async function ensureRedisServer(log: (s: string) => void): Promise<string> {
  const bin = process.env.PROOFLINE_REDIS_SERVER ?? '/usr/bin/redis-server'
  if (existsSync(bin)) return bin
  log(`redis-server not found at ${bin}: installing Debian's redis-server with apt-get`)
  try {
    await run('apt-get', ['install', '-y', '--no-install-recommends', 'redis-server'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, maxBuffer: 64 << 20 })
  } catch (err) {
    throw new Error(`redis-server is needed for the BullMQ baseline and could not be installed (apt-get install redis-server: ${(err as Error).message}); install it, or set PROOFLINE_REDIS_SERVER to its path`)
  }
  if (!existsSync(bin)) throw new Error(`apt-get installed redis-server but ${bin} does not exist; set PROOFLINE_REDIS_SERVER`)
  return bin
}

/** A private redis-server on a free port, no persistence. */
export async function privateRedis(log: (s: string) => void): Promise<PrivateServer> {
  const bin = await ensureRedisServer(log)
  const port = await freePort()
  const child = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
  await waitForPort(port, 15_000, 'redis-server', child)
  return { url: `redis://127.0.0.1:${port}`, port, pid: child.pid!, stop: stopper(child) }
}

/** A private nats-server with JetStream on a free port and a fresh store folder. */
export async function privateNats(): Promise<PrivateServer> {
  // Reuses the bus tests' fixture (same binary lookup: PROOFLINE_NATS_SERVER or /usr/sbin/nats-server).
  const { privateNatsServer } = await import('../src/bus/nats/nats-server.fixture.js')
  const srv = await privateNatsServer()
  await srv.start()
  const pid = await pidListeningOn(srv.port)
  return { url: srv.url, port: srv.port, pid, stop: () => srv.dispose() }
}

/** The pid of the process listening on a local TCP port (from /proc), or 0 when unknown. */
async function pidListeningOn(port: number): Promise<number> {
  try {
    const { stdout } = await run('ss', ['-Hltnp', `sport = :${port}`])
    const m = /pid=(\d+)/.exec(stdout)
    return m ? Number(m[1]) : 0
  } catch {
    return 0
  }
}

/** CPU seconds (user+system) a process used so far, from /proc/<pid>/stat; NaN when unreadable. */
export async function processCpuSeconds(pid: number): Promise<number> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(f[11]) + Number(f[12])) / 100
  } catch {
    return Number.NaN
  }
}

/** RSS and peak RSS (MB) of a process, from /proc/<pid>/status. */
export async function processRssMb(pid: number): Promise<{ rss: number; peak: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN)
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 }
}

/** A fresh schema name for one section of this run. */
export function benchSchema(section: string): string {
  return `bench_${section}_${process.pid}_${Date.now().toString(36)}`
}

/** Opens a pool on a fresh schema; `drop` removes the schema and closes the pool. */
export async function freshDatabase(pgUrl: string, section: string, poolSize = 10): Promise<{ database: SqlDatabase; drop: () => Promise<void> }> {
  const database = await openPostgres(pgUrl, benchSchema(section), poolSize)
  return {
    database,
    drop: async () => {
      await sql`drop schema if exists ${sql.id(database.schema)} cascade`.execute(database.db)
      await database.close()
    },
  }
}

/** Drops a schema through a short-lived pool (for schemas a child process or a library created). */
export async function dropSchema(pgUrl: string, schema: string): Promise<void> {
  const database = await openPostgres(pgUrl, 'public', 1)
  try {
    await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(database.db)
  } finally {
    await database.close()
  }
}
