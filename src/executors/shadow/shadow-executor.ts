import type { Logger } from 'pino'
import { ExecutorError, errorMessage, type FailureClass } from '../../core/errors.js'
import { canonicalJson } from '../../core/ids.js'
import { DetachReason, type ExecuteRequest, type ExecuteResult, type Executor, type ExecutorObservation } from '../types.js'
import { parseSelector, select, type Selector } from '../zkvm/selectors.js'

/** Options of `shadowExecutor`. */
export interface ShadowExecutorOptions {
  /** The executor whose result counts. */
  primary: Executor
  /** The executor on trial: it runs on the same jobs, and nothing it does reaches the result. */
  shadow: Executor
  /**
   * Output fields compared (selectors, e.g. `commitment`, `publicValues`). Empty: every field
   * present in either output, except `ignore`.
   * @default []
   */
  compare?: string[]
  /** Fields left out when `compare` is empty (backend-specific ones). @default ['vm', 'vkey', 'publicValues', 'cycles'] */
  ignore?: string[]
  /** A shadow run still going this long after it started is aborted and recorded as failed. @default 3_600_000 */
  shadowTimeoutMs?: number
  /** Shadow runs at once; a job arriving while this many run is not shadowed (recorded as `skipped`). @default 2 */
  maxInFlight?: number
  /** Cost per hour of each side, used when an executor reports no `cost` of its own. @default none */
  cost?: { primaryPerHour?: number; shadowPerHour?: number }
  log?: Logger
}

/** How one side of a shadowed attempt went. */
interface Side {
  executor: string
  ok: boolean
  durationMs: number
  cost?: number
  failureClass?: FailureClass
  error?: string
  timedOut?: boolean
  output?: Record<string, unknown>
}

type Agreement = 'agree' | 'disagree' | 'primary-failed' | 'shadow-failed' | 'both-failed' | 'skipped'

const DEFAULT_IGNORE = ['vm', 'vkey', 'publicValues', 'cycles']
const HEX = /^(0x)?[0-9a-fA-F]+$/

/** Hex strings compare without `0x` and case: backends differ in how they print the same bytes. */
function normalize(v: unknown): unknown {
  if (typeof v === 'string' && HEX.test(v) && v.length >= 2) return v.replace(/^0x/, '').toLowerCase()
  if (Array.isArray(v)) return v.map(normalize)
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, normalize(x)]))
  return v
}

const brief = (v: unknown): string => {
  const text = v === undefined ? 'undefined' : canonicalJson(v)
  return text.length > 200 ? `${text.slice(0, 197)}...` : text
}

/**
 * Runs a second executor on the same jobs as the primary and records, per attempt, whether their
 * public outputs agree, with both latencies and costs — without ever affecting the primary: the
 * primary's result (or error) is returned the moment it is ready, untouched; the shadow starts
 * after the primary, on a copy of the inputs, without the lease heartbeat, under its own deadline
 * and concurrency cap; its failures, hangs and disagreements only become an observation
 * (`req.onObservation`, recorded by the orchestrator as a `shadow` event of the job).
 */
export function shadowExecutor(opts: ShadowExecutorOptions): Executor {
  const shadowTimeoutMs = opts.shadowTimeoutMs ?? 3_600_000
  const maxInFlight = opts.maxInFlight ?? 2
  const compare: Selector[] = (opts.compare ?? []).map((f) => parseSelector(f, `shadow executor: compare ${f}`))
  const ignore = new Set(opts.ignore ?? DEFAULT_IGNORE)
  const closing = new AbortController()
  const running = new Set<Promise<unknown>>()
  let inFlight = 0
  const log = opts.log?.child({ part: 'shadow-executor' })

  function costOf(r: ExecuteResult | undefined, ms: number, perHour: number | undefined): number | undefined {
    if (r?.cost !== undefined) return r.cost
    return perHour === undefined ? undefined : (ms / 3_600_000) * perHour
  }

  function side(executor: Executor, outcome: { ok: true; result: ExecuteResult } | { ok: false; err: unknown }, ms: number, perHour: number | undefined, timedOut = false): Side {
    const s: Side = { executor: executor.kind, ok: outcome.ok, durationMs: Math.round(ms) }
    const cost = costOf(outcome.ok ? outcome.result : undefined, s.durationMs, perHour)
    if (cost !== undefined) s.cost = cost
    if (outcome.ok) s.output = outcome.result.output
    else {
      s.failureClass = outcome.err instanceof ExecutorError ? outcome.err.failureClass : 'transient'
      s.error = errorMessage(outcome.err).slice(0, 300)
      if (timedOut) s.timedOut = true
    }
    return s
  }

  function verdict(p: Side, s: Side | undefined): { agreement: Agreement; compared: string[]; mismatches: { field: string; primary: string; shadow: string }[] } {
    if (s === undefined) return { agreement: 'skipped', compared: [], mismatches: [] }
    if (!p.ok || !s.ok) return { agreement: !p.ok && !s.ok ? 'both-failed' : !p.ok ? 'primary-failed' : 'shadow-failed', compared: [], mismatches: [] }
    const a = p.output ?? {}
    const b = s.output ?? {}
    // Named fields (selectors), or every top-level field either side has, minus `ignore`.
    const fields: { name: string; get: (o: Record<string, unknown>) => unknown }[] =
      compare.length > 0
        ? compare.map((sel) => ({ name: sel.text, get: (o) => select(o, sel) }))
        : [...new Set([...Object.keys(a), ...Object.keys(b)])]
            .filter((k) => !ignore.has(k))
            .sort()
            .map((k) => ({ name: k, get: (o) => o[k] }))
    const mismatches: { field: string; primary: string; shadow: string }[] = []
    for (const f of fields) {
      const va = f.get(a)
      const vb = f.get(b)
      if (canonicalJson(normalize(va) ?? null) !== canonicalJson(normalize(vb) ?? null)) mismatches.push({ field: f.name, primary: brief(va), shadow: brief(vb) })
    }
    return { agreement: mismatches.length === 0 ? 'agree' : 'disagree', compared: fields.map((f) => f.name), mismatches: mismatches.slice(0, 10) }
  }

  function report(req: ExecuteRequest, p: Side, s: Side | undefined, skippedWhy?: string): void {
    const v = verdict(p, s)
    const lat = `primary ${p.durationMs} ms${s === undefined ? '' : `, shadow ${s.durationMs} ms`}`
    const message =
      v.agreement === 'agree'
        ? `shadow ${s?.executor ?? ''} agrees on ${v.compared.length} output fields (${lat})`
        : v.agreement === 'disagree'
          ? `shadow ${s?.executor ?? ''} DISAGREES on ${v.mismatches.map((m) => m.field).join(', ')} (${lat}); the primary result stands`
          : v.agreement === 'skipped'
            ? `shadow skipped: ${skippedWhy ?? ''}`
            : v.agreement === 'shadow-failed'
              ? `shadow ${s?.executor ?? ''} failed (${s?.failureClass ?? ''}${s?.timedOut === true ? ', timed out' : ''}): ${s?.error ?? ''}`
              : v.agreement === 'primary-failed'
                ? `primary failed (${p.failureClass ?? ''}); shadow ${s?.executor ?? ''} succeeded (${lat})`
                : `both failed: primary ${p.failureClass ?? ''}, shadow ${s?.failureClass ?? ''}`
    const strip = (x: Side): Omit<Side, 'output'> => {
      const { output: _o, ...rest } = x
      return rest
    }
    const observation: ExecutorObservation = {
      kind: 'shadow',
      message,
      details: {
        agreement: v.agreement,
        compared: v.compared,
        ...(v.mismatches.length > 0 ? { mismatches: v.mismatches } : {}),
        primary: strip(p),
        ...(s === undefined ? {} : { shadow: strip(s) }),
      },
    }
    if (v.agreement === 'disagree') log?.warn({ job: req.job.id, attempt: req.job.attempt, mismatches: v.mismatches }, 'shadow disagrees with the primary')
    try {
      req.onObservation?.(observation)
    } catch (err) {
      log?.warn({ job: req.job.id, err: errorMessage(err) }, 'shadow observation could not be reported')
    }
  }

  /** Runs the shadow on a copy of the job; never throws. */
  async function runShadow(req: ExecuteRequest): Promise<Side> {
    const ctl = new AbortController()
    const onClose = (): void => ctl.abort(closing.signal.reason)
    closing.signal.addEventListener('abort', onClose, { once: true })
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      ctl.abort(new Error(`shadow ran past shadowTimeoutMs ${shadowTimeoutMs}`))
    }, shadowTimeoutMs)
    const started = performance.now()
    try {
      // A copy: nothing the shadow does to its inputs can reach the primary's.
      const copy: ExecuteRequest = { job: { ...req.job }, inputs: structuredClone(req.inputs), signal: ctl.signal }
      const result = await opts.shadow.execute(copy)
      return side(opts.shadow, { ok: true, result }, performance.now() - started, opts.cost?.shadowPerHour)
    } catch (err) {
      return side(opts.shadow, { ok: false, err }, performance.now() - started, opts.cost?.shadowPerHour, timedOut)
    } finally {
      clearTimeout(timer)
      closing.signal.removeEventListener('abort', onClose)
    }
  }

  async function execute(req: ExecuteRequest): Promise<ExecuteResult> {
    const started = performance.now()
    // The primary first, exactly as if it ran alone.
    const primary = opts.primary.execute(req)
    let shadow: Promise<Side> | undefined
    let skippedWhy: string | undefined
    if (closing.signal.aborted) skippedWhy = 'the executor is closing'
    else if (inFlight >= maxInFlight) skippedWhy = `${inFlight} shadow runs already in flight (maxInFlight ${maxInFlight})`
    else {
      inFlight++
      // Started on a later turn of the event loop, so even its synchronous start-up cannot delay the primary's.
      shadow = new Promise<void>((r) => setImmediate(r)).then(() => runShadow(req))
      const done = shadow.finally(() => {
        inFlight--
      })
      running.add(done)
      void done.finally(() => running.delete(done))
    }
    const settle = (outcome: { ok: true; result: ExecuteResult } | { ok: false; err: unknown }): void => {
      const p = side(opts.primary, outcome, performance.now() - started, opts.cost?.primaryPerHour)
      if (shadow === undefined) {
        report(req, p, undefined, skippedWhy)
        return
      }
      const tracked = shadow.then((s) => report(req, p, s))
      running.add(tracked)
      void tracked.finally(() => running.delete(tracked))
    }
    // The primary's outcome is returned as is, the moment it is ready; the comparison happens later.
    return primary.then(
      (result) => {
        settle({ ok: true, result })
        return result
      },
      (err: unknown) => {
        settle({ ok: false, err })
        throw err
      },
    )
  }

  return {
    kind: 'shadow',
    execute,
    async close() {
      // Shadow runs stop as on a shutdown: a remote shadow (http) keeps its request to resume.
      closing.abort(new DetachReason('shadow executor closing'))
      await Promise.allSettled([...running])
      await Promise.allSettled([opts.primary.close(), opts.shadow.close()])
    },
  }
}
