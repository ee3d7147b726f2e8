import fc from 'fast-check'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from 'kysely'
import pino from 'pino'
import { afterAll, describe, expect, it } from 'vitest'
import { fsArtifacts } from '../artifacts/fs/fs-artifacts.js'
import { mockCommitment } from '../backends/mock/mock-proof.js'
import { memoryBus } from '../bus/memory/index.js'
import { deadLetterSubject, type Delivery } from '../bus/types.js'
import { parseConfig } from '../config/load.js'
import { jobId } from '../core/ids.js'
import { openPostgres } from '../state/sql/database.js'
import { sqlStateStore } from '../state/sql/sql-state.js'
import type { NewJob } from '../state/types.js'
import type { PipelineContext } from './context.js'
import { decodeControlMessage, decodeEventMessage, decodeJobMessage, decodeResultMessage, MessageError } from './decode.js'
import { eventsSubject, resultsSubject, type EventMessage, type JobMessage, type ResultMessage } from './messages.js'
import { recorder } from './recorder.js'
import { mockStatementInputs } from './verify.js'

const sha = 'a'.repeat(64)
const validJob: JobMessage = {
  jobId: 'range:1-4:0123456789abcdef', stage: 'range', attempt: 1, first: 1, last: 4, lastHash: `0x${'1'.repeat(64)}`, programId: 'mock-v1',
  inputs: { key: `inputs/${sha}`, sha256: sha, size: 10 }, avoidWorkers: [], requirements: { labels: [], cost: 5, programId: 'mock-v1' }, pool: 'own',
}
const validOk: ResultMessage = { ok: true, jobId: 'range:1-4:x', attempt: 2, workerId: 'w1', durationMs: 5, output: { commitment: 'c' }, proof: { key: 'p', sha256: sha, size: 3 } }
const validFail: ResultMessage = { ok: false, jobId: 'range:1-4:x', attempt: 1, workerId: 'w1', durationMs: 5, failureClass: 'transient', error: 'boom' }
const validEvent: EventMessage = { type: 'started', jobId: 'range:1-4:x', attempt: 1, workerId: 'w1', at: 1_700_000_000_000 }

const decoders = [
  ['job', decodeJobMessage, validJob],
  ['result (ok)', decodeResultMessage, validOk],
  ['result (failed)', decodeResultMessage, validFail],
  ['event', decodeEventMessage, validEvent],
  ['control', decodeControlMessage, { type: 'superseded', jobId: 'j', attempt: 3 }],
] as const

/** The message with one field replaced (or removed, when `value` is undefined). */
function mutate(msg: object, key: string, value: unknown): Record<string, unknown> {
  const copy: Record<string, unknown> = { ...(msg as Record<string, unknown>) }
  if (value === undefined) delete copy[key]
  else copy[key] = value
  return copy
}

/** Either a typed MessageError with a clear message, or a value; nothing else. */
function outcome(decode: (d: unknown) => unknown, data: unknown): { ok: true; value: unknown } | { ok: false; err: MessageError } {
  try {
    return { ok: true, value: decode(data) }
  } catch (err) {
    expect(err).toBeInstanceOf(MessageError)
    const e = err as MessageError
    expect(e.code).toBe('MESSAGE_INVALID')
    expect(e.retryable).toBe(false)
    expect(e.message).toMatch(/^invalid (job|result|event|control) message: \S/)
    return { ok: false, err: e }
  }
}

describe('bus message decoding (fuzzed)', () => {
  it('behavior: valid messages decode unchanged, and extra fields from a newer sender are tolerated', () => {
    for (const [, decode, msg] of decoders) {
      expect(decode(msg)).toEqual(msg)
      expect(() => decode({ ...msg, addedInV2: [1, 2] })).not.toThrow()
    }
  })

  it('behavior: any JSON value is either a well-formed message or a typed MESSAGE_INVALID error, never another exception', () => {
    for (const [, decode] of decoders) {
      fc.assert(fc.property(fc.jsonValue(), (data) => void outcome(decode, data)), { numRuns: 300 })
    }
  })

  it('behavior: a message with any one field replaced by any JSON value is rejected unless that value is valid there; the error names the field', () => {
    for (const [name, decode, msg] of decoders) {
      const keys = Object.keys(msg)
      fc.assert(
        fc.property(fc.constantFrom(...keys), fc.option(fc.jsonValue(), { nil: undefined }), (key, value) => {
          const r = outcome(decode, mutate(msg, key, value))
          if (!r.ok) {
            // Flipping `ok` selects the other variant, whose own fields are then named.
            if (key !== 'ok') expect(r.err.message, name).toMatch(new RegExp(`${key}|\\(message\\)`))
            return
          }
          // Accepted: then what the consumers rely on holds.
          const v = r.value as Record<string, unknown>
          expect(typeof v.jobId === 'string' && v.jobId.length > 0).toBe(true)
          expect(Number.isSafeInteger(v.attempt) && (v.attempt as number) >= 1).toBe(true)
          if (name === 'job') expect((v.first as number) <= (v.last as number)).toBe(true)
          if (name.startsWith('result') && v.ok === false) {
            expect(['transient', 'timeout', 'too-big', 'unprovable', 'invalid-output', 'lease-expired']).toContain(v.failureClass)
          }
          if (name.startsWith('result') && v.ok === true) expect(typeof v.output === 'object' && v.output !== null && !Array.isArray(v.output)).toBe(true)
        }),
        { numRuns: 400 },
      )
    }
  })

  it('behavior: the cases that used to corrupt a record are refused: an unknown failure class, a string attempt, a missing output, first after last', () => {
    expect(() => decodeResultMessage({ ...validFail, failureClass: 'bogus' })).toThrow(/failureClass/)
    expect(() => decodeResultMessage({ ...validFail, attempt: '1' })).toThrow(/attempt/)
    expect(() => decodeResultMessage(mutate(validOk, 'output', undefined))).toThrow(/output/)
    expect(() => decodeResultMessage({ ...validOk, output: [1, 2] })).toThrow(/output/)
    expect(() => decodeJobMessage({ ...validJob, first: 9 })).toThrow(/first must not be after last/)
    expect(() => decodeJobMessage({ ...validJob, inputs: { key: 'k', sha256: 'XYZ', size: 1 } })).toThrow(/inputs.sha256/)
    expect(() => decodeEventMessage({ ...validEvent, at: Number.NaN })).toThrow(/at/)
  })

  it('behavior: a shadow observation event decodes; one of an unknown kind or without details is refused', () => {
    const observation = { kind: 'shadow', message: 'shadow agrees', details: { agreement: 'agree' } }
    const ok = { ...validEvent, type: 'observation', observation }
    expect(decodeEventMessage(ok)).toEqual(ok)
    expect(() => decodeEventMessage({ ...ok, observation: { ...observation, kind: 'gossip' } })).toThrow(MessageError)
    expect(() => decodeEventMessage({ ...ok, observation: { kind: 'shadow', message: 'x' } })).toThrow(/details/)
  })
})

const PG_URL = process.env.PROOFLINE_TEST_PG_URL ?? 'postgres://root@127.0.0.1:5432/test'
const cleanups: (() => Promise<void>)[] = []
afterAll(async () => {
  for (const c of cleanups.reverse()) await c()
})

describe('the recorder under malformed messages', () => {
  it('behavior: fuzzed malformed results and events are dead-lettered, the job record is untouched, and the recorder keeps working', { timeout: 60_000 }, async () => {
    const schema = `dec_${Math.random().toString(36).slice(2, 10)}`
    const database = await openPostgres(PG_URL, schema)
    const dir = await mkdtemp(join(tmpdir(), 'pl-dec-'))
    const bus = memoryBus()
    cleanups.push(async () => {
      await bus.close()
      await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(database.db)
      await database.close()
      await rm(dir, { recursive: true, force: true })
    })
    const config = parseConfig(
      'version: 1\nsource: { type: synthetic }\nstages:\n  - { name: range, input: blocks, collector: { strategy: sequential, maxCount: 4 }, executor: { type: mock } }\n',
      join(dir, 'p.yaml'),
    )
    const state = await sqlStateStore(database)
    const fatal: unknown[] = []
    const ctx: PipelineContext = { config, state, bus, artifacts: fsArtifacts({ dir }), log: pino({ level: 'silent' }), now: () => Date.now(), fatal: (err) => void fatal.push(err) }
    const hash = (n: number): string => `0x${n.toString(16).padStart(64, '0')}`
    const inputs = [1, 2, 3, 4].map((n) => ({ id: `b${n}`, data: { number: n, hash: hash(n), parentHash: hash(n - 1), timestamp: n, gasUsed: 1, cost: 1, txCount: 0 } }))
    const job: NewJob = {
      id: jobId({ stage: 'range', first: 1, last: 4, lastHash: hash(4), programId: 'mock-v1' }),
      stage: 'range', first: 1, last: 4, lastHash: hash(4), programId: 'mock-v1', maxAttempts: 3, inputs, cost: 4, capacity: null, overCapacity: false, parentId: null,
    }
    await state.createJobs([job])
    const before = await state.getJob(job.id)
    const rec = recorder(ctx, config.stages[0] as (typeof config.stages)[number])
    rec.start()
    cleanups.unshift(() => rec.stop())

    // Malformed: each aimed at this job, each invalid (checked by the decoder itself).
    const base = { ...validFail, jobId: job.id }
    const bad = fc
      .sample(fc.tuple(fc.constantFrom(...Object.keys(base)), fc.jsonValue()), 200)
      .map(([k, v]) => mutate(base, k, v))
      .filter((m) => !outcome(decodeResultMessage, m).ok)
      .slice(0, 40)
    bad.push({ ...base, failureClass: 'bogus' }, { ...base, attempt: '1' }, { ...validOk, jobId: job.id, output: null })
    const badEvents = [{ ...validEvent, jobId: job.id, attempt: 0 }, { ...validEvent, jobId: job.id, type: 'finished' }, { jobId: job.id }]
    for (const [i, m] of bad.entries()) await bus.publish(resultsSubject('range'), { id: `bad-${i}`, data: m })
    for (const [i, m] of badEvents.entries()) await bus.publish(eventsSubject('range'), { id: `bad-ev-${i}`, data: m })

    const dead: string[] = []
    const abort = new AbortController()
    cleanups.unshift(() => Promise.resolve(abort.abort()))
    for (const subject of [resultsSubject('range'), eventsSubject('range')]) {
      void bus.consume(deadLetterSubject(subject), 'test', (d: Delivery) => Promise.resolve(void dead.push(d.id)), { signal: abort.signal })
    }
    for (let i = 0; i < 200 && dead.length < bad.length + badEvents.length; i++) await new Promise((r) => setTimeout(r, 25))
    expect(dead).toHaveLength(bad.length + badEvents.length)
    // Nothing about the job changed: no attempt rows, same state, no failure recorded.
    expect(await state.getJob(job.id)).toEqual(before)
    expect(await state.listAttempts(job.id)).toEqual([])
    expect(fatal).toEqual([])

    // A valid, verified result still finishes the job.
    const commitment = mockCommitment({ program: 'mock-v1', stage: 'range', first: 1, last: 4, lastHash: hash(4), inputs: mockStatementInputs(job) })
    await bus.publish(resultsSubject('range'), { id: 'good', data: { ...validOk, jobId: job.id, attempt: 1, proof: undefined, output: { commitment, first: 1, last: 4, lastHash: hash(4), program: 'mock-v1' } } })
    for (let i = 0; i < 200 && (await state.getJob(job.id))?.state !== 'succeeded'; i++) await new Promise((r) => setTimeout(r, 25))
    expect((await state.getJob(job.id))?.state).toBe('succeeded')
  })
})
