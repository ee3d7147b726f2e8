import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { timingSafeEqual } from 'node:crypto'
import type { Logger } from 'pino'
import { errorMessage } from '../core/errors.js'
import type { StateStore } from '../state/types.js'
import type { Orchestrator } from '../pipeline/orchestrator.js'
import type { RequeueResult } from '../pipeline/jobs.js'

export interface ApiOptions {
  host: string
  port: number
  /** Bearer token required by admin (mutating) endpoints. */
  token: string
  state: StateStore
  orchestrator: () => Orchestrator | undefined
  requeue: (jobId: string) => Promise<RequeueResult>
  log: Logger
}

/** A started API server. */
export interface ApiServer {
  readonly url: string
  close(): Promise<void>
}

/**
 * The HTTP API of a running orchestrator. Read endpoints are open on the bound interface;
 * admin endpoints need `Authorization: Bearer <token>`. Other commands (`status`,
 * `requeue`) talk to this instead of opening the state store's files.
 *
 * - `GET /healthz`
 * - `GET /status` — run summary, job counts, open collector items
 * - `GET /jobs?stage=&state=&limit=` — jobs
 * - `GET /jobs/:id` — one job with its attempts and events
 * - `GET /events?kind=&job=&limit=` — events, newest first (e.g. `kind=shadow`: shadow provers' verdicts)
 * - `POST /jobs/:id/requeue` (admin) — a dead or cancelled job gets a new attempt
 */
export async function startApi(opts: ApiOptions): Promise<ApiServer> {
  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
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

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost')
    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent)
    if (req.method === 'GET' && url.pathname === '/healthz') return send(res, 200, { ok: true })
    if (req.method === 'GET' && url.pathname === '/status') {
      const orch = opts.orchestrator()
      return send(res, 200, {
        summary: orch ? await orch.summary() : null,
        jobs: await opts.state.countJobs(),
        openItems: orch?.openItems() ?? {},
        state: orch?.state ?? 'starting',
      })
    }
    if (req.method === 'GET' && parts[0] === 'jobs' && parts.length === 1) {
      const stage = url.searchParams.get('stage') ?? undefined
      const st = url.searchParams.get('state')
      const jobs = await opts.state.listJobs({
        ...(stage ? { stage } : {}),
        ...(st ? { states: st.split(',') as never } : {}),
        limit: Number(url.searchParams.get('limit') ?? 100),
        order: 'recent',
      })
      return send(res, 200, { jobs })
    }
    if (req.method === 'GET' && parts[0] === 'jobs' && parts.length === 2) {
      const id = parts[1] as string
      const job = await opts.state.getJob(id)
      if (!job) return send(res, 404, { error: `no job ${id}` })
      return send(res, 200, { job, attempts: await opts.state.listAttempts(id), events: await opts.state.listEvents({ jobId: id, limit: 100 }) })
    }
    if (req.method === 'GET' && url.pathname === '/events') {
      const kind = url.searchParams.get('kind')
      const job = url.searchParams.get('job')
      const events = await opts.state.listEvents({
        ...(kind ? { kind: kind as never } : {}),
        ...(job ? { jobId: job } : {}),
        limit: Math.min(1000, Number(url.searchParams.get('limit') ?? 100) || 100),
      })
      return send(res, 200, { events })
    }
    if (req.method === 'POST' && parts[0] === 'jobs' && parts[2] === 'requeue' && parts.length === 3) {
      if (!authorised(req)) return send(res, 401, { error: 'admin endpoints need Authorization: Bearer <token> (see api.token, or <dataDir>/api.json)' })
      const r = await opts.requeue(parts[1] as string)
      return send(res, r.ok ? 200 : 409, r)
    }
    send(res, 404, { error: `no route ${req.method ?? ''} ${url.pathname}` })
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port, opts.host, () => resolve())
  })
  const addr = server.address() as AddressInfo
  return {
    url: `http://${opts.host}:${addr.port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end(JSON.stringify(body, null, 2))
}
