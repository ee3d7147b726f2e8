/**
 * The conformance suite of the {@link StateStore} port: every adapter runs it against the real
 * thing (see src/state/sql/*.test.ts). Each test opens its own store (its own namespace) and
 * cleans it up.
 */
import { describe, expect, it } from 'vitest'
import { StateError } from '../core/errors.js'
import type { StageResult } from '../core/types.js'
import type { BlockRecord, CollectorItem, NewJob, PipelineEvent, StateStore } from './types.js'

/** Opens a fresh, empty store for one test, and a way to remove it afterwards. */
export type OpenStateStore = () => Promise<{ store: StateStore; cleanup: () => Promise<void> }>

/** A job to create, with every field set to something recognisable. */
export function newJob(id: string, over: Partial<NewJob> = {}): NewJob {
  return {
    id,
    stage: 'range',
    first: 1,
    last: 10,
    lastHash: `0x${id.replace(/[^0-9a-f]/g, '').padEnd(8, 'a')}`,
    programId: 'prog-1',
    maxAttempts: 3,
    inputs: [{ id: `blocks:${id}`, data: { number: 1, list: [1, 2, 3] } }],
    cost: 1000,
    capacity: 5000,
    overCapacity: false,
    parentId: null,
    ...over,
  }
}

function item(id: string, start: number, over: Partial<CollectorItem> = {}): CollectorItem {
  return { id, start, end: start, cost: 10, data: { id, start }, receivedAt: 1_700_000_000_000, ...over }
}

function result(jobId: string): StageResult {
  return { jobId, stage: 'range', first: 1, last: 10, lastHash: '0xabc', output: { root: '0x01', values: [1, 'two', null] }, cost: 1000 }
}

function event(at: number, kind: PipelineEvent['kind'], jobId: string | null, message: string = kind): PipelineEvent {
  return { at, kind, jobId, message, details: { at, nested: { list: [1, 2] } } }
}

function block(number: number, hash: string): BlockRecord {
  return { number, hash, parentHash: `0xparent${number}`, gasUsed: 21_000, cost: 21_000, seenAt: 1_700_000_000_000 + number }
}

const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 3))

/**
 * Registers the conformance tests of the StateStore port for one adapter. `open` is called once
 * per test and must return an empty store in its own namespace.
 */
export function stateStoreConformance(name: string, open: OpenStateStore): void {
  const test = (title: string, fn: (store: StateStore) => Promise<void>): void => {
    it(title, async () => {
      const { store, cleanup } = await open()
      try {
        await fn(store)
      } finally {
        await cleanup()
      }
    })
  }

  describe(`StateStore conformance: ${name}`, () => {
    describe('jobs', () => {
      test('behavior: created jobs are pending at attempt 1 and read back field for field', async (s) => {
        const before = Date.now()
        const job = newJob('j1', {
          first: 2 ** 53 - 100,
          last: 2 ** 53 - 1,
          parentId: 'parent',
          capacity: null,
          overCapacity: true,
          notBefore: 1_800_000_000_000,
          inputs: [
            { id: 'a', data: [1, 2, { x: 'y' }] },
            { id: 'b', data: null },
          ],
        })
        expect(await s.createJobs([job])).toEqual(['j1'])
        const got = await s.getJob('j1')
        expect(got).toEqual({
          ...job,
          state: 'pending',
          attempt: 1,
          result: null,
          failureClass: null,
          lastError: null,
          leaseExpiresAt: null,
          heartbeatAt: null,
          notBefore: 1_800_000_000_000,
          dispatchedAttempt: 0,
          resultPublished: false,
          createdAt: expect.any(Number),
          updatedAt: expect.any(Number),
        })
        expect(got!.createdAt).toBeGreaterThanOrEqual(before - 1000)
        expect(got!.updatedAt).toBe(got!.createdAt)
        expect((await s.getJob('j1'))!.notBefore).toBe(1_800_000_000_000)
      })

      test('behavior: a job created without notBefore has notBefore null', async (s) => {
        const job = newJob('j1')
        delete job.notBefore
        await s.createJobs([job])
        expect((await s.getJob('j1'))!.notBefore).toBeNull()
      })

      test('behavior: creating an existing id changes nothing and returns only the ids created', async (s) => {
        expect(await s.createJobs([newJob('j1', { cost: 1 })])).toEqual(['j1'])
        await s.updateJob('j1', { states: ['pending'] }, { state: 'running' })
        expect(await s.createJobs([newJob('j1', { cost: 2 }), newJob('j2')])).toEqual(['j2'])
        const j1 = await s.getJob('j1')
        expect(j1!.cost).toBe(1)
        expect(j1!.state).toBe('running')
        expect(await s.createJobs([newJob('j1'), newJob('j2')])).toEqual([])
        expect(await s.createJobs([])).toEqual([])
      })

      test('behavior: an id repeated within one batch is created once, from its first occurrence', async (s) => {
        expect(await s.createJobs([newJob('j1', { cost: 7 }), newJob('j1', { cost: 8 })])).toEqual(['j1'])
        expect((await s.getJob('j1'))!.cost).toBe(7)
      })

      test('behavior: an unknown job id reads as undefined', async (s) => {
        expect(await s.getJob('nope')).toBeUndefined()
      })

      test('behavior: updateJob applies the patch when the job is in an expected state and stamps updatedAt', async (s) => {
        await s.createJobs([newJob('j1')])
        const created = (await s.getJob('j1'))!
        await tick()
        const updated = await s.updateJob(
          'j1',
          { states: ['pending', 'retrying'], attempt: 1 },
          { state: 'running', leaseExpiresAt: 1_800_000_000_000, heartbeatAt: 1_799_999_999_000, dispatchedAttempt: 1 },
        )
        expect(updated).toMatchObject({ id: 'j1', state: 'running', attempt: 1, leaseExpiresAt: 1_800_000_000_000, heartbeatAt: 1_799_999_999_000, dispatchedAttempt: 1 })
        expect(updated!.updatedAt).toBeGreaterThan(created.updatedAt)
        expect(updated!.createdAt).toBe(created.createdAt)
        expect(await s.getJob('j1')).toEqual(updated)
      })

      test('behavior: updateJob refuses a job in another state and changes nothing', async (s) => {
        await s.createJobs([newJob('j1')])
        const before = await s.getJob('j1')
        expect(await s.updateJob('j1', { states: ['running'] }, { state: 'succeeded' })).toBeUndefined()
        expect(await s.updateJob('j1', { states: [] }, { state: 'succeeded' })).toBeUndefined()
        expect(await s.getJob('j1')).toEqual(before)
      })

      test('behavior: updateJob of an unknown id returns undefined', async (s) => {
        expect(await s.updateJob('nope', { states: ['pending'] }, { state: 'running' })).toBeUndefined()
      })

      test('behavior: a result for a stale attempt is not applied', async (s) => {
        await s.createJobs([newJob('j1')])
        await s.updateJob('j1', { states: ['pending'], attempt: 1 }, { state: 'running' })
        // Attempt 1 timed out; attempt 2 is running.
        await s.updateJob('j1', { states: ['running'], attempt: 1 }, { state: 'retrying', attempt: 2, failureClass: 'timeout' })
        await s.updateJob('j1', { states: ['retrying'], attempt: 2 }, { state: 'running' })
        const before = await s.getJob('j1')
        const stale = await s.updateJob('j1', { states: ['running'], attempt: 1 }, { state: 'succeeded', result: result('j1') })
        expect(stale).toBeUndefined()
        expect(await s.getJob('j1')).toEqual(before)
        const current = await s.updateJob('j1', { states: ['running'], attempt: 2 }, { state: 'succeeded', result: result('j1') })
        expect(current).toMatchObject({ state: 'succeeded', attempt: 2, result: result('j1'), failureClass: 'timeout' })
      })

      test('behavior: of two racing completions of one attempt exactly one is applied', async (s) => {
        await s.createJobs([newJob('j1')])
        await s.updateJob('j1', { states: ['pending'] }, { state: 'running' })
        const outcomes = await Promise.all(
          [1, 2, 3].map((n) =>
            s.updateJob('j1', { states: ['running'], attempt: 1 }, { state: 'succeeded', result: { ...result('j1'), output: { n } } }),
          ),
        )
        const applied = outcomes.filter((o) => o !== undefined)
        expect(applied).toHaveLength(1)
        expect((await s.getJob('j1'))!.result).toEqual(applied[0]!.result)
      })

      test('behavior: patch fields left undefined are kept and null clears them', async (s) => {
        await s.createJobs([newJob('j1', { notBefore: 123 })])
        await s.updateJob('j1', { states: ['pending'] }, { state: 'running', lastError: 'boom', failureClass: 'transient', leaseExpiresAt: 99 })
        const after = await s.updateJob('j1', { states: ['running'] }, { lastError: null, resultPublished: false })
        expect(after).toMatchObject({ state: 'running', lastError: null, failureClass: 'transient', leaseExpiresAt: 99, notBefore: 123 })
        const cleared = await s.updateJob('j1', { states: ['running'] }, { failureClass: null, leaseExpiresAt: null, notBefore: null, result: null })
        expect(cleared).toMatchObject({ failureClass: null, leaseExpiresAt: null, notBefore: null, result: null })
        const budget = await s.updateJob('j1', { states: ['running'] }, { attempt: 2, maxAttempts: 4 })
        expect(budget).toMatchObject({ attempt: 2, maxAttempts: 4, state: 'running' })
        const swapped = [{ id: 'in-1', data: { jobId: 'r1', proof: 'new' } }]
        expect(await s.updateJob('j1', { states: ['running'] }, { inputs: swapped })).toMatchObject({ inputs: swapped, attempt: 2 })
        expect((await s.getJob('j1'))!.inputs).toEqual(swapped)
      })

      test('behavior: listJobs filters by stage and states and orders by first', async (s) => {
        await s.createJobs([
          newJob('r3', { first: 21, last: 30 }),
          newJob('r1', { first: 1, last: 10 }),
          newJob('r2', { first: 11, last: 20 }),
          newJob('a1', { stage: 'aggregate', first: 0, last: 30 }),
        ])
        await s.updateJob('r2', { states: ['pending'] }, { state: 'running' })
        expect((await s.listJobs()).map((j) => j.id)).toEqual(['a1', 'r1', 'r2', 'r3'])
        expect((await s.listJobs({ stage: 'range' })).map((j) => j.id)).toEqual(['r1', 'r2', 'r3'])
        expect((await s.listJobs({ stage: 'range', states: ['pending'] })).map((j) => j.id)).toEqual(['r1', 'r3'])
        expect((await s.listJobs({ states: ['running', 'succeeded'] })).map((j) => j.id)).toEqual(['r2'])
        expect(await s.listJobs({ states: [] })).toEqual([])
        expect((await s.listJobs({ stage: 'aggregate' })).map((j) => j.id)).toEqual(['a1'])
        expect(await s.listJobs({ stage: 'other' })).toEqual([])
      })

      test('behavior: listJobs with omitInputs gives the same jobs, fields and order, with empty inputs', async (s) => {
        await s.createJobs([
          newJob('r2', { first: 11, last: 20, inputs: [{ id: 'b11', data: { number: 11 } }] }),
          newJob('r1', { first: 1, last: 10, inputs: [{ id: 'b1', data: { number: 1 } }, { id: 'b2', data: { number: 2 } }] }),
        ])
        await s.updateJob('r1', { states: ['pending'] }, { state: 'succeeded', result: result('r1') })
        const full = await s.listJobs({ stage: 'range' })
        const light = await s.listJobs({ stage: 'range', omitInputs: true })
        expect(full[0]!.inputs).toHaveLength(2)
        expect(light).toEqual(full.map((j) => ({ ...j, inputs: [] })))
        expect(await s.listJobs({ states: ['succeeded'], omitInputs: true, limit: 1 })).toEqual([{ ...full[0]!, inputs: [] }])
      })

      test('behavior: markDispatched records published attempts in one write, only for jobs still pending or retrying at that attempt', async (s) => {
        await s.createJobs([newJob('j1', { first: 1 }), newJob('j2', { first: 2 }), newJob('j3', { first: 3 }), newJob('j4', { first: 4 })])
        await s.updateJob('j3', { states: ['pending'] }, { state: 'running' })
        await s.updateJob('j4', { states: ['pending'] }, { state: 'retrying', attempt: 2 })
        const updated = await s.markDispatched([
          { id: 'j1', attempt: 1 },
          { id: 'j2', attempt: 2 }, // not j2's current attempt
          { id: 'j3', attempt: 1 }, // running: left alone
          { id: 'j4', attempt: 2 },
          { id: 'nope', attempt: 1 },
        ])
        expect(updated.map((j) => j.id).sort()).toEqual(['j1', 'j4'])
        expect(updated.every((j) => j.inputs.length === 0)).toBe(true)
        expect(updated.find((j) => j.id === 'j4')).toMatchObject({ state: 'retrying', attempt: 2, dispatchedAttempt: 2 })
        expect((await s.getJob('j1'))!).toMatchObject({ dispatchedAttempt: 1, inputs: newJob('j1').inputs })
        expect((await s.getJob('j2'))!.dispatchedAttempt).toBe(0)
        expect((await s.getJob('j3'))!.dispatchedAttempt).toBe(0)
        expect((await s.listJobs({ undispatched: true })).map((j) => j.id)).toEqual(['j2', 'j3'])
        expect(await s.markDispatched([])).toEqual([])
      })

      test('behavior: concurrent markDispatched calls each get back their own jobs; a stale attempt next to the current one is not applied', async (s) => {
        await s.createJobs([newJob('j1', { first: 1 }), newJob('j2', { first: 2 }), newJob('j3', { first: 3 })])
        await s.updateJob('j3', { states: ['pending'] }, { state: 'retrying', attempt: 2 })
        const [a, b, c, d] = await Promise.all([
          s.markDispatched([{ id: 'j1', attempt: 1 }]),
          s.markDispatched([{ id: 'j2', attempt: 1 }]),
          s.markDispatched([{ id: 'j3', attempt: 1 }]),
          s.markDispatched([{ id: 'j3', attempt: 2 }]),
        ])
        expect([a, b, c, d].map((r) => r.map((j) => j.id))).toEqual([['j1'], ['j2'], [], ['j3']])
        expect((await s.getJob('j3'))!).toMatchObject({ attempt: 2, dispatchedAttempt: 2 })
        expect(await s.listJobs({ undispatched: true })).toEqual([])
      })

      test('behavior: listJobs undispatched returns the jobs whose current attempt was not published', async (s) => {
        await s.createJobs([newJob('j1', { first: 1 }), newJob('j2', { first: 2 }), newJob('j3', { first: 3 })])
        await s.updateJob('j1', { states: ['pending'] }, { dispatchedAttempt: 1 })
        // j2 was dispatched, failed, and its attempt 2 was not published yet.
        await s.updateJob('j2', { states: ['pending'] }, { dispatchedAttempt: 1, state: 'running' })
        await s.updateJob('j2', { states: ['running'] }, { state: 'retrying', attempt: 2 })
        expect((await s.listJobs({ undispatched: true })).map((j) => j.id)).toEqual(['j2', 'j3'])
        expect((await s.listJobs({ undispatched: true, states: ['retrying'] })).map((j) => j.id)).toEqual(['j2'])
      })

      test('behavior: listJobs unpublishedResults returns succeeded jobs whose result is not published', async (s) => {
        await s.createJobs([newJob('j1', { first: 1 }), newJob('j2', { first: 2 }), newJob('j3', { first: 3 })])
        for (const id of ['j1', 'j2']) await s.updateJob(id, { states: ['pending'] }, { state: 'succeeded', result: result(id) })
        await s.updateJob('j1', { states: ['succeeded'] }, { resultPublished: true })
        const unpublished = await s.listJobs({ unpublishedResults: true })
        expect(unpublished.map((j) => j.id)).toEqual(['j2'])
        expect(unpublished[0]!.result).toEqual(result('j2'))
      })

      test('behavior: listJobs coversBlock returns the jobs whose range holds the block, ends included', async (s) => {
        await s.createJobs([newJob('a', { first: 1, last: 10 }), newJob('b', { first: 11, last: 20 }), newJob('agg', { stage: 'aggregate', first: 1, last: 20 })])
        const ids = async (n: number): Promise<string[]> => (await s.listJobs({ coversBlock: n })).map((j) => j.id).sort()
        expect(await ids(1)).toEqual(['a', 'agg'])
        expect(await ids(10)).toEqual(['a', 'agg'])
        expect(await ids(11)).toEqual(['agg', 'b'])
        expect((await s.listJobs({ coversBlock: 20, stage: 'range' })).map((j) => j.id)).toEqual(['b'])
        expect(await s.listJobs({ coversBlock: 21 })).toEqual([])
      })

      test('behavior: listJobs lastAtLeast returns the jobs ending at or above the block', async (s) => {
        await s.createJobs([newJob('a', { first: 1, last: 10 }), newJob('b', { first: 11, last: 20 }), newJob('agg', { stage: 'aggregate', first: 1, last: 20 })])
        const ids = async (n: number): Promise<string[]> => (await s.listJobs({ lastAtLeast: n })).map((j) => j.id).sort()
        expect(await ids(10)).toEqual(['a', 'agg', 'b'])
        expect(await ids(11)).toEqual(['agg', 'b'])
        expect((await s.listJobs({ lastAtLeast: 15, stage: 'range' })).map((j) => j.id)).toEqual(['b'])
        expect(await s.listJobs({ lastAtLeast: 21 })).toEqual([])
      })

      test('behavior: listJobs honours limit and orders recent jobs by updatedAt descending', async (s) => {
        await s.createJobs([newJob('j1', { first: 1 }), newJob('j2', { first: 2 }), newJob('j3', { first: 3 })])
        for (const id of ['j2', 'j3', 'j1']) {
          await tick()
          await s.updateJob(id, { states: ['pending'] }, { state: 'running' })
        }
        expect((await s.listJobs({ limit: 2 })).map((j) => j.id)).toEqual(['j1', 'j2'])
        expect((await s.listJobs({ order: 'recent' })).map((j) => j.id)).toEqual(['j1', 'j3', 'j2'])
        expect((await s.listJobs({ order: 'recent', limit: 1 })).map((j) => j.id)).toEqual(['j1'])
      })

      test('behavior: countJobs counts jobs per stage and state', async (s) => {
        expect(await s.countJobs()).toEqual({})
        await s.createJobs([newJob('r1'), newJob('r2'), newJob('r3'), newJob('a1', { stage: 'aggregate' })])
        await s.updateJob('r1', { states: ['pending'] }, { state: 'running' })
        await s.updateJob('r2', { states: ['pending'] }, { state: 'succeeded' })
        expect(await s.countJobs()).toEqual({ range: { pending: 1, running: 1, succeeded: 1 }, aggregate: { pending: 1 } })
      })
    })

    describe('collectors', () => {
      test('behavior: a collector item is stored once per id and a redelivered id is ignored', async (s) => {
        expect(await s.addCollectorItems('c', [item('a', 1), item('b', 2)])).toEqual(['a', 'b'])
        expect(await s.addCollectorItems('c', [item('b', 2, { cost: 999 }), item('c', 3)])).toEqual(['c'])
        expect(await s.addCollectorItems('c', [item('d', 4), item('d', 4)])).toEqual(['d'])
        expect(await s.addCollectorItems('c', [])).toEqual([])
        const open = await s.listOpenCollectorItems('c')
        expect(open.map((i) => i.id)).toEqual(['a', 'b', 'c', 'd'])
        expect(open[1]!.cost).toBe(10)
      })

      test('behavior: an item id already consumed is ignored and does not reopen', async (s) => {
        await s.addCollectorItems('c', [item('a', 1), item('b', 2)])
        await s.createJobs([newJob('j1')])
        await s.consumeCollectorItems('c', ['a'], 'j1')
        expect(await s.addCollectorItems('c', [item('a', 1), item('b', 2)])).toEqual([])
        expect((await s.listOpenCollectorItems('c')).map((i) => i.id)).toEqual(['b'])
      })

      test('behavior: open items are listed by start, field for field, per collector', async (s) => {
        const items = [
          item('x3', 30, { end: 39, cost: 2 ** 40, data: [1, 'two', { three: 3 }] }),
          item('x1', 10, { end: 19, data: null }),
          item('x2', 20, { end: 29, data: 'text' }),
        ]
        await s.addCollectorItems('range', items)
        await s.addCollectorItems('other', [item('x1', 5)])
        expect(await s.listOpenCollectorItems('range')).toEqual([items[1], items[2], items[0]])
        expect((await s.listOpenCollectorItems('other')).map((i) => i.start)).toEqual([5])
        expect(await s.listOpenCollectorItems('none')).toEqual([])
      })

      test('behavior: consumed items leave the open list, and the same item id in another collector is separate', async (s) => {
        await s.addCollectorItems('c1', [item('a', 1), item('b', 2), item('c', 3)])
        await s.addCollectorItems('c2', [item('a', 1)])
        await s.consumeCollectorItems('c1', ['a', 'b'], 'j1')
        expect((await s.listOpenCollectorItems('c1')).map((i) => i.id)).toEqual(['c'])
        expect((await s.listOpenCollectorItems('c2')).map((i) => i.id)).toEqual(['a'])
      })

      test('behavior: consuming the same items again for the same job is harmless', async (s) => {
        await s.addCollectorItems('c', [item('a', 1), item('b', 2)])
        await s.consumeCollectorItems('c', ['a'], 'j1')
        await s.consumeCollectorItems('c', ['a'], 'j1')
        await s.consumeCollectorItems('c', [], 'j1')
        expect((await s.listOpenCollectorItems('c')).map((i) => i.id)).toEqual(['b'])
      })

      test('behavior: consuming items another job took, or unknown items, is refused and consumes nothing', async (s) => {
        await s.addCollectorItems('c', [item('a', 1), item('b', 2)])
        await s.consumeCollectorItems('c', ['a'], 'j1')
        await expect(s.consumeCollectorItems('c', ['a', 'b'], 'j2')).rejects.toBeInstanceOf(StateError)
        await expect(s.consumeCollectorItems('c', ['b', 'zz'], 'j2')).rejects.toBeInstanceOf(StateError)
        expect((await s.listOpenCollectorItems('c')).map((i) => i.id)).toEqual(['b'])
      })

      test('behavior: a large batch of items is stored and consumed whole', async (s) => {
        const many = Array.from({ length: 1234 }, (_, i) => item(`i${i}`, i))
        expect(await s.addCollectorItems('c', many)).toHaveLength(1234)
        expect(await s.addCollectorItems('c', many)).toEqual([])
        expect((await s.listOpenCollectorItems('c')).map((i) => i.start)).toEqual(many.map((i) => i.start))
        await s.consumeCollectorItems('c', many.slice(0, 1200).map((i) => i.id), 'j1')
        expect(await s.listOpenCollectorItems('c')).toHaveLength(34)
      })

      test('behavior: a cursor reads back the last value set and is undefined before', async (s) => {
        expect(await s.getCursor('range')).toBeUndefined()
        await s.setCursor('range', '11')
        await s.setCursor('range', '21')
        await s.setCursor('aggregate', 'x')
        expect(await s.getCursor('range')).toBe('21')
        expect(await s.getCursor('aggregate')).toBe('x')
      })
    })

    describe('transactions', () => {
      test('behavior: a transaction commits all its writes together and returns its value', async (s) => {
        const value = await s.transaction(async (tx) => {
          await tx.addCollectorItems('c', [item('a', 1)])
          await tx.createJobs([newJob('j1')])
          await tx.consumeCollectorItems('c', ['a'], 'j1')
          await tx.setCursor('c', '2')
          return 42
        })
        expect(value).toBe(42)
        expect(await s.getJob('j1')).toBeDefined()
        expect(await s.listOpenCollectorItems('c')).toEqual([])
        expect(await s.getCursor('c')).toBe('2')
      })

      test('behavior: a transaction that throws commits nothing and rethrows the same error', async (s) => {
        await s.createJobs([newJob('j0')])
        const boom = new Error('boom')
        await expect(
          s.transaction(async (tx) => {
            await tx.createJobs([newJob('j1')])
            await tx.addCollectorItems('c', [item('a', 1)])
            await tx.updateJob('j0', { states: ['pending'] }, { state: 'running' })
            await tx.upsertAttempt({ jobId: 'j0', attempt: 1, outcome: 'running' })
            await tx.setCursor('c', '2')
            await tx.setMeta('k', 'v')
            await tx.recordBlocks([block(1, '0x1')])
            await tx.recordEvent(event(1, 'alert', null))
            expect(await tx.getJob('j1')).toBeDefined()
            throw boom
          }),
        ).rejects.toBe(boom)
        expect(await s.getJob('j1')).toBeUndefined()
        expect((await s.getJob('j0'))!.state).toBe('pending')
        expect(await s.listOpenCollectorItems('c')).toEqual([])
        expect(await s.listAttempts('j0')).toEqual([])
        expect(await s.getCursor('c')).toBeUndefined()
        expect(await s.getMeta('k')).toBeUndefined()
        expect(await s.blockStats()).toBeUndefined()
        expect(await s.listEvents()).toEqual([])
      })

      test('behavior: a nested transaction joins the outer one, so an outer throw undoes the inner writes', async (s) => {
        await expect(
          s.transaction(async (tx) => {
            const inner = await tx.transaction(async (tx2) => {
              await tx2.createJobs([newJob('j1')])
              return 'inner'
            })
            expect(inner).toBe('inner')
            throw new Error('outer')
          }),
        ).rejects.toThrow('outer')
        expect(await s.getJob('j1')).toBeUndefined()
      })

      test('behavior: a refused consume inside a transaction undoes the job created with it', async (s) => {
        await s.addCollectorItems('c', [item('a', 1)])
        await s.consumeCollectorItems('c', ['a'], 'other')
        await expect(
          s.transaction(async (tx) => {
            await tx.createJobs([newJob('j1')])
            await tx.consumeCollectorItems('c', ['a'], 'j1')
          }),
        ).rejects.toBeInstanceOf(StateError)
        expect(await s.getJob('j1')).toBeUndefined()
      })

      test('behavior: a failed compare-and-set inside a transaction does not abort it', async (s) => {
        await s.createJobs([newJob('j1')])
        await s.transaction(async (tx) => {
          expect(await tx.updateJob('j1', { states: ['running'] }, { state: 'succeeded' })).toBeUndefined()
          expect(await tx.updateJob('j1', { states: ['pending'] }, { state: 'running' })).toBeDefined()
        })
        expect((await s.getJob('j1'))!.state).toBe('running')
      })
    })

    describe('attempts', () => {
      test('behavior: upsertAttempt inserts, then updates only the fields given, and null clears', async (s) => {
        await s.createJobs([newJob('j1')])
        await s.upsertAttempt({ jobId: 'j1', attempt: 1, workerId: 'w1', startedAt: 1000, outcome: 'running' })
        await s.upsertAttempt({ jobId: 'j1', attempt: 1, outcome: 'failed', failureClass: 'transient', error: 'exit 1', stderrTail: 'oops', endedAt: 3000, durationMs: 2000 })
        expect(await s.listAttempts('j1')).toEqual([
          { jobId: 'j1', attempt: 1, workerId: 'w1', startedAt: 1000, endedAt: 3000, outcome: 'failed', failureClass: 'transient', error: 'exit 1', stderrTail: 'oops', durationMs: 2000 },
        ])
        await s.upsertAttempt({ jobId: 'j1', attempt: 1, error: null, stderrTail: null })
        expect(await s.listAttempts('j1')).toMatchObject([{ workerId: 'w1', outcome: 'failed', error: null, stderrTail: null, durationMs: 2000 }])
      })

      test('behavior: an attempt first stored without an outcome is running, with unknown fields null', async (s) => {
        await s.upsertAttempt({ jobId: 'j1', attempt: 1 })
        expect(await s.listAttempts('j1')).toEqual([
          { jobId: 'j1', attempt: 1, workerId: null, startedAt: null, endedAt: null, outcome: 'running', failureClass: null, error: null, stderrTail: null, durationMs: null },
        ])
      })

      test('behavior: listAttempts returns one job’s attempts in attempt order', async (s) => {
        await s.upsertAttempt({ jobId: 'j1', attempt: 2, outcome: 'running' })
        await s.upsertAttempt({ jobId: 'j1', attempt: 1, outcome: 'stale' })
        await s.upsertAttempt({ jobId: 'j2', attempt: 1, outcome: 'succeeded' })
        expect((await s.listAttempts('j1')).map((a) => [a.attempt, a.outcome])).toEqual([
          [1, 'stale'],
          [2, 'running'],
        ])
        expect(await s.listAttempts('nope')).toEqual([])
      })
    })

    describe('blocks, events, meta', () => {
      test('behavior: blockStats is undefined without blocks, then gives count, min and max', async (s) => {
        expect(await s.blockStats()).toBeUndefined()
        await s.recordBlocks([block(5, '0x5'), block(3, '0x3'), block(2 ** 40, '0xbig')])
        expect(await s.blockStats()).toEqual({ count: 3, min: 3, max: 2 ** 40 })
        await s.recordBlocks([])
        expect(await s.blockStats()).toEqual({ count: 3, min: 3, max: 2 ** 40 })
      })

      test('behavior: latestBlock is undefined without blocks, then the highest number recorded', async (s) => {
        expect(await s.latestBlock()).toBeUndefined()
        await s.recordBlocks([block(5, '0x5'), block(3, '0x3')])
        expect(await s.latestBlock()).toBe(5)
        await s.recordBlocks([block(2 ** 40, '0xbig'), block(4, '0x4')])
        expect(await s.latestBlock()).toBe(2 ** 40)
      })

      test('behavior: listBlocks gives the blocks of a range in order, field for field, limited from the lowest', async (s) => {
        expect(await s.listBlocks({ from: 0, to: 100 })).toEqual([])
        await s.recordBlocks([block(7, '0x7'), block(3, '0x3'), block(5, '0x5'), block(9, '0x9')])
        expect(await s.listBlocks({ from: 4, to: 8 })).toEqual([block(5, '0x5'), block(7, '0x7')])
        expect((await s.listBlocks({ from: 0, to: 100, limit: 2 })).map((b) => b.number)).toEqual([3, 5])
        expect(await s.listBlocks({ from: 10, to: 100 })).toEqual([])
      })

      test('behavior: recording a block number again (a reorg) replaces its row rather than adding one', async (s) => {
        await s.recordBlocks([block(1, '0x1'), block(2, '0x2'), block(3, '0x3')])
        await s.recordBlocks([block(2, '0x2b'), block(3, '0x3'), block(3, '0x3c'), block(4, '0x4')])
        expect(await s.blockStats()).toEqual({ count: 4, min: 1, max: 4 })
      })

      test('behavior: events are listed newest first, filtered by kind and job, and limited', async (s) => {
        expect(await s.listEvents()).toEqual([])
        await s.recordEvent(event(100, 'retry', 'j1'))
        await s.recordEvent(event(300, 'dead-letter', 'j1', 'gave up'))
        await s.recordEvent(event(200, 'alert', null))
        await s.recordEvent(event(400, 'retry', 'j2'))
        expect((await s.listEvents()).map((e) => e.at)).toEqual([400, 300, 200, 100])
        expect(await s.listEvents({ kind: 'dead-letter' })).toEqual([event(300, 'dead-letter', 'j1', 'gave up')])
        expect((await s.listEvents({ jobId: 'j1' })).map((e) => e.at)).toEqual([300, 100])
        expect((await s.listEvents({ kind: 'retry', jobId: 'j1' })).map((e) => e.at)).toEqual([100])
        expect((await s.listEvents({ limit: 2 })).map((e) => e.at)).toEqual([400, 300])
        expect((await s.listEvents({ kind: 'alert' }))[0]).toEqual(event(200, 'alert', null))
      })

      test('behavior: meta reads back the last value set and is undefined before', async (s) => {
        expect(await s.getMeta('program')).toBeUndefined()
        await s.setMeta('program', 'v1')
        await s.setMeta('program', 'v2')
        await s.setMeta('other', '')
        expect(await s.getMeta('program')).toBe('v2')
        expect(await s.getMeta('other')).toBe('')
      })
    })
  })
}

/** Opens a fresh store whose writes are fenced by a leadership this test holds, and a way to lose it. */
export type OpenFencedStateStore = () => Promise<{
  store: StateStore
  /** Another holder takes over the leadership the store's fence belongs to (a new epoch). */
  takeOver: () => Promise<void>
  cleanup: () => Promise<void>
}>

/**
 * Registers the fencing tests of a StateStore adapter that supports a leader's fence: with a
 * valid fence it behaves as usual (run {@link stateStoreConformance} on it too); once another
 * holder took over, every write is refused with `STATE_FENCED` (not retryable) and changes
 * nothing, while reads keep working.
 */
export function fencedStateStoreConformance(name: string, open: OpenFencedStateStore): void {
  type Opened = Awaited<ReturnType<OpenFencedStateStore>>
  const test = (title: string, fn: (o: Opened) => Promise<void>): void => {
    it(title, async () => {
      const opened = await open()
      try {
        await fn(opened)
      } finally {
        await opened.cleanup()
      }
    })
  }
  const fenced = { name: 'StateError', code: 'STATE_FENCED', retryable: false }

  /** Everything the store can read back, to check that a refused write changed nothing. */
  async function snapshot(s: StateStore): Promise<unknown> {
    return {
      jobs: await s.listJobs(),
      attempts: await s.listAttempts('j1'),
      open: await s.listOpenCollectorItems('c'),
      cursor: await s.getCursor('c'),
      meta: await s.getMeta('k'),
      blocks: await s.blockStats(),
      events: await s.listEvents(),
      counts: await s.countJobs(),
    }
  }

  describe(`StateStore fencing: ${name}`, () => {
    test('behavior: with a valid fence every write method works', async ({ store: s }) => {
      await s.addCollectorItems('c', [item('a', 1), item('b', 2)])
      await s.createJobs([newJob('j1')])
      await s.consumeCollectorItems('c', ['a'], 'j1')
      await s.setCursor('c', '2')
      await s.updateJob('j1', { states: ['pending'] }, { state: 'running' })
      await s.upsertAttempt({ jobId: 'j1', attempt: 1, outcome: 'running' })
      await s.recordBlocks([block(1, '0x1')])
      await s.recordEvent(event(1, 'alert', null))
      await s.setMeta('k', 'v')
      expect(await s.transaction(async (tx) => (await tx.getJob('j1'))?.state)).toBe('running')
      expect(await snapshot(s)).toMatchObject({ cursor: '2', meta: 'v', blocks: { count: 1 }, open: [{ id: 'b' }] })
    })

    test('behavior: after a takeover every write is refused with STATE_FENCED and changes nothing; reads still work', async ({ store: s, takeOver }) => {
      await s.addCollectorItems('c', [item('a', 1), item('b', 2)])
      await s.createJobs([newJob('j1')])
      await s.upsertAttempt({ jobId: 'j1', attempt: 1, outcome: 'running' })
      await s.setMeta('k', 'v')
      const before = await snapshot(s)
      await takeOver()
      const writes: [string, () => Promise<unknown>][] = [
        ['addCollectorItems', () => s.addCollectorItems('c', [item('z', 9)])],
        ['consumeCollectorItems', () => s.consumeCollectorItems('c', ['a'], 'j1')],
        ['setCursor', () => s.setCursor('c', '9')],
        ['createJobs', () => s.createJobs([newJob('j2')])],
        ['updateJob', () => s.updateJob('j1', { states: ['pending'] }, { state: 'running' })],
        ['markDispatched', () => s.markDispatched([{ id: 'j1', attempt: 1 }])],
        ['upsertAttempt', () => s.upsertAttempt({ jobId: 'j1', attempt: 1, outcome: 'failed' })],
        ['recordBlocks', () => s.recordBlocks([block(1, '0x1')])],
        ['recordEvent', () => s.recordEvent(event(1, 'alert', null))],
        ['setMeta', () => s.setMeta('k', 'stale')],
      ]
      for (const [method, write] of writes) {
        const err = await write().then(
          () => undefined,
          (e: unknown) => e,
        )
        expect(err, method).toBeInstanceOf(StateError)
        expect(err, method).toMatchObject(fenced)
      }
      expect(await snapshot(s)).toEqual(before)
    })

    test('behavior: a transaction begun after a takeover is refused before its callback runs', async ({ store: s, takeOver }) => {
      await takeOver()
      let ran = false
      await expect(
        s.transaction(async (tx) => {
          ran = true
          await tx.setMeta('k', 'stale')
        }),
      ).rejects.toMatchObject(fenced)
      expect(ran).toBe(false)
      expect(await s.getMeta('k')).toBeUndefined()
    })
  })
}
