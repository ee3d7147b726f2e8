import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { StateError } from '../../core/errors.js'
import { newJob, stateStoreConformance } from '../conformance.js'
import { openSqlDatabase } from './database.js'
import { type EmbeddedPostgres, startEmbeddedPostgres, stopEmbeddedPostgres } from './embedded-postgres.js'
import { isRunning, startChild } from './fixtures/children.js'
import { sqlState, sqlStateStore } from './sql-state.js'

/** One cluster for the whole file (starting clusters is slow); a fresh schema per test. */
let root: string
let dir: string
let server: EmbeddedPostgres
const extraDirs: string[] = []

const freshSchema = (): string => `t_${randomBytes(6).toString('hex')}`

function postmasterPid(dataDir: string): number | undefined {
  const file = path.join(dataDir, 'pgdata', 'postmaster.pid')
  if (!existsSync(file)) return undefined
  return Number.parseInt(readFileSync(file, 'utf8').split('\n')[0] ?? '', 10)
}

const alive = isRunning

async function newDir(): Promise<string> {
  const d = await fs.mkdtemp(path.join(root, 'extra-'))
  await fs.chmod(d, 0o755)
  extraDirs.push(d)
  return d
}

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'proofline-state-embedded-'))
  // Root-run tests: the server's user must reach the clusters (mkdtemp makes 0700 folders).
  await fs.chmod(root, 0o755)
  dir = path.join(root, 'main')
  server = await startEmbeddedPostgres({ dataDir: dir })
})

afterAll(async () => {
  await server?.release()
  for (const d of [dir, ...extraDirs]) if (d) await stopEmbeddedPostgres(d).catch(() => false)
  if (root) await fs.rm(root, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 })
})

stateStoreConformance('embedded postgres', async () => {
  const database = await openSqlDatabase({ kind: 'embedded', dataDir: dir, schema: freshSchema(), poolSize: 4 })
  const store = await sqlStateStore(database)
  return {
    store,
    cleanup: async () => {
      await store.close()
      try {
        await sql`drop schema if exists ${sql.id(database.schema)} cascade`.execute(database.db)
      } finally {
        await database.close()
      }
    },
  }
})

describe('embedded postgres cluster', () => {
  it('behavior: the server listens on a private unix socket only, with durable commits', async () => {
    expect(server.started).toBe(true)
    expect(server.connection.host.length + '/.s.PGSQL.5432'.length).toBeLessThan(100)
    const st = await fs.stat(server.connection.host)
    expect(st.mode & 0o777).toBe(0o700)
    const database = await openSqlDatabase({ kind: 'embedded', dataDir: dir, schema: freshSchema() })
    try {
      const settings = await sql<{ name: string; setting: string }>`
        select name, setting from pg_settings
        where name in ('listen_addresses', 'fsync', 'synchronous_commit', 'full_page_writes', 'data_checksums')
        order by name`.execute(database.db)
      expect(Object.fromEntries(settings.rows.map((r) => [r.name, r.setting]))).toEqual({
        data_checksums: 'on',
        fsync: 'on',
        full_page_writes: 'on',
        listen_addresses: '',
        synchronous_commit: 'on',
      })
    } finally {
      await sql`drop schema if exists ${sql.id(database.schema)} cascade`.execute(database.db)
      await database.close()
    }
  })

  it('behavior: another process opening the same data dir reuses the running server and corrupts nothing', async () => {
    const schema = freshSchema()
    const pidBefore = postmasterPid(dir)
    const database = await openSqlDatabase({ kind: 'embedded', dataDir: dir, schema })
    try {
      const store = await sqlStateStore(database)
      const child = startChild(['hold', dir, schema, 'from-child'])
      // Both processes write to the same tables while both are open.
      const writes = Promise.all(Array.from({ length: 20 }, (_, i) => store.createJobs([newJob(`from-parent-${i}`)])))
      const [info] = await child.waitFor((l) => l.length >= 1)
      await writes
      expect(JSON.parse(info!)).toEqual({ pid: pidBefore, started: false })
      child.proc.stdin.end('close\n')
      expect(await child.exited).toEqual({ code: 0, signal: null })
      // The child's clean close did not stop the server we still use.
      expect(postmasterPid(dir)).toBe(pidBefore)
      expect(await store.getJob('from-child')).toBeDefined()
      expect(await store.listJobs()).toHaveLength(21)
      const check = await sql<{ ok: boolean }>`select count(*) = 21 as ok from state_jobs`.execute(database.db)
      expect(check.rows[0]!.ok).toBe(true)
    } finally {
      await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(database.db)
      await database.close()
    }
  })

  it('behavior: processes creating the same new cluster at once share one cluster and one server', async () => {
    const d = await newDir()
    const children = [startChild(['hold', d, 'proofline', 'c1']), startChild(['hold', d, 'proofline', 'c2'])]
    const infos = (await Promise.all(children.map((c) => c.waitFor((l) => l.length >= 1)))).map(
      (l) => JSON.parse(l[0]!) as { pid: number; started: boolean },
    )
    expect(infos[0]!.pid).toBe(infos[1]!.pid)
    expect(infos.filter((i) => i.started)).toHaveLength(1)
    const pid = infos[0]!.pid
    // Close the one that did not start the server first: the server keeps running for the other.
    const order = infos[0]!.started ? [1, 0] : [0, 1]
    children[order[0]!]!.proc.stdin.end('close\n')
    expect((await children[order[0]!]!.exited).code).toBe(0)
    expect(alive(pid)).toBe(true)
    children[order[1]!]!.proc.stdin.end('close\n')
    expect((await children[order[1]!]!.exited).code).toBe(0)
    // The last one out stopped it.
    expect(alive(pid)).toBe(false)
    expect(existsSync(path.join(d, 'pgdata', 'postmaster.pid'))).toBe(false)
    expect((await fs.readdir(d)).filter((n) => n.startsWith('pgdata.init-'))).toEqual([])
    // Both jobs are in the one cluster.
    const store = await sqlState({ kind: 'embedded', dataDir: d })
    try {
      expect((await store.listJobs()).map((j) => j.id).sort()).toEqual(['c1', 'c2'])
    } finally {
      await store.close()
    }
  })

  it('behavior: closing keeps the server while another open uses it and stops it after the last', async () => {
    const d = await newDir()
    const a = await sqlState({ kind: 'embedded', dataDir: d })
    const b = await sqlState({ kind: 'embedded', dataDir: d })
    const pid = postmasterPid(d)!
    await a.setMeta('k', 'a')
    await a.close()
    expect(alive(pid)).toBe(true)
    await b.setMeta('k', 'b')
    expect(await b.getMeta('k')).toBe('b')
    await b.close()
    expect(alive(pid)).toBe(false)
    // stopOnClose: false leaves it running for the next process.
    const c = await sqlState({ kind: 'embedded', dataDir: d, stopOnClose: false })
    expect(await c.getMeta('k')).toBe('b')
    const pid2 = postmasterPid(d)!
    await c.close()
    expect(alive(pid2)).toBe(true)
    expect(await stopEmbeddedPostgres(d)).toBe(true)
    expect(alive(pid2)).toBe(false)
    expect(await stopEmbeddedPostgres(d)).toBe(false)
  })

  it('behavior: a Ctrl-C to the opening process group does not reach the server', async () => {
    const d = await newDir()
    const child = startChild(['open', d], { ownProcessGroup: true })
    await child.waitFor((l) => l.includes('ready'))
    const pid = postmasterPid(d)!
    // What a terminal does on Ctrl-C: SIGINT to every process of the foreground group.
    process.kill(-child.proc.pid!, 'SIGINT')
    expect((await child.exited).signal).toBe('SIGINT')
    await new Promise((r) => setTimeout(r, 200))
    expect(alive(pid)).toBe(true)
    // The next open reuses it.
    const again = await startEmbeddedPostgres({ dataDir: d })
    expect({ pid: again.pid, started: again.started }).toEqual({ pid, started: false })
    await again.release()
    expect(alive(pid)).toBe(false)
  })

  it.runIf(process.getuid?.() === 0)('behavior: as root, a data dir the postgres user cannot enter is refused with what to do', async () => {
    const locked = await newDir()
    await fs.chmod(locked, 0o700)
    const err = await startEmbeddedPostgres({ dataDir: path.join(locked, 'db') }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(StateError)
    expect(err).toMatchObject({ code: 'STATE_EMBEDDED_PERMISSION', retryable: false })
    expect((err as Error).message).toContain(`chmod o+x ${locked}`)
  })

  it.runIf(process.getuid?.() === 0)('behavior: as root, a missing unprivileged user is a clear error', async () => {
    const err = await startEmbeddedPostgres({ dataDir: path.join(await newDir(), 'db'), runAsUser: 'no_such_user_proofline' }).catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 'STATE_EMBEDDED_NO_USER', retryable: false })
    expect((err as Error).message).toContain('useradd')
  })

  it('behavior: a server that cannot start fails the open quickly with its log, not at the start timeout', async () => {
    const d = await newDir()
    await (await startEmbeddedPostgres({ dataDir: d })).release()
    await fs.appendFile(path.join(d, 'pgdata', 'proofline.conf'), "shared_buffers = 'lots'\n")
    const t0 = Date.now()
    const err = await startEmbeddedPostgres({ dataDir: d }).catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 'STATE_EMBEDDED_START_FAILED', retryable: false })
    expect((err as Error).message).toContain('shared_buffers')
    expect(Date.now() - t0).toBeLessThan(20_000)
  })

  it('behavior: a folder that is not a cluster is refused rather than overwritten', async () => {
    const d = await newDir()
    await fs.mkdir(path.join(d, 'pgdata'))
    await fs.writeFile(path.join(d, 'pgdata', 'mine.txt'), 'keep me')
    await expect(startEmbeddedPostgres({ dataDir: d })).rejects.toMatchObject({ code: 'STATE_EMBEDDED_NOT_A_CLUSTER' })
    expect(await fs.readFile(path.join(d, 'pgdata', 'mine.txt'), 'utf8')).toBe('keep me')
  })
})
