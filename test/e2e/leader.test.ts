import { spawn, type ChildProcess } from 'node:child_process'
import { rm } from 'node:fs/promises'
import { sql } from 'kysely'
import { afterAll, describe, expect, it } from 'vitest'
import { openPostgres } from '../../src/state/sql/database.js'
import { readLeader } from '../../src/state/sql/leader.js'
import { BIN } from '../support/cli.js'
import { writeTestPipeline } from '../support/pipeline-config.js'

const PG_URL = process.env.PROOFLINE_TEST_PG_URL ?? 'postgres://root@127.0.0.1:5432/test'
const schema = `lead_${Math.random().toString(36).slice(2, 10)}`
const dirs: string[] = []
const procs: ChildProcess[] = []
afterAll(async () => {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL')
  const db = await openPostgres(PG_URL, schema)
  await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db.db)
  await db.close()
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

interface Proc { child: ChildProcess; out: () => string; err: () => string; exit: Promise<number | null> }

function start(file: string, env: Record<string, string>): Proc {
  const child = spawn(process.execPath, [BIN, 'run', '--config', file, '--until-blocks', '1500'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  procs.push(child)
  let out = ''
  let err = ''
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()))
  return { child, out: () => out, err: () => err, exit: new Promise((r) => child.on('close', (c) => r(c))) }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

describe('two orchestrators on one Postgres', () => {
  it('behavior: one acts at a time; a leader paused past its lease is replaced and its late writes are refused', { timeout: 180_000 }, async () => {
    const { file, dir } = await writeTestPipeline({ failRate: 0.05, hostileRate: 0, blocksPerSecond: 100 })
    dirs.push(dir)
    // Shared Postgres for state and the (SQL-backed) bus, so both orchestrators see one pipeline.
    const env = { PROOFLINE_STATE: `{ type: postgres, url: "${PG_URL}", schema: ${schema} }`, PROOFLINE_LEADER__LEASE_MS: '2000', PROOFLINE_LOG__LEVEL: 'info' }
    const db = await openPostgres(PG_URL, schema)
    try {
      const a = start(file, { ...env, PROOFLINE_DATA_DIR: `${dir}/a` })
      for (let i = 0; i < 150 && (await readLeader(db).catch(() => undefined))?.holder === undefined; i++) await sleep(100)
      const first = await readLeader(db)
      expect(first?.holder).toContain(`:${String(a.child.pid)}:`)
      const b = start(file, { ...env, PROOFLINE_DATA_DIR: `${dir}/b` })
      await sleep(3000)
      // B stands by while A holds the lease.
      expect((await readLeader(db))?.epoch).toBe(first?.epoch)
      expect(b.err()).not.toContain('this orchestrator acts')

      a.child.kill('SIGSTOP')
      let second = await readLeader(db)
      for (let i = 0; i < 100 && second?.epoch === first?.epoch; i++) {
        await sleep(100)
        second = await readLeader(db)
      }
      expect(second?.holder).toContain(`:${String(b.child.pid)}:`)
      expect(second?.epoch).toBeGreaterThan(first?.epoch ?? 0)
      await sleep(1500) // B acts
      a.child.kill('SIGCONT')

      // A finds it lost the lease; whatever it tried to write is refused; it exits with code 5.
      expect(await a.exit).toBe(5)
      expect(JSON.parse(a.out())).toMatchObject({ ok: false })
      expect(a.err()).toMatch(/leadership lost|STATE_FENCED|not renewed/)
      // B finishes the run with every guarantee.
      expect(await b.exit, b.err().slice(-2000)).toBe(0)
      expect(JSON.parse(b.out())).toMatchObject({ ok: true, reason: 'complete', continuity: { gaps: 0, overlaps: 0, duplicates: 0 } })
    } finally {
      await db.close()
    }
  })
})
