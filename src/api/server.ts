import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { timingSafeEqual } from 'node:crypto'
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import type { Logger } from 'pino'
import type { ResolvedConfig } from '../config/load.js'
import { errorMessage } from '../core/errors.js'
import type { JobState } from '../core/types.js'
import type { Orchestrator } from '../pipeline/orchestrator.js'
import type { JobFilter, PipelineEvent, StateStore } from '../state/types.js'
import type { PipelineMetrics } from './metrics.js'
import type { PipelineMonitor, ProposerView } from './monitor.js'
import { openApiDocument } from './openapi.js'
import { blockStatus } from './queries.js'

export interface ApiOptions {
  host: string
  port: number
  /** Bearer token required by admin (mutating) endpoints. */
  token: string
  config: ResolvedConfig
  state: StateStore
  orchestrator: () => Orchestrator | undefined
  monitor: PipelineMonitor
  metrics: PipelineMetrics
  proposer?: () => ProposerView | undefined
  log: Logger
}

/** A started API server. */
export interface ApiServer {
  readonly url: string
  /** The dashboard page. */
  readonly dashboardUrl: string
  close(): Promise<void>
}

/** States `jobs?failed=1` (and `proofline jobs --failed`) lists: jobs in trouble or given up. */
export const FAILED_STATES: JobState[] = ['failed', 'retrying', 'dead']
const JOB_STATES: ReadonlySet<string> = new Set(['pending', 'running', 'succeeded', 'failed', 'retrying', 'dead', 'split', 'cancelled', 'invalidated'])

/** The dashboard's static files (plain HTML/JS/CSS, no build step): beside this module, or in src/ when running from dist/. */
function dashboardDir(): string {
  const here = fileURLToPath(new URL('./dashboard/', import.meta.url))
  if (existsSync(here)) return here
  return fileURLToPath(new URL('../../src/api/dashboard/', import.meta.url))
}
const STATIC: Record<string, string> = { 'index.html': 'text/html; charset=utf-8', 'app.js': 'text/javascript; charset=utf-8', 'style.css': 'text/css; charset=utf-8' }

/** Thrown by handlers for a 4xx answer. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

/**
 * The HTTP API of a running orchestrator: status, blocks, jobs, proposals, workers, metrics,
 * the dashboard, and admin actions. Read endpoints are open on the bound interface (default
 * 127.0.0.1); every `POST` needs `Authorization: Bearer <token>` and is refused with 401
 * otherwise. Other commands (`status`, `jobs`, `requeue`, …) talk to this through
 * `<dataDir>/api.json`. The endpoints are described in OpenAPI at `GET /openapi.json`
 * (and docs/openapi.json); docs/operations.md describes them.
 */
export async function startApi(opts: ApiOptions): Promise<ApiServer> {
  const staticDir = dashboardDir()
  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (err instanceof HttpError) return send(res, err.status, { error: err.message })
      opts.log.error({ err: errorMessage(err), url: req.url }, 'api request failed')
      send(res, 500, { error: errorMessage(err) })
    })
  })

  function authorised(req: IncomingMessage): boolean {
    const header = req.headers.authorization ?? ''
    const given = Buffer.from(header.startsWith('Bearer ') ? header.slice(7) : '')
    const want = Buffer.from(opts.token)
    return given.length === want.length && timingSafeEqual(given, want)
  }

  function running(): Orchestrator {
    const o = opts.orchestrator()
    if (!o || o.state !== 'running') throw new HttpError(503, `the orchestrator is ${o?.state ?? 'starting'}; try again when it runs`)
    return o
  }

  const intParam = (v: string | null, name: string, dflt: number, max = 10_000): number => {
    if (v === null || v === '') return dflt
    const n = Number(v)
    if (!Number.isSafeInteger(n) || n < 0) throw new HttpError(400, `${name} must be a non-negative integer (got ${v})`)
    return Math.min(n, max)
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost')
    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent)
    const q = url.searchParams
    if (req.method === 'POST') {
      if (!authorised(req)) return send(res, 401, { error: 'admin endpoints need Authorization: Bearer <token> (api.token in the pipeline file, or the token in <dataDir>/api.json)' })
      return admin(parts, res)
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, { error: `method ${req.method ?? ''} not allowed` })
    const path = url.pathname
    if (path === '/favicon.ico') {
      res.writeHead(204)
      res.end()
      return
    }
    if (path === '/healthz') return send(res, 200, { ok: true, orchestrator: opts.orchestrator()?.state ?? 'starting' })
    if (path === '/') {
      res.writeHead(302, { location: '/dashboard/' })
      res.end()
      return
    }
    if (parts[0] === 'dashboard' && parts.length <= 2) {
      const file = parts[1] ?? 'index.html'
      const type = STATIC[file]
      if (!type) return send(res, 404, { error: `no dashboard file ${file}` })
      if (parts.length === 1 && !path.endsWith('/')) {
        res.writeHead(302, { location: '/dashboard/' })
        res.end()
        return
      }
      res.writeHead(200, { 'content-type': type, 'cache-control': 'no-cache' })
      res.end(await readFile(`${staticDir}${file}`))
      return
    }
    if (path === '/openapi.json') return send(res, 200, openApiDocument())
    if (path === '/metrics') {
      opts.metrics.update(await opts.monitor.snapshot())
      res.writeHead(200, { 'content-type': opts.metrics.contentType })
      res.end(await opts.metrics.render())
      return
    }
    if (path === '/status') {
      const orch = opts.orchestrator()
      return send(res, 200, {
        summary: orch ? await orch.summary() : null,
        jobs: await opts.state.countJobs(),
        openItems: orch?.openItems() ?? {},
        state: orch?.state ?? 'starting',
        paused: orch?.controls.paused() ?? [],
        pipeline: await opts.monitor.snapshot(),
      })
    }
    if (path === '/pipeline') return send(res, 200, await opts.monitor.snapshot())
    if (path === '/history') return send(res, 200, { samples: opts.monitor.history() })
    if (path === '/timeline') return send(res, 200, await opts.monitor.timeline(intParam(q.get('blocks'), 'blocks', 64, 1000)))
    if (path === '/workers') return send(res, 200, { workers: opts.monitor.workers() })
    if (path === '/events') {
      const kind = q.get('kind')
      return send(res, 200, { events: await opts.state.listEvents({ ...(kind ? { kind: kind as PipelineEvent['kind'] } : {}), limit: intParam(q.get('limit'), 'limit', 100) }) })
    }
    if (path === '/proposals') {
      const pv = opts.proposer?.()
      if (!pv) return send(res, 200, { enabled: false, confirmed: [], inFlight: [], refusals: [] })
      const limit = intParam(q.get('limit'), 'limit', 100)
      return send(res, 200, {
        enabled: true,
        address: pv.address,
        oracle: pv.oracle,
        confirmed: (await pv.proposals.list({ limit })).reverse(),
        inFlight: await pv.proposals.listInFlight(),
        refusals: await pv.proposals.listRefusals({ limit }),
      })
    }
    if (parts[0] === 'jobs' && parts.length === 1) {
      const stage = q.get('stage')
      const states = q.get('state')
      const failed = q.get('failed')
      let wanted: JobState[] | undefined
      if (failed === '1' || failed === 'true') wanted = FAILED_STATES
      else if (states) {
        const list = states.split(',')
        const bad = list.find((s) => !JOB_STATES.has(s))
        if (bad !== undefined) throw new HttpError(400, `unknown job state "${bad}" (states: ${[...JOB_STATES].join(', ')})`)
        wanted = list as JobState[]
      }
      const filter: JobFilter = { ...(stage ? { stage } : {}), ...(wanted ? { states: wanted } : {}), limit: intParam(q.get('limit'), 'limit', 100), order: 'recent' }
      return send(res, 200, { jobs: await opts.state.listJobs(filter) })
    }
    if (parts[0] === 'jobs' && parts.length === 2) {
      const id = parts[1] as string
      const job = await opts.state.getJob(id)
      if (!job) return send(res, 404, { error: `no job ${id}` })
      const attempts = await opts.state.listAttempts(id)
      const withTail = [...attempts].reverse().find((a) => a.stderrTail)
      return send(res, 200, {
        job,
        attempts,
        events: await opts.state.listEvents({ jobId: id, limit: 100 }),
        logTail: withTail ? { attempt: withTail.attempt, worker: withTail.workerId, stderr: withTail.stderrTail } : null,
      })
    }
    if (parts[0] === 'blocks' && parts.length === 2) {
      const n = Number(parts[1])
      if (!Number.isSafeInteger(n) || n < 0) throw new HttpError(400, `block must be a non-negative integer (got ${parts[1] ?? ''})`)
      const status = await blockStatus({ config: opts.config, state: opts.state, proposals: opts.proposer?.()?.proposals }, n)
      if (!status) return send(res, 404, { error: `block ${n} has not been seen and no job covers it` })
      return send(res, 200, status)
    }
    send(res, 404, { error: `no route GET ${url.pathname} (see /openapi.json)` })
  }

  async function admin(parts: string[], res: ServerResponse): Promise<void> {
    const [kind, id, action] = parts
    if (parts.length !== 3 || id === undefined) return send(res, 404, { error: `no admin route /${parts.join('/')} (see /openapi.json)` })
    if (kind === 'jobs' && (action === 'requeue' || action === 'cancel')) {
      const o = running()
      const r = action === 'requeue' ? await o.requeue(id) : await o.cancel(id)
      return send(res, r.ok ? 200 : r.error.startsWith('no job') ? 404 : 409, r)
    }
    if (kind === 'stages' && (action === 'pause' || action === 'resume')) {
      const o = running()
      const r = action === 'pause' ? await o.controls.pause(id) : await o.controls.resume(id)
      return send(res, r.ok ? 200 : 404, r)
    }
    if (kind === 'workers' && (action === 'drain' || action === 'undrain')) {
      const o = running()
      return send(res, 202, action === 'drain' ? await o.controls.drain(id) : await o.controls.undrain(id))
    }
    send(res, 404, { error: `no admin route /${parts.join('/')} (see /openapi.json)` })
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port, opts.host, () => resolve())
  })
  const addr = server.address() as AddressInfo
  const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host
  const base = `http://${host}:${addr.port}`
  return {
    url: base,
    dashboardUrl: `${base}/dashboard/`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end(JSON.stringify(body, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2))
}
