import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { loadConfig, parseConfig } from '../../config/load.js'
import { ConfigError, ExecutorError } from '../../core/errors.js'
import { createExecutor } from '../../wiring.js'
import { jobId } from '../../core/ids.js'
import { mockExecutor } from '../mock/mock-executor.js'
import { DetachReason, type ExecuteRequest, type ExecuteResult, type Executor, type ExecutorObservation } from '../types.js'
import { shadowExecutor, type ShadowExecutorOptions } from './shadow-executor.js'

const hash = (n: number): `0x${string}` => `0x${n.toString(16).padStart(64, '0')}`

function request(first: number, last: number, observations: ExecutorObservation[] = []): ExecuteRequest {
  const inputs = []
  for (let n = first; n <= last; n++) inputs.push({ id: `b${n}`, data: { number: n, hash: hash(n), parentHash: hash(n - 1), cost: 1 } })
  return {
    job: { id: jobId({ stage: 'range', first, last, lastHash: hash(last), programId: 'mock-v1' }), stage: 'range', attempt: 1, first, last, lastHash: hash(last), programId: 'mock-v1' },
    inputs,
    signal: new AbortController().signal,
    onObservation: (o) => observations.push(o),
  }
}

/** An executor whose attempts finish only when the test says so (or when aborted). */
function controlled(kind = 'controlled'): Executor & { release(result?: ExecuteResult): void; fail(err: unknown): void; started: number; aborted: unknown[] } {
  let pending: { resolve: (r: ExecuteResult) => void; reject: (e: unknown) => void }[] = []
  const self = {
    kind,
    started: 0,
    aborted: [] as unknown[],
    execute(req: ExecuteRequest): Promise<ExecuteResult> {
      self.started++
      return new Promise<ExecuteResult>((resolve, reject) => {
        pending.push({ resolve, reject })
        req.signal.addEventListener('abort', () => {
          self.aborted.push(req.signal.reason)
          reject(new ExecutorError('transient', 'aborted', { aborted: true }))
        })
      })
    },
    release(result: ExecuteResult = { output: { commitment: 'x' }, durationMs: 1 }) {
      for (const p of pending) p.resolve(result)
      pending = []
    },
    fail(err: unknown) {
      for (const p of pending) p.reject(err)
      pending = []
    },
    close: () => Promise.resolve(),
  }
  return self
}

async function until(cond: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting')
    await new Promise((r) => setTimeout(r, 5))
  }
}

describe('shadowExecutor', () => {
  const executors: Executor[] = []
  afterEach(async () => {
    for (const e of executors.splice(0)) await e.close()
  })
  const make = (opts: ShadowExecutorOptions): Executor => {
    const ex = shadowExecutor(opts)
    executors.push(ex)
    return ex
  }

  it('behavior: a disagreeing shadow never changes the primary result, and its disagreement is observed with both latencies', async () => {
    const alone = await mockExecutor({ seed: 1 }).execute(request(1, 4))
    const obs: ExecutorObservation[] = []
    const ex = make({ primary: mockExecutor({ seed: 1 }), shadow: mockExecutor({ seed: 1, hostileRate: 1 }), cost: { primaryPerHour: 3600, shadowPerHour: 7200 } })
    const out = await ex.execute(request(1, 4, obs))
    expect(out.output).toEqual(alone.output)
    await until(() => obs.length === 1)
    const o = obs[0] as ExecutorObservation
    expect(o.kind).toBe('shadow')
    expect(o.message).toMatch(/DISAGREES on commitment.*the primary result stands/)
    expect(o.details).toMatchObject({ agreement: 'disagree', primary: { executor: 'mock', ok: true }, shadow: { executor: 'mock', ok: true } })
    expect((o.details.mismatches as { field: string }[]).map((m) => m.field)).toEqual(['commitment'])
    const d = o.details as { primary: { durationMs: number; cost: number }; shadow: { durationMs: number; cost: number } }
    expect(d.primary.cost).toBeCloseTo(d.primary.durationMs / 1000, 6)
    expect(d.shadow.cost).toBeCloseTo((2 * d.shadow.durationMs) / 1000, 6)
  })

  it('behavior: an agreeing shadow is recorded as agreement; hex fields compare without 0x and case', async () => {
    const obs: ExecutorObservation[] = []
    const zkvmLike: Executor = {
      kind: 'zkvm',
      async execute(req) {
        const r = await mockExecutor({ seed: 1 }).execute(req)
        return { ...r, output: { ...r.output, commitment: `0x${String(r.output.commitment).toUpperCase()}`, vm: 'sp1', vkey: '0xabc' } }
      },
      close: () => Promise.resolve(),
    }
    const ex = make({ primary: mockExecutor({ seed: 1 }), shadow: zkvmLike })
    await ex.execute(request(5, 6, obs))
    await until(() => obs.length === 1)
    expect(obs[0]?.details).toMatchObject({ agreement: 'agree', compared: ['commitment', 'first', 'last', 'lastHash', 'program'] })
  })

  it('behavior: the primary result is returned while the shadow still runs; a hanging shadow is cut off by its own deadline and only recorded', async () => {
    const obs: ExecutorObservation[] = []
    const hang = controlled('hanging')
    const ex = make({ primary: mockExecutor({ seed: 1 }), shadow: hang, shadowTimeoutMs: 300 })
    const out = await ex.execute(request(1, 2, obs))
    expect(out.output.first).toBe(1)
    await until(() => hang.started === 1)
    expect(obs).toEqual([]) // the shadow had not finished when the primary's result came back
    await until(() => obs.length === 1)
    expect(obs[0]?.details).toMatchObject({ agreement: 'shadow-failed', shadow: { ok: false, timedOut: true } })
  })

  it('behavior: a failing or synchronously throwing shadow does not fail the primary', async () => {
    const obs: ExecutorObservation[] = []
    const failing = make({ primary: mockExecutor(), shadow: mockExecutor({ failureRate: 1 }) })
    expect((await failing.execute(request(1, 2, obs))).output.last).toBe(2)
    const throwing: Executor = {
      kind: 'broken',
      execute: () => {
        throw new Error('boom at start')
      },
      close: () => Promise.resolve(),
    }
    const ex = make({ primary: mockExecutor(), shadow: throwing })
    expect((await ex.execute(request(3, 4, obs))).output.last).toBe(4)
    await until(() => obs.length === 2)
    expect(obs.map((o) => o.details.agreement)).toEqual(['shadow-failed', 'shadow-failed'])
    expect(obs[1]?.message).toMatch(/boom at start/)
  })

  it('behavior: a failing primary fails exactly as it would alone (same error), and the shadow outcome is still recorded', async () => {
    const obs: ExecutorObservation[] = []
    const primary = controlled('primary')
    const ex = make({ primary, shadow: mockExecutor() })
    const err = new ExecutorError('too-big', 'split me')
    const running = ex.execute(request(1, 4, obs))
    await until(() => primary.started === 1)
    primary.fail(err)
    await expect(running).rejects.toBe(err)
    await until(() => obs.length === 1)
    expect(obs[0]?.details).toMatchObject({ agreement: 'primary-failed', primary: { ok: false, failureClass: 'too-big' }, shadow: { ok: true } })
  })

  it('behavior: the primary is started before the shadow, and the shadow works on its own copy of the inputs and job', async () => {
    const order: string[] = []
    const seen: unknown[] = []
    const primary: Executor = {
      kind: 'p',
      async execute(req) {
        order.push('primary')
        await new Promise((r) => setTimeout(r, 30))
        seen.push(JSON.parse(JSON.stringify(req.inputs)))
        return { output: { v: 1 }, durationMs: 30 }
      },
      close: () => Promise.resolve(),
    }
    const vandal: Executor = {
      kind: 'vandal',
      execute(req) {
        order.push('shadow')
        ;(req.inputs[0] as { data: { hash: string } }).data.hash = 'vandalised'
        req.job.first = -1
        return Promise.resolve({ output: { v: 1 }, durationMs: 0 })
      },
      close: () => Promise.resolve(),
    }
    const req = request(1, 2)
    const before = JSON.parse(JSON.stringify({ job: req.job, inputs: req.inputs })) as unknown
    await make({ primary, shadow: vandal }).execute(req)
    expect(order).toEqual(['primary', 'shadow'])
    expect({ job: req.job, inputs: req.inputs }).toEqual(before)
    expect(seen[0]).toEqual((before as { inputs: unknown }).inputs)
  })

  it('behavior: beyond maxInFlight shadow runs, jobs are not shadowed (recorded as skipped), never queued behind the primary', async () => {
    const obs: ExecutorObservation[] = []
    const hang = controlled('slow')
    const ex = make({ primary: mockExecutor(), shadow: hang, maxInFlight: 1 })
    await ex.execute(request(1, 2, obs))
    await until(() => hang.started === 1)
    await ex.execute(request(3, 4, obs))
    expect(obs.map((o) => o.details.agreement)).toEqual(['skipped'])
    expect(obs[0]?.message).toMatch(/maxInFlight 1/)
    hang.release()
    await until(() => obs.length === 2)
    expect(hang.started).toBe(1)
  })

  it('behavior: close() stops running shadows as a detach (a remote shadow keeps its request), then closes both sides', async () => {
    const obs: ExecutorObservation[] = []
    const hang = controlled('remote')
    let closed = 0
    const primary = mockExecutor()
    const ex = shadowExecutor({ primary: { ...primary, kind: 'mock', execute: (r) => primary.execute(r), close: () => Promise.resolve(void closed++) }, shadow: { ...hang, close: () => Promise.resolve(void closed++) } })
    await ex.execute(request(1, 2, obs))
    await until(() => hang.started === 1)
    await ex.close()
    expect(hang.aborted[0]).toBeInstanceOf(DetachReason)
    expect(closed).toBe(2)
    expect(obs[0]?.details.agreement).toBe('shadow-failed')
  })

  it('behavior: named compare fields are the only ones compared', async () => {
    const obs: ExecutorObservation[] = []
    const other: Executor = {
      kind: 'other',
      async execute(req) {
        const r = await mockExecutor().execute(req)
        return { ...r, output: { ...r.output, program: 'another-backend', extra: { nested: 1 } } }
      },
      close: () => Promise.resolve(),
    }
    await make({ primary: mockExecutor(), shadow: other, compare: ['commitment', 'first', 'last'] }).execute(request(1, 2, obs))
    await make({ primary: mockExecutor(), shadow: other }).execute(request(1, 2, obs))
    await until(() => obs.length === 2)
    expect(obs.map((o) => o.details.agreement).sort()).toEqual(['agree', 'disagree'])
  })
})

describe('shadow executor config', () => {
  it('behavior: examples/shadow.yaml builds through createExecutor; its zkVM shadow agrees with the process primary on the statement', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'proofline-shadow-example-'))
    try {
      const config = await loadConfig(fileURLToPath(new URL('../../../examples/shadow.yaml', import.meta.url)), { env: { PROOFLINE_DATA_DIR: dir } })
      const range = config.stages[0]
      if (range?.executor.type !== 'shadow') throw new Error('expected a shadow executor')
      // Paths inside both sides resolve against the config file's folder.
      expect(range.executor.primary.type === 'process' && range.executor.primary.command[1]?.endsWith('examples/mock-prover.mjs')).toBe(true)
      expect(range.executor.shadow.type === 'zkvm' && range.executor.shadow.program.elf?.endsWith('examples/zkvm/range.elf')).toBe(true)
      const ex = createExecutor(config, range, 'shadow-example-test')
      const obs: ExecutorObservation[] = []
      try {
        const req = request(1, 3, obs)
        req.job = { ...req.job, programId: range.programId }
        const out = await ex.execute(req)
        expect(out.output.program).toBe('sp1-range-standin')
        await until(() => obs.length === 1, 20_000)
        expect(obs[0]?.details).toMatchObject({ agreement: 'agree', compared: ['commitment', 'first', 'last', 'lastHash'], primary: { executor: 'process' }, shadow: { executor: 'zkvm' } })
      } finally {
        await ex.close()
      }
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('behavior: a shadow inside a shadow is refused, with the key named', () => {
    const text = `
version: 1
source: { type: synthetic }
stages:
  - name: range
    input: blocks
    collector: { strategy: sequential, maxCount: 4 }
    executor: { type: shadow, primary: { type: mock }, shadow: { type: shadow, primary: { type: mock }, shadow: { type: mock } } }
`
    expect(() => parseConfig(text, '/x/p.yaml')).toThrow(ConfigError)
    expect(() => parseConfig(text, '/x/p.yaml')).toThrow(/stages\[0\]\.executor\.shadow/)
  })
})
