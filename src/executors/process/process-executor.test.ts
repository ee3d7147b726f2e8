import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { ConfigError, ExecutorError } from '../../core/errors.js'
import type { ExecuteRequest, Executor } from '../types.js'
import { type ProcessExecutorOptions, processExecutor } from './process-executor.js'
import { EXECUTOR_PROTOCOL, EXIT_TOO_BIG, EXIT_UNPROVABLE } from './protocol.js'
import { reapOrphans } from './reap.js'

const FAKE = fileURLToPath(new URL('./test-fixtures/fake-prover.mjs', import.meta.url))
const RUN_EXECUTOR = fileURLToPath(new URL('./test-fixtures/run-executor.mjs', import.meta.url))
const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url))

const job = { id: 'range:1-2:abcdef0123456789', stage: 'range', attempt: 1, first: 1, last: 2, lastHash: '0x02', programId: 'mock-v1' }
const inputs = [
  { id: 'blocks:1', data: { number: 1, hash: '0x01', parentHash: '0x00', cost: 5 } },
  { id: 'blocks:2', data: { number: 2, hash: '0x02', parentHash: '0x01', cost: 7 } },
]

let dir: string
let executors: Executor[]

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'proofline-process-executor-'))
  executors = []
})
afterEach(async () => {
  await Promise.all(executors.map((e) => e.close()))
  await rm(dir, { recursive: true, force: true })
})

function make(mode: string, extra: string[] = [], opts: Partial<ProcessExecutorOptions> = {}): Executor {
  const ex = processExecutor({
    command: [process.execPath, FAKE, '--mode', mode, ...extra],
    timeoutMs: 30_000,
    workDir: join(dir, 'work'),
    ownerTag: `test-${randomUUID()}`,
    ...opts,
  })
  executors.push(ex)
  return ex
}

function request(over: Partial<ExecuteRequest> = {}): ExecuteRequest {
  return { job, inputs, signal: new AbortController().signal, ...over }
}

async function failure(p: Promise<unknown>): Promise<ExecutorError> {
  const err: unknown = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(ExecutorError)
  return err as ExecutorError
}

/** Dead: no /proc entry, or a zombie waiting for a parent (or a non-reaping init) to collect it. */
function isGone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')
  } catch {
    return true
  }
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

async function readPids(pidFile: string, count: number): Promise<number[]> {
  let pids: number[] = []
  await until(
    () => {
      if (!existsSync(pidFile)) return false
      pids = readFileSync(pidFile, 'utf8').trim().split(' ').filter(Boolean).map(Number)
      return pids.length === count
    },
    15_000,
    `${count} pids in ${pidFile}`,
  )
  return pids
}

describe('processExecutor: success', () => {
  it('behavior: files protocol passes IN.json by --input-path and reads OUT.json', async () => {
    const ex = make('echo')
    const res = await ex.execute(request())
    expect(res.output['echo']).toEqual({ protocol: EXECUTOR_PROTOCOL, job, inputs })
    expect(res.stderrTail).toContain('fake-prover: mode=echo')
    expect(res.durationMs).toBeGreaterThanOrEqual(0)
    expect(res.proof).toBeUndefined()
    expect(await readdir(join(dir, 'work'))).toEqual([])
  })

  it('behavior: stdio protocol writes the input on stdin and reads the output from stdout', async () => {
    const ex = make('echo', [], { protocol: 'stdio' })
    const res = await ex.execute(request())
    expect(res.output['echo']).toEqual({ protocol: EXECUTOR_PROTOCOL, job, inputs })
  })

  it('behavior: the child carries PROOFLINE_OWNER and a per-attempt PROOFLINE_ATTEMPT that config cannot override', async () => {
    const ex = make('echo', [], { ownerTag: 'owner-abc', env: { PROOFLINE_OWNER: 'spoofed', EXTRA: '1' } })
    const env = (await ex.execute(request())).output['env'] as { owner: string; attempt: string }
    expect(env.owner).toBe('owner-abc')
    expect(env.attempt).toMatch(/^owner-abc\/[0-9a-f-]{36}$/)
  })

  it('behavior: a proof ref in the output document is returned; a malformed one is invalid-output', async () => {
    const res = await make('proof').execute(request())
    expect(res.proof).toEqual({ key: `proofs/${'a'.repeat(64)}`, sha256: 'a'.repeat(64), size: 12 })
    const err = await failure(make('bad-proof').execute(request()))
    expect(err.failureClass).toBe('invalid-output')
  })
})

describe('processExecutor: exit codes and output validation', () => {
  it('behavior: exit 10 is too-big and exit 11 is unprovable, neither retryable', async () => {
    const big = await failure(make('exit', ['--ms', String(EXIT_TOO_BIG)]).execute(request()))
    expect(big.failureClass).toBe('too-big')
    expect(big.retryable).toBe(false)
    expect(big.details['exitCode']).toBe(10)
    const dead = await failure(make('exit', ['--ms', String(EXIT_UNPROVABLE)]).execute(request()))
    expect(dead.failureClass).toBe('unprovable')
    expect(dead.retryable).toBe(false)
    expect(dead.details['stderrTail']).toContain('exiting with 11')
  })

  it('behavior: any other non-zero exit or a signal is transient and retryable', async () => {
    for (const code of [1, 2, 12, 137]) {
      const err = await failure(make('exit', ['--ms', String(code)]).execute(request()))
      expect(err.failureClass).toBe('transient')
      expect(err.retryable).toBe(true)
      expect(err.details['exitCode']).toBe(code)
      expect(err.message).toContain(`exiting with ${code}`)
    }
    const killed = await failure(make('self-kill').execute(request()))
    expect(killed.failureClass).toBe('transient')
    expect(killed.details['signal']).toBe('SIGKILL')
  })

  it('behavior: garbage, a non-object document or a missing "output" is invalid-output', async () => {
    for (const mode of ['garbage', 'array', 'no-output-field']) {
      for (const protocol of ['files', 'stdio'] as const) {
        const err = await failure(make(mode, [], { protocol }).execute(request()))
        expect(err.failureClass, `${mode}/${protocol}`).toBe('invalid-output')
        expect(err.retryable).toBe(true)
      }
    }
  })

  it('behavior: exit 0 without an output file (or with empty stdout) is invalid-output', async () => {
    const err = await failure(make('no-output').execute(request()))
    expect(err.failureClass).toBe('invalid-output')
    expect(err.details['reason']).toBe('missing output file')
    const empty = await failure(make('no-output', [], { protocol: 'stdio' }).execute(request()))
    expect(empty.failureClass).toBe('invalid-output')
  })

  it('behavior: stdout beyond maxOutputBytes is invalid-output', async () => {
    const err = await failure(make('big-stdout', ['--ms', '200000'], { protocol: 'stdio', maxOutputBytes: 1000 }).execute(request()))
    expect(err.failureClass).toBe('invalid-output')
  })

  it('behavior: a program that cannot be started is transient and names the command', async () => {
    const ex = processExecutor({ command: [join(dir, 'no-such-prover')], timeoutMs: 5000, workDir: join(dir, 'work'), ownerTag: 't' })
    executors.push(ex)
    const err = await failure(ex.execute(request()))
    expect(err.failureClass).toBe('transient')
    expect(err.message).toContain('no-such-prover')
  })

  it('behavior: invalid options are a ConfigError at construction', () => {
    const base = { timeoutMs: 1000, workDir: dir, ownerTag: 'ok' }
    expect(() => processExecutor({ ...base, command: [] })).toThrow(ConfigError)
    expect(() => processExecutor({ ...base, command: ['x'], ownerTag: 'has space' })).toThrow(ConfigError)
    expect(() => processExecutor({ ...base, command: ['x'], timeoutMs: 0 })).toThrow(ConfigError)
  })
})

describe('processExecutor: process groups, timeouts, abort', () => {
  it('behavior: a timeout kills the whole group, escalating to SIGKILL for children that ignore SIGTERM', async () => {
    const pidFile = join(dir, 'pids')
    const ex = make('spawn-sleep', ['--pid-file', pidFile, '--ignore-term'], { timeoutMs: 2500, killGraceMs: 300 })
    const settled = failure(ex.execute(request()))
    const pids = await readPids(pidFile, 2)
    expect(pids.every((p) => !isGone(p))).toBe(true)
    const err = await settled
    expect(err.failureClass).toBe('timeout')
    expect(err.retryable).toBe(true)
    expect(err.details['stderrTail']).toContain('fake-prover: mode=spawn-sleep')
    await until(() => pids.every(isGone), 3000, 'child and grandchild to die')
  })

  it('behavior: a timeout sends SIGTERM first, so a well-behaved prover ends before the grace period', async () => {
    const pidFile = join(dir, 'pids')
    const termFile = join(dir, 'terms')
    const ex = make('spawn-sleep', ['--pid-file', pidFile, '--term-file', termFile], { timeoutMs: 2500, killGraceMs: 20_000 })
    const t0 = Date.now()
    const err = await failure(ex.execute(request()))
    expect(err.failureClass).toBe('timeout')
    expect(Date.now() - t0).toBeLessThan(10_000)
    // Both got SIGTERM: it went to the group, not just the child.
    expect(readFileSync(termFile, 'utf8').split('\n').filter(Boolean).sort()).toEqual(['child', 'grandchild'])
    const pids = await readPids(pidFile, 2)
    await until(() => pids.every(isGone), 3000, 'child and grandchild to die')
  })

  it('behavior: a grandchild that left the process group (setsid) is still killed through its attempt marker', async () => {
    const pidFile = join(dir, 'pids')
    const ex = make('spawn-escapee', ['--pid-file', pidFile], { timeoutMs: 2500, killGraceMs: 300 })
    const err = await failure(ex.execute(request()))
    expect(err.failureClass).toBe('timeout')
    const pids = await readPids(pidFile, 2)
    await until(() => pids.every(isGone), 3000, 'child and escaped grandchild to die')
  })

  it('behavior: aborting the signal kills the group and rejects with an aborted transient error', async () => {
    const pidFile = join(dir, 'pids')
    const ac = new AbortController()
    const ex = make('spawn-sleep', ['--pid-file', pidFile], { killGraceMs: 300 })
    const settled = failure(ex.execute(request({ signal: ac.signal })))
    const pids = await readPids(pidFile, 2)
    ac.abort(new Error('job cancelled'))
    const err = await settled
    expect(err.failureClass).toBe('transient')
    expect(err.details['aborted']).toBe(true)
    await until(() => pids.every(isGone), 3000, 'child and grandchild to die')
  })

  it('behavior: an already-aborted signal starts nothing', async () => {
    const ac = new AbortController()
    ac.abort()
    const pidFile = join(dir, 'pids')
    const err = await failure(make('sleep', ['--pid-file', pidFile]).execute(request({ signal: ac.signal })))
    expect(err.details['aborted']).toBe(true)
    expect(existsSync(pidFile)).toBe(false)
  })

  it('behavior: close() kills running attempts and refuses new ones', async () => {
    const pidFile = join(dir, 'pids')
    const ex = make('spawn-sleep', ['--pid-file', pidFile], { killGraceMs: 300 })
    const settled = failure(ex.execute(request()))
    const pids = await readPids(pidFile, 2)
    await ex.close()
    expect((await settled).details['aborted']).toBe(true)
    await until(() => pids.every(isGone), 3000, 'child and grandchild to die')
    expect((await failure(ex.execute(request()))).failureClass).toBe('transient')
  })
})

describe('processExecutor: stderr and heartbeats', () => {
  it('behavior: the stderr tail is kept, truncated to stderrTailBytes, on a character boundary', async () => {
    const res = await make('stderr-flood', [], { stderrTailBytes: 1024 }).execute(request())
    const tail = res.stderrTail ?? ''
    expect(Buffer.byteLength(tail)).toBeLessThanOrEqual(1024)
    expect(Buffer.byteLength(tail)).toBeGreaterThan(1000)
    expect(tail).toContain('END-MARKER')
    expect(tail).not.toContain('BEGIN-MARKER')
    expect(tail).not.toContain('\uFFFD')
  })

  it('behavior: the stderr tail travels in the error details of a failure', async () => {
    const err = await failure(make('exit', ['--ms', '3'], { stderrTailBytes: 16 }).execute(request()))
    const tail = err.details['stderrTail'] as string
    expect(tail.length).toBeLessThanOrEqual(16)
    expect(tail).toContain('with 3')
  })

  it('behavior: onHeartbeat is called while the child runs and not after', async () => {
    let beats = 0
    const res = await make('slow', ['--ms', '700'], { heartbeatMs: 50 }).execute(request({ onHeartbeat: () => void beats++ }))
    expect(res.output).toEqual({ ok: true })
    expect(beats).toBeGreaterThanOrEqual(5)
    const after = beats
    await new Promise((r) => setTimeout(r, 200))
    expect(beats).toBe(after)
  })
})

describe('reapOrphans', () => {
  it('behavior: provers orphaned by a SIGKILLed owner survive it and are then reaped by owner tag, others untouched', async () => {
    const tag = `reap-${randomUUID()}`
    const pidFile = join(dir, 'pids')
    const owner = spawn(process.execPath, ['--import', 'tsx', RUN_EXECUTOR, tag, pidFile, join(dir, 'work')], {
      cwd: REPO_ROOT,
      stdio: 'ignore',
    })
    const ownerExit = new Promise<void>((r) => owner.once('exit', () => r()))
    // A bystander carrying a marker that merely starts with the tag must survive.
    const bystander = spawn(process.execPath, ['-e', 'setInterval(() => {}, 60000)'], {
      stdio: 'ignore',
      detached: true,
      env: { ...process.env, PROOFLINE_OWNER: `${tag}-other` },
    })
    try {
      const pids = await readPids(pidFile, 2)
      owner.kill('SIGKILL')
      await ownerExit
      await new Promise((r) => setTimeout(r, 200))
      expect(pids.every((p) => !isGone(p)), 'prover and its child outlive a SIGKILLed owner').toBe(true)

      const reaped = await reapOrphans(tag)
      expect(reaped.sort()).toEqual([...pids].sort())
      await until(() => pids.every(isGone), 3000, 'orphans to die')
      expect(isGone(bystander.pid as number)).toBe(false)
      expect(await reapOrphans(tag)).toEqual([])
    } finally {
      bystander.kill('SIGKILL')
      owner.kill('SIGKILL')
    }
  })
})

describe('processExecutor: attempt folder', () => {
  it('behavior: an unusable workDir is a transient ExecutorError naming the folder', async () => {
    const notADir = join(dir, 'file')
    await writeFile(notADir, 'x')
    const ex = make('echo', [], { workDir: join(notADir, 'work') })
    const err = await failure(ex.execute(request()))
    expect(err.failureClass).toBe('transient')
    expect(err.message).toContain(notADir)
  })

  it('behavior: attempt folders left by a crashed run are removed, others are left alone', async () => {
    const work = join(dir, 'work')
    for (const name of ['attempt-old', 'attempt-recent', 'not-ours']) await mkdir(join(work, name), { recursive: true })
    const old = new Date(Date.now() - 3 * 3_600_000)
    await utimes(join(work, 'attempt-old'), old, old)
    await utimes(join(work, 'not-ours'), old, old)
    await make('echo').execute(request())
    expect((await readdir(work)).sort()).toEqual(['attempt-recent', 'not-ours'])
  })
})
