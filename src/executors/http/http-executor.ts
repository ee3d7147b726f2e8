import type { Logger } from 'pino'
import type { ArtifactStore, RecordStore } from '../../artifacts/types.js'
import { ConfigError, ExecutorError, errorMessage, type FailureClass } from '../../core/errors.js'
import { sha256Hex } from '../../core/ids.js'
import type { ArtifactRef } from '../../core/types.js'
import { inputDocument } from '../process/protocol.js'
import { isDetach, type ExecuteRequest, type ExecuteResult, type Executor } from '../types.js'
import {
  HTTP_PROTOCOL,
  ProtocolViolation,
  type StatusDocument,
  type SubmitBody,
  checkResultResponse,
  checkStatusResponse,
  checkSubmitResponse,
  parseErrorBody,
  parseJsonBody,
  remoteFailureClass,
} from './protocol.js'

/** Options of `httpExecutor`. */
export interface HttpExecutorOptions {
  /** Base URL of the prover service, e.g. `https://prover.partner.example/api`; paths `v1/proofs…` are appended. */
  url: string
  /** Bearer token sent as `Authorization: Bearer …`. Never logged, never put into errors. */
  token?: string
  /** Where referenced inputs are read from (when inlined) and where the returned proof is stored. */
  artifacts: ArtifactStore
  /**
   * Where the remote request id of each job is persisted before waiting, so a restarted or
   * different dispatcher resumes the request instead of paying for a new one. Must be reachable
   * by every dispatcher of the stage (wiring uses the artifact store's location).
   */
  records: RecordStore
  /**
   * Overall deadline of one remote request, counted from its submission (also across restarts
   * that resume it). Past it the request is cancelled remotely and the attempt fails `timeout`.
   */
  timeoutMs: number
  /** Deadline of each HTTP call (submit, poll, result, cancel). @default 30000 */
  requestTimeoutMs?: number
  /** First delay between status polls; grows ×1.5 per poll. @default 2000 */
  pollIntervalMs?: number
  /** Largest delay between status polls. @default 30000 */
  maxPollIntervalMs?: number
  /**
   * Consecutive failed polls (network error, call timeout, 5xx, malformed answer) before the
   * attempt fails `transient`. The request id stays recorded, so the retry resumes it.
   * @default 5
   */
  maxPollErrors?: number
  /** Extra tries of a submit that got no answer or a 5xx/429 (same idempotency key). @default 2 */
  submitRetries?: number
  /** Interval of `onHeartbeat` calls while the attempt waits. @default 5000 */
  heartbeatMs?: number
  /**
   * Send the artifacts the inputs reference (`data.trace`, `data.proof`) inside the submit body,
   * for services that cannot reach the artifact store.
   * @default true
   */
  inlineArtifacts?: boolean
  /** Largest submit body; a bigger job fails `too-big` (split). @default 67_108_864 (64 MiB) */
  maxRequestBytes?: number
  /** Largest response body accepted (a result with its proof). @default 67_108_864 (64 MiB) */
  maxResponseBytes?: number
  /** Allow sending the token over plain `http://` to a host that is not loopback. @default false */
  allowInsecureHttp?: boolean
  log?: Logger
}

/** What is persisted per job in the record store (`http/<sha256(url, job id, program)>`). */
interface RequestRecord {
  v: 1
  protocol: typeof HTTP_PROTOCOL
  url: string
  jobId: string
  programId: string
  stage: string
  /** The attempt that submitted it, or (state `succeeded`) that received its result. */
  attempt: number
  requestId: string
  submittedAt: number
  state: 'submitted' | 'succeeded'
}

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]', '::1'])

/** Thrown inside an attempt when its signal aborted; turned into the right error by `execute`. */
class Aborted extends Error {}

/** A transport-level failure of one call: no HTTP answer (network error or call timeout). */
class NoAnswer extends Error {}

/** A response body over `maxResponseBytes`. */
class TooLarge extends ProtocolViolation {}

interface Answer {
  status: number
  text: string
  retryAfterMs?: number
}

/** One attempt's mutable context. */
interface Attempt {
  req: ExecuteRequest
  signal: AbortSignal
  record: string
  requestId?: string
  trail: string[]
  details: Record<string, unknown>
}

/**
 * Runs a job on a remote prover service that speaks `proofline.prover-api/v1`
 * (docs/executor-protocol.md, HTTP): submit → persist the request id → poll with backoff →
 * fetch and check the result → store the proof. A dispatcher that restarts (crash, shutdown,
 * another worker taking the same attempt) finds the request id in the record store and resumes
 * polling instead of submitting again.
 *
 * Failure classes: remote `failed` → the class the service reports (`too-big`, `unprovable`,
 * `timeout`, else `transient`); HTTP 413 → `too-big`; 422 → `unprovable`; overall deadline →
 * `timeout` (cancelled remotely); a result for another job or program, a proof whose sha256
 * does not match, or a malformed result → `invalid-output`; everything else (network, 5xx,
 * auth, expired/unknown request) → `transient`. An abort cancels the remote request, except a
 * detach (`DetachReason`, `close()`), which leaves it running to be resumed.
 */
export function httpExecutor(opts: HttpExecutorOptions): Executor {
  let base: URL
  try {
    base = new URL(opts.url.endsWith('/') ? opts.url : `${opts.url}/`)
  } catch {
    throw new ConfigError(`http executor: url ${JSON.stringify(opts.url)} is not a URL`, { option: 'url' })
  }
  if (base.protocol !== 'https:' && base.protocol !== 'http:') {
    throw new ConfigError(`http executor: url must be http(s), got ${base.protocol}`, { option: 'url' })
  }
  if (base.username !== '' || base.password !== '') {
    throw new ConfigError('http executor: put credentials in token (or tokenEnv), not in the url', { option: 'url' })
  }
  const token = opts.token
  if (token !== undefined) {
    if (token.length === 0 || /[\r\n\0]/.test(token)) throw new ConfigError('http executor: token must be non-empty and on one line', { option: 'token' })
    if (base.protocol === 'http:' && !LOOPBACK.has(base.hostname) && opts.allowInsecureHttp !== true) {
      throw new ConfigError(
        `http executor: refusing to send the bearer token over plain http to ${base.host}; use https or set allowInsecureHttp: true`,
        { option: 'url' },
      )
    }
  }
  if (!(opts.timeoutMs > 0) || !Number.isFinite(opts.timeoutMs)) {
    throw new ConfigError('http executor: timeoutMs must be a positive number of milliseconds', { option: 'timeoutMs' })
  }
  const url = base.toString()
  const requestTimeoutMs = opts.requestTimeoutMs ?? 30_000
  const pollIntervalMs = opts.pollIntervalMs ?? 2_000
  const maxPollIntervalMs = Math.max(pollIntervalMs, opts.maxPollIntervalMs ?? 30_000)
  const maxPollErrors = opts.maxPollErrors ?? 5
  const submitRetries = opts.submitRetries ?? 2
  const heartbeatMs = opts.heartbeatMs ?? 5_000
  const inline = opts.inlineArtifacts ?? true
  const maxRequestBytes = opts.maxRequestBytes ?? 64 * 1024 * 1024
  const maxResponseBytes = opts.maxResponseBytes ?? 64 * 1024 * 1024
  const log = opts.log?.child({ part: 'http-executor', service: base.host })
  const closing = new AbortController()
  const active = new Set<Promise<unknown>>()
  let closed = false

  /** Removes the token from text the service sent back (a hostile service could echo it). */
  const redact = (text: string): string => (token === undefined ? text : text.split(token).join('***'))

  function recordName(job: ExecuteRequest['job']): string {
    return `http/${sha256Hex(`${url}\n${job.id}\n${job.programId}`)}`
  }

  function note(a: Attempt, line: string): void {
    a.trail.push(`${new Date().toISOString()} ${line}`)
    if (a.trail.length > 60) a.trail.splice(0, a.trail.length - 60)
  }

  function fail(a: Attempt, cls: FailureClass, message: string, extra: Record<string, unknown> = {}, cause?: unknown): ExecutorError {
    note(a, `failed (${cls}): ${message}`)
    return new ExecutorError(cls, message, { ...a.details, ...(a.requestId === undefined ? {} : { requestId: a.requestId }), ...extra, stderrTail: a.trail.join('\n') }, cause)
  }

  /** One HTTP call with its own deadline; a service answer of any status is returned, transport failures throw `NoAnswer`. */
  async function call(a: Attempt, method: string, path: string, o: { body?: string; idempotencyKey?: string; timeoutMs?: number; signal?: AbortSignal } = {}): Promise<Answer> {
    const signal = o.signal ?? a.signal
    if (signal.aborted) throw new Aborted()
    const deadline = AbortSignal.timeout(Math.max(1, o.timeoutMs ?? requestTimeoutMs))
    const both = AbortSignal.any([signal, deadline])
    const headers: Record<string, string> = { accept: 'application/json' }
    if (token !== undefined) headers['authorization'] = `Bearer ${token}`
    if (o.body !== undefined) headers['content-type'] = 'application/json'
    if (o.idempotencyKey !== undefined) headers['idempotency-key'] = o.idempotencyKey
    try {
      const res = await fetch(new URL(path, base), { method, headers, redirect: 'error', signal: both, ...(o.body === undefined ? {} : { body: o.body }) })
      const text = await readCapped(res, maxResponseBytes)
      const retryAfter = Number(res.headers.get('retry-after'))
      return { status: res.status, text, ...(Number.isFinite(retryAfter) && retryAfter > 0 ? { retryAfterMs: retryAfter * 1000 } : {}) }
    } catch (err) {
      if (signal.aborted) throw new Aborted()
      if (err instanceof TooLarge) throw err
      throw new NoAnswer(deadline.aborted ? `no answer within ${o.timeoutMs ?? requestTimeoutMs} ms` : errorMessage(err), { cause: err })
    }
  }

  /** Sleeps `ms`; throws `Aborted` if the attempt's signal fires first. */
  async function sleep(a: Attempt, ms: number): Promise<void> {
    if (a.signal.aborted) throw new Aborted()
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        a.signal.removeEventListener('abort', done)
        resolve()
      }
      const timer = setTimeout(done, Math.max(0, ms))
      a.signal.addEventListener('abort', done, { once: true })
    })
    if (a.signal.aborted) throw new Aborted()
  }

  const jitter = (ms: number): number => Math.round(ms * (0.8 + 0.4 * Math.random()))

  async function readRecord(a: Attempt): Promise<RequestRecord | null> {
    let bytes: Uint8Array | null
    try {
      bytes = await opts.records.get(a.record)
    } catch (err) {
      // Without the record we cannot know whether this job is already paid for: do not guess.
      throw fail(a, 'transient', `could not read the request record ${a.record}: ${errorMessage(err)}; check the artifact store`, {}, err)
    }
    if (bytes === null) return null
    try {
      const rec = JSON.parse(Buffer.from(bytes).toString('utf8')) as Partial<RequestRecord>
      if (rec.v === 1 && typeof rec.requestId === 'string' && typeof rec.submittedAt === 'number' && typeof rec.attempt === 'number') return rec as RequestRecord
    } catch {
      // fall through: an unreadable record is replaced
    }
    log?.warn({ record: a.record }, 'unreadable request record ignored')
    return null
  }

  async function writeRecord(a: Attempt, rec: RequestRecord): Promise<void> {
    await opts.records.set(a.record, new TextEncoder().encode(JSON.stringify(rec)))
  }

  async function forget(a: Attempt): Promise<void> {
    await opts.records.delete(a.record).catch((err: unknown) => log?.warn({ record: a.record, err: errorMessage(err) }, 'could not delete a request record'))
  }

  /** Best effort, on its own deadline: the attempt's signal may be the reason we are cancelling. */
  async function cancelRemote(a: Attempt, requestId: string): Promise<void> {
    try {
      const r = await call(a, 'DELETE', `v1/proofs/${encodeURIComponent(requestId)}`, { signal: new AbortController().signal })
      note(a, `cancel request ${requestId}: HTTP ${r.status}`)
      log?.info({ job: a.req.job.id, requestId, status: r.status }, 'remote request cancelled')
    } catch (err) {
      note(a, `cancel request ${requestId} failed: ${redact(errorMessage(err))}`)
      log?.warn({ job: a.req.job.id, requestId, err: redact(errorMessage(err)) }, 'remote cancel failed; the service may still bill the request')
    }
  }

  /** The submit body: the process protocol's input document, with referenced artifacts inlined. */
  async function submitBody(a: Attempt): Promise<string> {
    const body: SubmitBody = inputDocument(a.req)
    if (inline) {
      const artifacts: NonNullable<SubmitBody['artifacts']> = {}
      for (const input of a.req.inputs) {
        for (const ref of referencedArtifacts(input.data)) {
          if (artifacts[ref.key] !== undefined) continue
          try {
            const bytes = await opts.artifacts.get(ref, { signal: a.signal })
            artifacts[ref.key] = { sha256: ref.sha256, size: ref.size, base64: Buffer.from(bytes).toString('base64') }
          } catch (err) {
            if (a.signal.aborted) throw new Aborted()
            throw fail(a, 'transient', `could not read input artifact ${ref.key} to send it: ${errorMessage(err)}`, {}, err)
          }
        }
      }
      if (Object.keys(artifacts).length > 0) body.artifacts = artifacts
    }
    const text = JSON.stringify(body, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))
    if (Buffer.byteLength(text) > maxRequestBytes) {
      throw fail(a, 'too-big', `the job's submit body is ${Buffer.byteLength(text)} bytes, over maxRequestBytes ${maxRequestBytes}: split it`)
    }
    return text
  }

  /** Submits the job and persists the request id before anything waits on it. */
  async function submit(a: Attempt): Promise<{ requestId: string; submittedAt: number }> {
    const body = await submitBody(a)
    const job = a.req.job
    // Same key for every try of this attempt: a service that got the first try answers with the same request.
    const idempotencyKey = sha256Hex(`${url}\n${job.id}\n${job.programId}\n${job.attempt}`)
    for (let i = 0; ; i++) {
      let r: Answer
      try {
        r = await call(a, 'POST', 'v1/proofs', { body, idempotencyKey })
      } catch (err) {
        if (err instanceof TooLarge) throw fail(a, 'transient', `the prover service's submit answer is not believed: ${err.message}`)
        if (!(err instanceof NoAnswer)) throw err
        note(a, `submit try ${i + 1}: ${redact(err.message)}`)
        if (i < submitRetries) {
          await sleep(a, jitter(pollIntervalMs * 2 ** i))
          continue
        }
        throw fail(a, 'transient', `could not reach the prover service at ${base.host}: ${redact(err.message)}`, {}, err)
      }
      if (r.status >= 200 && r.status < 300) {
        let requestId: string
        try {
          requestId = checkSubmitResponse(parseJsonBody(r.text)).requestId
        } catch (err) {
          throw fail(a, 'transient', `the prover service answered the submit with HTTP ${r.status} but ${redact(errorMessage(err))}`, { reason: 'malformed submit response' })
        }
        const submittedAt = Date.now()
        a.requestId = requestId
        note(a, `submitted as request ${requestId}`)
        try {
          await writeRecord(a, { v: 1, protocol: HTTP_PROTOCOL, url, jobId: job.id, programId: job.programId, stage: job.stage, attempt: job.attempt, requestId, submittedAt, state: 'submitted' })
        } catch (err) {
          // Waiting on a request that a restart could not find would pay twice; give it up now.
          await cancelRemote(a, requestId)
          throw fail(a, 'transient', `could not persist remote request ${requestId} (${errorMessage(err)}); cancelled it rather than wait on a request a restart could not find`, {}, err)
        }
        log?.info({ job: job.id, attempt: job.attempt, requestId }, 'job submitted to the prover service')
        return { requestId, submittedAt }
      }
      const e = parseErrorBody(r.text)
      const said = e.message === undefined ? '' : `: ${redact(e.message)}`
      if (r.status === 413) throw fail(a, 'too-big', `the prover service says the job is too big (HTTP 413)${said}: split it`)
      if (r.status === 422) {
        const cls = remoteFailureClass(e.class)
        throw fail(a, cls === 'too-big' ? 'too-big' : 'unprovable', `the prover service refuses the job's input (HTTP 422)${said}`)
      }
      if (r.status === 401 || r.status === 403) {
        throw fail(a, 'transient', `the prover service refused our credentials (HTTP ${r.status})${said}; check the executor's token / tokenEnv`, { auth: true })
      }
      if ((r.status === 429 || r.status >= 500) && i < submitRetries) {
        note(a, `submit try ${i + 1}: HTTP ${r.status}${said}`)
        await sleep(a, Math.min(maxPollIntervalMs, r.retryAfterMs ?? jitter(pollIntervalMs * 2 ** i)))
        continue
      }
      throw fail(a, 'transient', `the prover service refused the submit with HTTP ${r.status}${said}`, { httpStatus: r.status })
    }
  }

  type Ending = { kind: 'final'; status: StatusDocument } | { kind: 'gone'; httpStatus: number }

  /** Polls until the request is final, gone, or the deadline passes (then cancels and throws `timeout`). */
  async function waitForEnd(a: Attempt, requestId: string, deadline: number): Promise<Ending> {
    let delay = pollIntervalMs
    let errors = 0
    let first = true
    for (;;) {
      const left = deadline - Date.now()
      if (left <= 0) {
        await cancelRemote(a, requestId)
        await forget(a)
        throw fail(a, 'timeout', `remote request ${requestId} did not finish within ${opts.timeoutMs} ms of its submission; cancelled`)
      }
      // The first poll is immediate: a resumed request may be done already.
      if (!first) await sleep(a, Math.min(left, jitter(delay)))
      first = false
      delay = Math.min(maxPollIntervalMs, delay * 1.5)
      if (Date.now() >= deadline) continue
      let problem = ''
      let r: Answer | undefined
      try {
        r = await call(a, 'GET', `v1/proofs/${encodeURIComponent(requestId)}`, { timeoutMs: Math.min(requestTimeoutMs, deadline - Date.now()) })
      } catch (err) {
        if (!(err instanceof NoAnswer) && !(err instanceof TooLarge)) throw err
        r = undefined
        problem = redact(err.message)
      }
      if (r === undefined) {
        // `problem` says why: no answer, or an oversized one.
      } else if (r.status === 404 || r.status === 410) {
        return { kind: 'gone', httpStatus: r.status }
      } else if (r.status === 401 || r.status === 403) {
        throw fail(a, 'transient', `the prover service refused our credentials while polling (HTTP ${r.status}); check the executor's token / tokenEnv`, { auth: true })
      } else if (r.status >= 200 && r.status < 300) {
        try {
          const status = checkStatusResponse(parseJsonBody(r.text), requestId)
          errors = 0
          if (status.status === 'succeeded' || status.status === 'failed' || status.status === 'cancelled') return { kind: 'final', status }
          if (status.retryAfterMs !== undefined) delay = Math.min(maxPollIntervalMs, Math.max(pollIntervalMs, status.retryAfterMs))
          continue
        } catch (err) {
          problem = `malformed status: ${redact(errorMessage(err))}`
        }
      } else {
        problem = `HTTP ${r.status}`
        if (r.retryAfterMs !== undefined) delay = Math.min(maxPollIntervalMs, Math.max(delay, r.retryAfterMs))
      }
      errors++
      note(a, `poll ${requestId}: ${problem} (${errors}/${maxPollErrors})`)
      if (errors >= maxPollErrors) {
        // The request may be fine: the record stays, so the retry resumes it.
        throw fail(a, 'transient', `polling remote request ${requestId} failed ${errors} times in a row (last: ${problem}); the next attempt resumes it`, { keptRecord: true })
      }
    }
  }

  /** Fetches and checks the result; `gone` when the service forgot the request. */
  async function fetchResult(a: Attempt, requestId: string, deadline: number): Promise<{ kind: 'gone'; httpStatus: number } | { kind: 'ok'; result: ExecuteResult }> {
    let errors = 0
    for (;;) {
      let problem = ''
      let r: Answer | undefined
      try {
        r = await call(a, 'GET', `v1/proofs/${encodeURIComponent(requestId)}/result`)
      } catch (err) {
        if (err instanceof TooLarge) {
          await forget(a)
          throw fail(a, 'invalid-output', `the result of remote request ${requestId} is not believed: ${err.message}`, { reason: err.message })
        }
        if (!(err instanceof NoAnswer)) throw err
        problem = redact(err.message)
      }
      if (r !== undefined) {
        if (r.status === 404 || r.status === 410) return { kind: 'gone', httpStatus: r.status }
        if (r.status >= 200 && r.status < 300) {
          let doc: unknown
          let parsed = true
          try {
            doc = parseJsonBody(r.text)
          } catch (err) {
            parsed = false
            problem = redact(errorMessage(err))
          }
          if (parsed) return { kind: 'ok', result: await believe(a, requestId, doc) }
        } else {
          problem = `HTTP ${r.status}`
        }
      }
      errors++
      note(a, `result of ${requestId}: ${problem} (${errors}/${maxPollErrors})`)
      if (errors >= maxPollErrors) {
        if (problem.startsWith('not JSON')) {
          await forget(a)
          throw fail(a, 'invalid-output', `the result of remote request ${requestId} is not JSON (${errors} tries): not believed`, { reason: problem })
        }
        throw fail(a, 'transient', `fetching the result of remote request ${requestId} failed ${errors} times (last: ${problem}); the next attempt resumes it`, { keptRecord: true })
      }
      if (Date.now() >= deadline) {
        await cancelRemote(a, requestId)
        await forget(a)
        throw fail(a, 'timeout', `the result of remote request ${requestId} could not be fetched before the deadline`)
      }
      await sleep(a, Math.min(deadline - Date.now(), jitter(pollIntervalMs)))
    }
  }

  /** Checks a result document and stores its proof; a hostile or broken result is `invalid-output`. */
  async function believe(a: Attempt, requestId: string, doc: unknown): Promise<ExecuteResult> {
    const job = a.req.job
    let checked: ReturnType<typeof checkResultResponse>
    try {
      checked = checkResultResponse(doc, { requestId, jobId: job.id, programId: job.programId }, maxResponseBytes)
    } catch (err) {
      await forget(a)
      throw fail(a, 'invalid-output', `the prover service's result is not believed: ${redact(errorMessage(err))}`, { reason: redact(errorMessage(err)) })
    }
    let proof: ArtifactRef | undefined
    if (checked.proof !== undefined) {
      const actual = sha256Hex(checked.proof.bytes)
      if (actual !== checked.proof.sha256) {
        await forget(a)
        throw fail(a, 'invalid-output', `the returned proof's sha256 is ${actual}, the service claims ${checked.proof.sha256}: not believed`, { reason: 'proof sha256 mismatch' })
      }
      try {
        proof = await opts.artifacts.put(checked.proof.bytes, { prefix: 'proofs', signal: a.signal })
      } catch (err) {
        if (a.signal.aborted) throw new Aborted()
        // The record stays: the retry fetches the same result without paying again.
        throw fail(a, 'transient', `could not store the returned proof: ${errorMessage(err)}`, { keptRecord: true }, err)
      }
    }
    return {
      output: checked.output,
      ...(proof === undefined ? {} : { proof }),
      ...(checked.cost === undefined ? {} : { cost: checked.cost }),
      durationMs: 0,
    }
  }

  async function run(a: Attempt): Promise<ExecuteResult> {
    const job = a.req.job
    const rec = await readRecord(a)
    let requestId: string
    let submittedAt: number
    let resumed = false
    if (
      rec !== null &&
      rec.url === url &&
      rec.jobId === job.id &&
      rec.programId === job.programId &&
      (rec.state === 'submitted' || (rec.state === 'succeeded' && rec.attempt === job.attempt))
    ) {
      // A previous run (crash, shutdown, another worker) already paid for this request.
      ;({ requestId, submittedAt } = rec)
      a.requestId = requestId
      resumed = true
      note(a, `resumed request ${requestId} (submitted ${new Date(submittedAt).toISOString()} by attempt ${rec.attempt})`)
      log?.info({ job: job.id, attempt: job.attempt, requestId, submittedBy: rec.attempt }, 'resumed a remote request instead of submitting again')
    } else {
      ;({ requestId, submittedAt } = await submit(a))
    }
    for (;;) {
      const deadline = submittedAt + opts.timeoutMs
      const end = await waitForEnd(a, requestId, deadline)
      if (end.kind === 'final') {
        const s = end.status
        if (s.status === 'failed') {
          await forget(a)
          const e = s.error ?? { class: 'transient' as const, message: 'no message' }
          throw fail(a, e.class, `remote request ${requestId} failed (${e.class}): ${redact(e.message)}`, { remoteClass: e.class })
        }
        if (s.status === 'cancelled') {
          await forget(a)
          throw fail(a, 'transient', `remote request ${requestId} was cancelled by the service`)
        }
        const got = await fetchResult(a, requestId, deadline)
        if (got.kind === 'ok') {
          note(a, `result of ${requestId} accepted`)
          await writeRecord(a, { v: 1, protocol: HTTP_PROTOCOL, url, jobId: job.id, programId: job.programId, stage: job.stage, attempt: job.attempt, requestId, submittedAt, state: 'succeeded' }).catch(
            async (err: unknown) => {
              log?.warn({ job: job.id, err: errorMessage(err) }, 'could not mark the request record succeeded; removing it')
              await forget(a)
            },
          )
          return got.result
        }
        await forget(a)
        if (!resumed) throw fail(a, 'transient', `the prover service no longer has the result of request ${requestId} (HTTP ${got.httpStatus})`)
        note(a, `result of resumed request ${requestId} is gone (HTTP ${got.httpStatus}); submitting again`)
      } else {
        await forget(a)
        if (!resumed) throw fail(a, 'transient', `the prover service does not know request ${requestId} (HTTP ${end.httpStatus}: expired or unknown)`, { httpStatus: end.httpStatus })
        note(a, `resumed request ${requestId} is unknown to the service (HTTP ${end.httpStatus}); submitting again`)
      }
      // A resumed request the service forgot: submit once more, then the usual rules apply.
      resumed = false
      log?.warn({ job: job.id, requestId }, 'the prover service forgot a resumed request; submitting again')
      ;({ requestId, submittedAt } = await submit(a))
    }
  }

  async function execute(req: ExecuteRequest): Promise<ExecuteResult> {
    const started = performance.now()
    const details = { service: base.host, jobId: req.job.id, attempt: req.job.attempt }
    if (closed) throw new ExecutorError('transient', 'http executor is closed', { ...details, aborted: true, detached: true })
    if (req.signal.aborted) throw new ExecutorError('transient', 'attempt aborted before it started', { ...details, aborted: true }, req.signal.reason)
    const a: Attempt = { req, signal: AbortSignal.any([req.signal, closing.signal]), record: recordName(req.job), trail: [], details }
    const heartbeat =
      req.onHeartbeat === undefined
        ? undefined
        : setInterval(() => {
            try {
              req.onHeartbeat?.()
            } catch {
              // The caller's lease bookkeeping failing does not stop the wait.
            }
          }, heartbeatMs)
    const work = (async (): Promise<ExecuteResult> => {
      try {
        const result = await run(a)
        return { ...result, durationMs: Math.round(performance.now() - started), stderrTail: a.trail.join('\n') }
      } catch (err) {
        if (!a.signal.aborted) {
          if (err instanceof ExecutorError) throw err
          throw fail(a, 'transient', `http executor: ${redact(errorMessage(err))}`, {}, err)
        }
        const detach = closing.signal.aborted || isDetach(req.signal.reason)
        if (a.requestId !== undefined && !detach) {
          await cancelRemote(a, a.requestId)
          await forget(a)
        }
        const message = detach
          ? `attempt detached (${closing.signal.aborted ? 'executor closed' : 'dispatcher stopping'})${a.requestId === undefined ? '' : `; remote request ${a.requestId} keeps running and the next attempt resumes it`}`
          : `attempt aborted${a.requestId === undefined ? '' : `; remote request ${a.requestId} cancelled`}`
        throw fail(a, 'transient', message, { aborted: true, detached: detach }, req.signal.reason)
      } finally {
        clearInterval(heartbeat)
      }
    })()
    active.add(work)
    try {
      return await work
    } finally {
      active.delete(work)
    }
  }

  return {
    kind: 'http',
    execute,
    async close() {
      closed = true
      // Detach: requests keep running remotely and their records stay, to be resumed.
      closing.abort()
      await Promise.allSettled([...active])
    },
  }
}

/** Artifact refs an input references (`data.trace`, `data.proof`), well-formed ones only. */
function referencedArtifacts(data: unknown): ArtifactRef[] {
  if (data === null || typeof data !== 'object') return []
  const refs: ArtifactRef[] = []
  for (const field of ['trace', 'proof']) {
    const v = (data as Record<string, unknown>)[field]
    if (v !== null && typeof v === 'object') {
      const { key, sha256, size } = v as Record<string, unknown>
      if (typeof key === 'string' && typeof sha256 === 'string' && typeof size === 'number') refs.push({ key, sha256, size })
    }
  }
  return refs
}

/** Reads a response body, refusing more than `max` bytes. */
async function readCapped(res: Response, max: number): Promise<string> {
  const declared = Number(res.headers.get('content-length'))
  if (Number.isFinite(declared) && declared > max) {
    await res.body?.cancel().catch(() => undefined)
    throw new TooLarge(`the response declares ${declared} bytes, more than ${max}`)
  }
  if (res.body === null) return ''
  const chunks: Uint8Array[] = []
  let total = 0
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    total += chunk.byteLength
    if (total > max) throw new TooLarge(`the response is larger than ${max} bytes`)
    chunks.push(chunk)
  }
  return Buffer.concat(chunks).toString('utf8')
}
