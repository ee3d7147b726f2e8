import { existsSync, readFileSync, readdirSync } from 'node:fs'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startEmbeddedPostgres, stopEmbeddedPostgres } from './embedded-postgres.js'
import { isRunning, startChild } from './fixtures/children.js'
import { sqlState } from './sql-state.js'

let root: string
const dirs: string[] = []

function newDir(name: string): string {
  const d = path.join(root, name)
  dirs.push(d)
  return d
}

function postmasterPid(dataDir: string): number | undefined {
  const file = path.join(dataDir, 'pgdata', 'postmaster.pid')
  if (!existsSync(file)) return undefined
  return Number.parseInt(readFileSync(file, 'utf8').split('\n')[0] ?? '', 10)
}

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'proofline-state-crash-'))
  await fs.chmod(root, 0o755) // the server's user (postgres, when we are root) must reach the clusters
})

afterAll(async () => {
  for (const d of dirs) await stopEmbeddedPostgres(d).catch(() => false)
  if (root) await fs.rm(root, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 })
})

describe('embedded state store under SIGKILL', () => {
  it('behavior: every transaction reported committed survives a SIGKILL of the writer (and of the server)', async () => {
    const dir = newDir('commits')
    const reported = new Map<string, number[]>()
    // Kill early (first commits), mid-stream, later; the last round also kills the postmaster,
    // so the next open finds a stale postmaster.pid and Postgres runs WAL crash recovery.
    const rounds = [
      { prefix: 'r1', killAfter: 1, killServer: false },
      { prefix: 'r2', killAfter: 40, killServer: false },
      { prefix: 'r3', killAfter: 150, killServer: false },
      { prefix: 'r4', killAfter: 60, killServer: true },
    ]
    let serverPid: number | undefined
    for (const round of rounds) {
      const child = startChild(['commit-loop', dir, 'crash', round.prefix])
      await child.waitFor((l) => l.length >= round.killAfter, 60_000)
      child.proc.kill('SIGKILL')
      if (round.killServer) {
        serverPid = postmasterPid(dir)
        process.kill(serverPid!, 'SIGKILL')
      }
      expect((await child.exited).signal).toBe('SIGKILL')
      reported.set(round.prefix, child.lines.filter((l) => l !== '').map(Number))
      if (!round.killServer) {
        // Our process died; the detached server did not.
        expect(isRunning(postmasterPid(dir)!)).toBe(true)
      }
    }

    const store = await sqlState({ kind: 'embedded', dataDir: dir, schema: 'crash' })
    try {
      expect(postmasterPid(dir)).not.toBe(serverPid)
      for (const [prefix, seqs] of reported) {
        expect(seqs.length).toBeGreaterThan(0)
        expect(seqs).toEqual(seqs.map((_, i) => i + 1))
        const ids = new Set((await store.listJobs()).map((j) => j.id))
        const missing = seqs.filter((n) => !ids.has(`${prefix}-${n}`))
        expect(missing, `${prefix}: committed and reported, then lost`).toEqual([])
        // The meta row written in the same transactions is at least at the last reported number.
        expect(Number(await store.getMeta(`${prefix}:last`))).toBeGreaterThanOrEqual(seqs.at(-1)!)
      }
    } finally {
      await store.close()
    }
  })

  it('behavior: a SIGKILL during the first open (initdb) leaves a folder that the next open initialises', async () => {
    // Kill while initdb runs (its temp folder exists), and right after the cluster was renamed in place.
    const cases = [
      { name: 'during-initdb', when: (d: string) => hasInitDir(d), delayMs: 0 },
      { name: 'late-initdb', when: (d: string) => hasInitDir(d), delayMs: 300 },
      { name: 'after-rename', when: (d: string) => existsSync(path.join(d, 'pgdata')), delayMs: 0 },
    ]
    for (const c of cases) {
      const dir = newDir(c.name)
      const child = startChild(['open', dir])
      const deadline = Date.now() + 30_000
      while (!c.when(dir) && Date.now() < deadline && child.proc.exitCode === null) await sleep(5)
      expect(c.when(dir), `${c.name}: the moment to kill never came`).toBe(true)
      if (c.delayMs) await sleep(c.delayMs)
      child.proc.kill('SIGKILL')
      await child.exited

      const store = await sqlState({ kind: 'embedded', dataDir: dir })
      try {
        await store.setMeta('alive', c.name)
        expect(await store.getMeta('alive')).toBe(c.name)
      } finally {
        await store.close()
      }
      // No half-made cluster was used, and leftovers of the killed initdb are gone once it exited.
      expect(existsSync(path.join(dir, 'pgdata', 'PG_VERSION'))).toBe(true)
    }
    // The orphaned initdb processes have finished by now; a later open clears what they left.
    await sleep(500)
    for (const c of cases) {
      const dir = path.join(root, c.name)
      const s = await startEmbeddedPostgres({ dataDir: dir })
      await s.release()
      expect((await fs.readdir(dir)).filter((n) => n.startsWith('pgdata.init-'))).toEqual([])
    }
  })
})

function hasInitDir(dir: string): boolean {
  return existsSync(dir) && readdirSync(dir).some((n) => n.startsWith('pgdata.init-'))
}
