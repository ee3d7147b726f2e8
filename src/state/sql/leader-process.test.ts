/**
 * Two orchestrator-like processes (fixtures/leader-child.ts) on one schema: only one writes at
 * a time; the leader is SIGSTOPped past its lease, the other takes over, and when the old one
 * resumes none of its late writes commits and it exits saying it lost the lease.
 */
import { randomBytes } from 'node:crypto'
import { sql } from 'kysely'
import { afterEach, expect, it } from 'vitest'
import { openPostgres } from './database.js'
import { type Child, startChild } from './fixtures/children.js'
import { readLeader } from './leader.js'
import { migrateState } from './migrations.js'

const URL = process.env.PROOFLINE_TEST_POSTGRES_URL ?? 'postgres://root@127.0.0.1:5432/test'
const LEASE_MS = 1000

interface Line {
  event: string
  epoch?: number
  seq?: number
  msg?: string
  reason?: string
  message?: string
  code?: number
}

const parsed = (c: Child): Line[] => c.lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Line)
const has = (c: Child, pred: (l: Line) => boolean, n = 1): Promise<unknown> => c.waitFor(() => parsed(c).filter(pred).length >= n, 20_000)
const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

const children: Child[] = []
afterEach(() => {
  for (const c of children.splice(0)) {
    if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL')
  }
})

it.each([
  ['single-statement writes', 0],
  ['transactions held open 40 ms (the stop most likely lands inside one)', 40],
])('behavior: of two orchestrator processes only one writes; a leader SIGSTOPped past its lease is replaced, and after SIGCONT none of its writes commits and it exits (%s)', async (_, holdMs) => {
  const schema = `t_leader_${randomBytes(6).toString('hex')}`
  const database = await openPostgres(URL, schema, 2)
  try {
    await migrateState(database)
    // Commit order, recorded at commit time by a deferred trigger: a transaction that wrote
    // before the takeover but committed after it would show up here, not only in the event id.
    await sql`create sequence commit_seq`.execute(database.db)
    await sql`create table commit_log (
      seq bigint primary key default nextval('commit_seq'),
      event_id bigint not null,
      epoch int not null
    )`.execute(database.db)
    await sql`create function log_commit() returns trigger language plpgsql as $$
      begin
        insert into commit_log (event_id, epoch) values (new.id, (new.details->>'epoch')::int);
        return null;
      end $$`.execute(database.db)
    await sql`create constraint trigger state_events_commit after insert on state_events
      deferrable initially deferred for each row execute function log_commit()`.execute(database.db)

    const a = startChild([URL, schema, 'proc-a', String(LEASE_MS), String(holdMs)], { script: 'leader-child.ts' })
    children.push(a)
    await has(a, (l) => l.event === 'wrote', 3)
    const b = startChild([URL, schema, 'proc-b', String(LEASE_MS), String(holdMs)], { script: 'leader-child.ts' })
    children.push(b)
    await has(b, (l) => l.event === 'log' && /standing by/.test(l.msg ?? ''))
    await delay(3 * LEASE_MS) // several of a's leases: a keeps writing, b only waits
    expect(parsed(b).filter((l) => l.event === 'leader' || l.event === 'wrote')).toEqual([])
    const oldEpoch = parsed(a).find((l) => l.event === 'leader')!.epoch!

    a.proc.kill('SIGSTOP')
    const stoppedAt = Date.now()
    await has(b, (l) => l.event === 'wrote', 5)
    const newEpoch = parsed(b).find((l) => l.event === 'leader')!.epoch!
    expect(newEpoch).toBe(oldEpoch + 1)
    // The lease runs from a's last renewal (every LEASE_MS/3), which may precede the stop: the
    // takeover can come as early as 2/3 of a lease after SIGSTOP, never sooner.
    expect(Date.now() - stoppedAt).toBeGreaterThan((2 * LEASE_MS) / 3)
    const aLinesWhileStopped = parsed(a).length
    a.proc.kill('SIGCONT')

    const exit = await a.exited
    expect(exit.code).toBe(3)
    const aAfter = parsed(a).slice(aLinesWhileStopped)
    expect(aAfter.find((l) => l.event === 'lost')?.reason).toMatch(/not renewed within 1000 ms|took over/)
    expect(aAfter.at(-1)).toEqual({ event: 'exit', code: 3 })
    expect(parsed(a).some((l) => l.event === 'log' && /lost leadership of orchestrator \(epoch 1\)/.test(l.msg ?? ''))).toBe(true)
    await has(b, (l) => l.event === 'wrote', parsed(b).filter((l) => l.event === 'wrote').length + 3)

    // Every write a process reported is committed, and nothing else of the old epoch is.
    const rows = await sql<{ id: string; epoch: number; seq: number }>`
      select id, (details->>'epoch')::int as epoch, (details->>'seq')::int as seq from state_events order by id`.execute(database.db)
    const reported = (c: Child): number[] => parsed(c).filter((l) => l.event === 'wrote').map((l) => l.seq!)
    expect(rows.rows.filter((r) => r.epoch === oldEpoch).map((r) => r.seq)).toEqual(reported(a))
    expect(rows.rows.filter((r) => r.epoch === newEpoch).map((r) => r.seq).slice(0, reported(b).length)).toEqual(reported(b))
    expect(rows.rows.every((r) => r.epoch === oldEpoch || r.epoch === newEpoch)).toBe(true)

    // No row of the old epoch was written, nor committed, after the first row of the new one.
    const firstNew = Math.min(...rows.rows.filter((r) => r.epoch === newEpoch).map((r) => Number(r.id)))
    const lastOld = Math.max(...rows.rows.filter((r) => r.epoch === oldEpoch).map((r) => Number(r.id)))
    expect(lastOld).toBeLessThan(firstNew)
    const commits = await sql<{ epoch: number; first: string; last: string }>`
      select epoch, min(seq) as first, max(seq) as last from commit_log group by epoch order by epoch`.execute(database.db)
    expect(commits.rows.map((r) => r.epoch)).toEqual([oldEpoch, newEpoch])
    expect(Number(commits.rows[0]!.last)).toBeLessThan(Number(commits.rows[1]!.first))

    expect((await readLeader(database))!).toMatchObject({ holder: 'proc-b', epoch: newEpoch, expired: false })
    b.proc.kill('SIGTERM')
    await b.exited
  } finally {
    await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(database.db)
    await database.close()
  }
})
