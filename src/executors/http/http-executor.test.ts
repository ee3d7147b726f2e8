import { spawn } from 'node:child_process'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import pino from 'pino'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { fsArtifacts } from '../../artifacts/fs/fs-artifacts.js'
import { fsRecords } from '../../artifacts/fs/fs-records.js'
import type { ArtifactStore, RecordStore } from '../../artifacts/types.js'
import { ConfigError, ExecutorError } from '../../core/errors.js'
import { jobId } from '../../core/ids.js'
import type { Job } from '../../core/types.js'
import { mockVerifier } from '../../pipeline/verify.js'
import { DetachReason, type ExecuteRequest, type Executor } from '../types.js'
import { type HttpExecutorOptions, httpExecutor } from './http-executor.js'
import { type MockProverService, mockProverService } from './mock-service.js'

const TOKEN = 'tok-0123456789-SECRET-abcdef'
const hash = (n: number): `0x${string}` => `0x${n.toString(16).padStart(64, '0')}`

function block(n: number, parent = hash(n - 1)): Record<string, unknown> {
  return { number: n, hash: hash(n), parentHash: parent, timestamp: n, gasUsed: 100, cost: 100, txCount: 1 }
}

function request(first: number, last: number, over: { attempt?: number; signal?: AbortSignal; brokenAt?: number } = {}): ExecuteRequest {
  const inputs = []
  for (let n = first; n <= last; n++) inputs.push({ id: `b${n}`, data: block(n, n === over.brokenAt ? hash(999_999) : hash(n - 1)) })
  const lastHash = hash(last)
  return {
    job: { id: jobId({ stage: 'range', first, last, lastHash, programId: 'mock-v1' }), stage: 'range', attempt: over.attempt ?? 1, first, last, lastHash, programId: 'mock-v1' },
    inputs,
    signal: over.signal ?? new AbortController().signal,
  }
}

/** The job as the orchestrator stores it, for the stage verifier. */
function asJob(req: ExecuteRequest): Job {
  return { ...req.job, inputs: req.inputs } as unknown as Job
}

async function failure(p: Promise<unknown>): Promise<ExecutorError> {
  const err: unknown = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(ExecutorError)
  return err as ExecutorError
}

async function until(cond: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

describe('httpExecutor against a local stand-in service', () => {
  let dir: string
  let service: MockProverService
  let artifacts: ArtifactStore
  let records: RecordStore
  let executors: Executor[]
  let logLines: string[]

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'proofline-http-executor-'))
    service = await mockProverService({ token: TOKEN })
    artifacts = fsArtifacts({ dir })
    records = fsRecords({ dir })
    executors = []
    logLines = []
  })
  afterEach(async () => {
    await Promise.all(executors.map((e) => e.close()))
    await service.close()
    await rm(dir, { recursive: true, force: true })
  })

  function make(over: Partial<HttpExecutorOptions> = {}): Executor {
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        logLines.push(chunk.toString('utf8'))
        cb()
      },
    })
    const ex = httpExecutor({
      url: service.url,
      token: TOKEN,
      artifacts,
      records,
      timeoutMs: 20_000,
      requestTimeoutMs: 2_000,
      pollIntervalMs: 20,
      maxPollIntervalMs: 100,
      log: pino({ level: 'debug' }, sink),
      ...over,
    })
    executors.push(ex)
    return ex
  }

  const recordCount = async (): Promise<number> => (await readdir(join(dir, 'records', 'http')).catch(() => [])).filter((n) => !n.startsWith('.')).length

  it('behavior: submits with the bearer token, polls, checks the result and stores the proof; the output passes the stage verifier', async () => {
    service.misbehave = {}
    const ex = make()
    const req = request(10, 13)
    const out = await ex.execute(req)
    expect(mockVerifier(asJob(req), out.output)).toEqual({ ok: true })
    expect(out.proof).toBeDefined()
    const proof = JSON.parse(Buffer.from(await artifacts.get(out.proof as NonNullable<typeof out.proof>)).toString('utf8')) as { commitment: string }
    expect(proof.commitment).toBe(out.output.commitment)
    expect(out.cost).toBe(0.25)
    expect(out.stderrTail).toMatch(/submitted as request mock-/)
    expect(service.stats).toMatchObject({ created: 1, unauthorized: 0 })
  })

  it('behavior: a wrong token is refused by the service and the attempt fails transient with advice, never showing the token', async () => {
    const ex = make({ token: 'wrong-token-value' })
    const err = await failure(ex.execute(request(1, 2)))
    expect(err.failureClass).toBe('transient')
    expect(err.message).toMatch(/token/)
    expect(service.stats.unauthorized).toBe(1)
  })

  it('behavior: the token never appears in errors, details or logs, even when the service echoes it back', async () => {
    service.misbehave = { echoAuthorization: true, fail: { class: 'unprovable', message: 'nope' } }
    const ex = make()
    // A 4xx error body that echoes the Authorization header…
    const submitErr = await failure(make({ url: `${service.url}/wrong-prefix` }).execute(request(1, 2)))
    // …and a remote failure, with every log line captured.
    const failErr = await failure(ex.execute(request(3, 4)))
    expect(failErr.failureClass).toBe('unprovable')
    expect(submitErr.message).toContain('you sent Bearer ***')
    for (const text of [JSON.stringify(submitErr.toJSON()), submitErr.message, JSON.stringify(failErr.toJSON()), logLines.join('')]) {
      expect(text).not.toContain(TOKEN)
    }
  })

  it('behavior: the request id is persisted before waiting; another worker retrying the same attempt resumes it without submitting again', async () => {
    await service.close()
    service = await mockProverService({ token: TOKEN, latencyMs: 1_500 })
    const first = make()
    const req = request(20, 23)
    const running = first.execute(req)
    await until(async () => service.stats.created === 1 && (await recordCount()) === 1, 5_000, 'the submission and its record')
    // A second dispatcher (another worker of the pool) gets the same attempt.
    const second = make()
    const out = await second.execute(request(20, 23))
    expect(mockVerifier(asJob(req), out.output)).toEqual({ ok: true })
    expect(out.stderrTail).toMatch(/resumed request mock-/)
    expect(service.stats.created).toBe(1)
    await running
  })

  it('behavior: a worker process SIGKILLed while waiting leaves its request recorded; the restarted worker resumes it without paying again', async () => {
    await service.close()
    service = await mockProverService({ token: TOKEN, latencyMs: 2_000 })
    const req = request(30, 33)
    const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./crash-worker.fixture.ts', import.meta.url))], {
      env: { ...process.env, SERVICE_URL: service.url, STORE_DIR: dir, TOKEN, JOB: JSON.stringify({ job: req.job, inputs: req.inputs }) },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, sig) => resolve(sig)))
    try {
      await until(async () => service.stats.created === 1 && (await recordCount()) === 1 && service.stats.polls > 0, 30_000, 'the child to submit and poll')
    } finally {
      child.kill('SIGKILL')
    }
    expect(await exited).toBe('SIGKILL')
    const restarted = make()
    const out = await restarted.execute(req)
    expect(mockVerifier(asJob(req), out.output)).toEqual({ ok: true })
    expect(service.stats.created).toBe(1)
    expect(service.stats.cancels).toBe(0)
  })

  it('behavior: a detach (dispatcher stopping) leaves the remote request running and recorded; a plain abort cancels it and forgets it', async () => {
    await service.close()
    service = await mockProverService({ token: TOKEN, latencyMs: 60_000 })
    const ex = make()
    const stop = new AbortController()
    const detached = ex.execute(request(40, 41, { signal: stop.signal }))
    await until(() => service.stats.polls > 0, 5_000, 'polling')
    stop.abort(new DetachReason('dispatcher stopping'))
    const d = await failure(detached)
    expect(d.details).toMatchObject({ aborted: true, detached: true })
    expect(service.stats.cancels).toBe(0)
    expect(await recordCount()).toBe(1)

    const cancel = new AbortController()
    const aborted = ex.execute(request(40, 41, { signal: cancel.signal }))
    await until(() => service.stats.polls > 2, 5_000, 'the resumed request to be polled')
    cancel.abort(new Error('job cancelled by an operator'))
    const c = await failure(aborted)
    expect(c.failureClass).toBe('transient')
    expect(c.details).toMatchObject({ aborted: true, detached: false })
    expect(service.stats.created).toBe(1)
    expect(service.stats.cancels).toBe(1)
    expect([...service.requests.values()][0]?.status).toBe('cancelled')
    expect(await recordCount()).toBe(0)
  })

  it('behavior: a hanging status endpoint hits the per-call timeout, then the overall timeout cancels the remote request (class timeout)', async () => {
    service.misbehave = { hang: 'status' }
    const ex = make({ requestTimeoutMs: 200, timeoutMs: 1_500, maxPollErrors: 100 })
    const started = Date.now()
    const err = await failure(ex.execute(request(50, 51)))
    expect(err.failureClass).toBe('timeout')
    expect(Date.now() - started).toBeLessThan(15_000)
    expect(service.stats.cancels).toBe(1)
    expect(await recordCount()).toBe(0)
  })

  it('behavior: a hanging submit fails transient after its tries, with no request waited on', async () => {
    service.misbehave = { hang: 'submit' }
    const ex = make({ requestTimeoutMs: 200, submitRetries: 1 })
    const err = await failure(ex.execute(request(52, 53)))
    expect(err.failureClass).toBe('transient')
    expect(err.message).toMatch(/could not reach/)
    expect(service.stats.submits).toBe(2)
  })

  it('behavior: 5xx on submit is retried with the same idempotency key, so the service holds one request', async () => {
    service.misbehave = { unavailable: { submit: 2 } }
    const ex = make({ submitRetries: 2 })
    const out = await ex.execute(request(60, 61))
    expect(out.output.first).toBe(60)
    expect(service.stats.submits).toBe(3)
    expect(service.stats.created).toBe(1)
  })

  it('behavior: a lost submit answer is retried with the same idempotency key and gets the same request back', async () => {
    // The first submit is stored by the service but its answer is malformed (as if lost).
    service.misbehave = { malformed: 'submit' }
    const first = await failure(make().execute(request(62, 63)))
    expect(first.failureClass).toBe('transient')
    expect(first.message).toMatch(/not JSON/)
    service.misbehave = {}
    // The bus redelivers the same attempt: the idempotency key is the same.
    const out = await make().execute(request(62, 63))
    expect(out.output.last).toBe(63)
    expect(service.stats.submits).toBe(2)
    expect(service.stats.created).toBe(1)
  })

  it('behavior: a few 5xx polls are tolerated; more fail the attempt transient, keep the record, and the retry resumes the same request', async () => {
    service.misbehave = { unavailable: { status: 2 } }
    const ex = make({ maxPollErrors: 3 })
    expect((await ex.execute(request(70, 71))).output.first).toBe(70)

    service.misbehave = { unavailable: { status: 3 } }
    const err = await failure(ex.execute(request(72, 73)))
    expect(err.failureClass).toBe('transient')
    expect(err.details.keptRecord).toBe(true)
    expect(await recordCount()).toBe(2)
    const created = service.stats.created
    const out = await ex.execute(request(72, 73, { attempt: 2 }))
    expect(out.output.first).toBe(72)
    expect(service.stats.created).toBe(created)
  })

  it('behavior: malformed status JSON is never believed: counted as a failed poll, then transient', async () => {
    service.misbehave = { malformed: 'status' }
    const err = await failure(make({ maxPollErrors: 2 }).execute(request(80, 81)))
    expect(err.failureClass).toBe('transient')
    expect(err.message).toMatch(/malformed status/)
  })

  it('behavior: a malformed result is invalid-output and the record is dropped, so the retry pays for a fresh proof', async () => {
    service.misbehave = { malformed: 'result' }
    const ex = make({ maxPollErrors: 2 })
    const err = await failure(ex.execute(request(82, 83)))
    expect(err.failureClass).toBe('invalid-output')
    expect(await recordCount()).toBe(0)
    service.misbehave = {}
    expect((await ex.execute(request(82, 83, { attempt: 2 }))).output.first).toBe(82)
    expect(service.stats.created).toBe(2)
  })

  it('behavior: a result for another job, another program, or with a proof that does not match its hash is invalid-output and stores nothing', async () => {
    for (const misbehave of [{ wrongJob: true }, { wrongProgram: true }, { badProofSha: true }]) {
      service.misbehave = misbehave
      const err = await failure(make().execute(request(90, 91)))
      expect(err.failureClass, JSON.stringify(misbehave)).toBe('invalid-output')
      expect(await recordCount()).toBe(0)
    }
    expect(await readdir(join(dir, 'proofs')).catch(() => [])).toEqual([])
  })

  it('behavior: an expired request id (410) fails transient and forgets it; the next attempt submits anew', async () => {
    await service.close()
    service = await mockProverService({ token: TOKEN, latencyMs: 300 })
    service.misbehave = { expired: true }
    const ex = make()
    const err = await failure(ex.execute(request(100, 101)))
    expect(err.failureClass).toBe('transient')
    expect(err.details.httpStatus).toBe(410)
    expect(await recordCount()).toBe(0)
    service.misbehave = {}
    expect((await ex.execute(request(100, 101, { attempt: 2 }))).output.first).toBe(100)
    expect(service.stats.created).toBe(2)
  })

  it('behavior: records are per service URL: another service is never asked about a request id it did not issue', async () => {
    await service.close()
    service = await mockProverService({ token: TOKEN, latencyMs: 60_000 })
    const ex = make()
    const stop = new AbortController()
    const first = ex.execute(request(110, 111, { signal: stop.signal }))
    await until(() => service.stats.polls > 0, 5_000, 'polling')
    stop.abort(new DetachReason('worker restarting'))
    await failure(first)
    service.forgetAll() // the service restarted and lost its state
    await service.close()
    const again = await mockProverService({ token: TOKEN, latencyMs: 0 })
    try {
      const ex2 = make({ url: again.url })
      // A different URL is a different service: its records are its own, so nothing is resumed there.
      expect((await ex2.execute(request(110, 111))).output.first).toBe(110)
      expect(again.stats.created).toBe(1)
    } finally {
      await again.close()
    }
  })

  it('behavior: a resumed request id unknown to the same service is resubmitted, not waited on forever', async () => {
    await service.close()
    service = await mockProverService({ token: TOKEN, latencyMs: 60_000 })
    const ex = make()
    const stop = new AbortController()
    const first = ex.execute(request(112, 113, { signal: stop.signal }))
    await until(() => service.stats.polls > 0, 5_000, 'polling')
    stop.abort(new DetachReason('worker restarting'))
    await failure(first)
    service.forgetAll()
    const out = ex.execute(request(112, 113))
    await until(() => service.stats.created === 2, 5_000, 'the resubmission')
    for (const r of service.requests.values()) r.doneAt = 0
    expect((await out).output.first).toBe(112)
    expect((await out).stderrTail).toMatch(/unknown to the service \(HTTP 404\); submitting again/)
  })

  it('behavior: remote failures map to failure classes (unprovable, too-big, transient) and forget the request', async () => {
    // A broken header chain: the service's guest rejects it.
    const broken = await failure(make().execute(request(120, 123, { brokenAt: 122 })))
    expect(broken.failureClass).toBe('unprovable')
    service.misbehave = { fail: { class: 'too-big', message: 'exceeded cycle limit' } }
    expect((await failure(make().execute(request(124, 125)))).failureClass).toBe('too-big')
    service.misbehave = { fail: { class: 'gpu-on-fire', message: 'node lost' } }
    expect((await failure(make().execute(request(126, 127)))).failureClass).toBe('transient')
    expect(await recordCount()).toBe(0)
  })

  it('behavior: a submit body over maxRequestBytes is too-big (split), never sent', async () => {
    const err = await failure(make({ maxRequestBytes: 200 }).execute(request(130, 140)))
    expect(err.failureClass).toBe('too-big')
    expect(service.stats.submits).toBe(0)
  })

  it('behavior: referenced artifacts are inlined in the submit body', async () => {
    const trace = await artifacts.put(new TextEncoder().encode('{"trace":1}'), { prefix: 'traces' })
    const req = request(150, 151)
    ;(req.inputs[0]?.data as Record<string, unknown>).trace = trace
    await make().execute(req)
    expect([...service.requests.values()][0]?.artifacts).toBe(1)
  })

  it('behavior: a bearer token over plain http to a non-loopback host is refused at construction', () => {
    expect(() => httpExecutor({ url: 'http://prover.example.com', token: 'x', artifacts, records, timeoutMs: 1000 })).toThrow(ConfigError)
    expect(() => httpExecutor({ url: 'http://prover.example.com', token: 'x', allowInsecureHttp: true, artifacts, records, timeoutMs: 1000 })).not.toThrow()
    expect(() => httpExecutor({ url: 'https://user:pw@prover.example.com', artifacts, records, timeoutMs: 1000 })).toThrow(ConfigError)
  })
})
