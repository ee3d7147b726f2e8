import { loadConfig } from '../config/load.js'
import { errorMessage, ProoflineError } from '../core/errors.js'
import type { BlockStatus } from '../api/queries.js'
import type { Attempt, Job } from '../core/types.js'
import type { PipelineEvent } from '../state/types.js'
import { apiFilePath, readApiFile, type ApiFile } from './api-file.js'

/**
 * Operator commands that talk to the running orchestrator's HTTP API (found through
 * `<dataDir>/api.json`), never to the database: `inspect block N`, `inspect job ID`, `jobs`,
 * `requeue`, `cancel`, `pause`, `resume`, `drain`, `undrain`. Each prints a human view, or the
 * API's JSON with `--json`; exit 0 when the API says ok, 1 otherwise.
 */

/** No orchestrator API to talk to (none runs, or it does not answer). */
export class ApiUnavailableError extends ProoflineError {
  constructor(message: string, cause?: unknown) {
    super('API_UNAVAILABLE', message, { retryable: true, ...(cause === undefined ? {} : { cause }) })
  }
}

interface Answer<T> {
  status: number
  ok: boolean
  body: T
}

/** A client of the running orchestrator's API. */
export interface ApiClient {
  readonly api: ApiFile
  get<T>(path: string): Promise<Answer<T>>
  /** An admin request, with the bearer token from api.json. */
  post<T>(path: string): Promise<Answer<T>>
}

/** Finds the running orchestrator of the pipeline file `configPath` and returns a client of its API. */
export async function apiClient(configPath: string): Promise<ApiClient> {
  const config = await loadConfig(configPath, { env: process.env })
  const found = await readApiFile(config)
  if (!found) throw new ApiUnavailableError(`no running orchestrator found for ${config.file} (no ${apiFilePath(config)}); start it with \`proofline run --config ${configPath}\` (or \`proofline up\`)`)
  const api: ApiFile = found
  async function call<T>(method: 'GET' | 'POST', path: string): Promise<Answer<T>> {
    let res: Response
    try {
      res = await fetch(`${api.url}${path}`, { method, headers: method === 'POST' ? { authorization: `Bearer ${api.token}` } : {} })
    } catch (err) {
      throw new ApiUnavailableError(`the orchestrator's API at ${api.url} (pid ${api.pid}) does not answer: ${errorMessage(err)}; is it still running?`, err)
    }
    const text = await res.text()
    let body: unknown
    try {
      body = JSON.parse(text)
    } catch {
      body = { error: text }
    }
    return { status: res.status, ok: res.ok, body: body as T }
  }
  return { api, get: (p) => call('GET', p), post: (p) => call('POST', p) }
}

const out = (text: string): void => void process.stdout.write(text.endsWith('\n') ? text : `${text}\n`)
const json = (v: unknown): void => out(JSON.stringify(v, null, 2))
const when = (ms: number | null | undefined): string => (ms ? new Date(ms).toISOString() : '-')
const errorOf = (body: unknown): string => (typeof body === 'object' && body !== null && 'error' in body ? String((body as { error: unknown }).error) : JSON.stringify(body))

/**
 * What every command does before its own view: with `--json` prints the API's answer as it is,
 * and on an error answer prints the error (after `prefix`). Returns the exit code then, or
 * undefined when the caller goes on to print its view of a good answer.
 */
function answered(r: Answer<unknown>, opts: { json?: boolean }, prefix = ''): number | undefined {
  if (opts.json) {
    json(r.body)
    return r.ok ? 0 : 1
  }
  if (!r.ok) {
    out(`${prefix}${errorOf(r.body)}`)
    return 1
  }
  return undefined
}

/** `proofline inspect block N`: which jobs of every stage cover it, their proofs, and its proposal. */
export async function inspectBlockCommand(blockArg: string, opts: { config: string; json?: boolean }): Promise<number> {
  const n = Number(blockArg)
  if (!Number.isSafeInteger(n) || n < 0) {
    process.stderr.write(`error: block must be a non-negative integer (got ${blockArg})\n`)
    return 2
  }
  const client = await apiClient(opts.config)
  const r = await client.get<BlockStatus>(`/blocks/${n}`)
  const early = answered(r, opts, `block ${n}: `)
  if (early !== undefined) return early
  const b = r.body
  const lines = [`block ${b.number}: ${b.status}`]
  lines.push(b.block ? `  seen     ${when(b.block.seenAt)}  hash ${b.block.hash}  gas ${b.block.gasUsed}  cost ${b.block.cost}` : '  seen     no (not recorded by the source)')
  for (const s of b.stages) {
    if (s.jobs.length === 0) {
      lines.push(`  ${s.stage.padEnd(8)} no job yet`)
      continue
    }
    for (const j of s.jobs) {
      const proof = j.proof ? `  proof ${j.proof.key}` : ''
      const err = j.lastError ? `  error (${j.failureClass ?? '?'}): ${j.lastError.slice(0, 200)}` : ''
      lines.push(`  ${s.stage.padEnd(8)} ${j.state.padEnd(11)} blocks ${j.first}-${j.last}  attempt ${j.attempt}  job ${j.id}${proof}${err}`)
    }
  }
  if (b.proposal) lines.push(`  proposed L2 ${b.proposal.first}-${b.proposal.l2Block}  root ${b.proposal.outputRoot}  tx ${b.proposal.txHash}  L1 block ${b.proposal.l1Block}`)
  else if (b.inFlightProposal) lines.push(`  proposal in flight: L2 ${b.inFlightProposal.first}-${b.inFlightProposal.l2Block}`)
  else lines.push('  proposed no')
  out(lines.join('\n'))
  return 0
}

/** `proofline inspect job ID`: the job, its attempts (worker, outcome, error) and events, and the last stderr tail. */
export async function inspectJobCommand(id: string, opts: { config: string; json?: boolean }): Promise<number> {
  const client = await apiClient(opts.config)
  const r = await client.get<{ job: Job; attempts: Attempt[]; events: PipelineEvent[]; logTail: { attempt: number; worker: string | null; stderr: string } | null }>(`/jobs/${encodeURIComponent(id)}`)
  const early = answered(r, opts)
  if (early !== undefined) return early
  const { job, attempts, events, logTail } = r.body
  const lines = [`job ${job.id}`, `  stage ${job.stage}  blocks ${job.first}-${job.last}  state ${job.state}  attempt ${job.attempt}/${job.maxAttempts}  cost ${job.cost}${job.capacity !== null ? `/${job.capacity}` : ''}`]
  if (job.lastError) lines.push(`  last error (${job.failureClass ?? '?'}): ${job.lastError}`)
  if (job.result?.proof) lines.push(`  proof ${job.result.proof.key}`)
  for (const a of attempts) lines.push(`  attempt ${a.attempt}: ${a.outcome} on ${a.workerId ?? '-'} ${when(a.startedAt)} → ${when(a.endedAt)}${a.error ? `  ${a.failureClass ?? ''}: ${a.error.slice(0, 200)}` : ''}`)
  for (const e of events) lines.push(`  event ${when(e.at)} ${e.kind}: ${e.message}`)
  if (logTail) lines.push(`  stderr of attempt ${logTail.attempt} (${logTail.worker ?? '-'}):`, ...logTail.stderr.split('\n').map((l) => `    ${l}`))
  out(lines.join('\n'))
  return 0
}

export interface JobsOptions {
  config: string
  failed?: boolean
  stage?: string
  state?: string
  limit?: string
  json?: boolean
}

/** `proofline jobs [--failed] [--stage S] [--state a,b] [--limit N]`: jobs, most recently updated first. */
export async function jobsCommand(opts: JobsOptions): Promise<number> {
  const client = await apiClient(opts.config)
  const q = new URLSearchParams()
  if (opts.failed) q.set('failed', '1')
  if (opts.stage) q.set('stage', opts.stage)
  if (opts.state) q.set('state', opts.state)
  if (opts.limit) q.set('limit', opts.limit)
  const r = await client.get<{ jobs: Job[] }>(`/jobs?${q.toString()}`)
  const early = answered(r, opts)
  if (early !== undefined) return early
  const { jobs } = r.body
  if (jobs.length === 0) {
    out(opts.failed ? 'no failed, retrying or dead jobs' : 'no jobs')
    return 0
  }
  const lines = jobs.map((j) => `${j.state.padEnd(11)} ${j.stage.padEnd(10)} ${`${j.first}-${j.last}`.padEnd(13)} attempt ${`${j.attempt}/${j.maxAttempts}`.padEnd(6)} ${j.id}${j.lastError ? `  ${j.failureClass ?? ''}: ${j.lastError.slice(0, 160)}` : ''}`)
  if (jobs.some((j) => j.state === 'dead')) lines.push('dead jobs block later proposals: fix the cause, then `proofline requeue JOB --config …`')
  out(lines.join('\n'))
  return 0
}

/** Admin actions: POST `/jobs/:id/requeue|cancel`, `/stages/:name/pause|resume`, `/workers/:id/drain|undrain`. */
export async function adminCommand(kind: 'jobs' | 'stages' | 'workers', id: string, action: string, opts: { config: string; json?: boolean }): Promise<number> {
  const client = await apiClient(opts.config)
  const r = await client.post<Record<string, unknown>>(`/${kind}/${encodeURIComponent(id)}/${action}`)
  const ok = r.ok && r.body.ok !== false
  if (opts.json) json(r.body)
  else if (!ok) out(`${action} ${id}: refused (${r.status}): ${errorOf(r.body)}`)
  else if (kind === 'stages') out(`stage ${id} ${action === 'pause' ? 'paused' : 'resumed'} (${String(r.body.jobs)} ${action === 'pause' ? 'queued attempts withdrawn' : 'jobs published'})`)
  else if (kind === 'workers') out(`${action} sent to worker ${id}`)
  else out(`${action} ${id}: done ${JSON.stringify(r.body)}`)
  return ok ? 0 : 1
}
