import { randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { mockCommitment } from '../../backends/mock/mock-proof.js'
import { ExecutorError } from '../../core/errors.js'
import { sha256Hex } from '../../core/ids.js'
import { mockStatement } from '../mock/mock-executor.js'
import { EXECUTOR_PROTOCOL, type ExecutorInputDocument } from '../process/protocol.js'
import type { RemoteStatus } from './protocol.js'

/** Switches that make the mock service misbehave; read on every request, so tests flip them mid-run. */
export interface MockServiceMisbehaviour {
  /** Never answer this kind of call (the connection stays open). */
  hang?: 'submit' | 'status' | 'result'
  /** Answer the next N calls of a kind with 503. */
  unavailable?: { submit?: number; status?: number; result?: number }
  /** Answer this kind of call with a body that is not JSON. */
  malformed?: 'submit' | 'status' | 'result'
  /** Results claim another job id. */
  wrongJob?: boolean
  /** Results claim another program id. */
  wrongProgram?: boolean
  /** Results carry a proof whose sha256 does not match its bytes. */
  badProofSha?: boolean
  /** Every call about an existing request answers 410 (expired). */
  expired?: boolean
  /** New requests end `failed` with this error. */
  fail?: { class: string; message: string }
  /** Error bodies echo the caller's Authorization header (a hostile service). */
  echoAuthorization?: boolean
}

/** Options of `mockProverService`. */
export interface MockProverServiceOptions {
  /** @default '127.0.0.1' */
  host?: string
  /** @default 0 (a free port) */
  port?: number
  /** When set, every call must carry `Authorization: Bearer <token>` (else 401). */
  token?: string
  /** Time from submission to `succeeded`. @default 0 */
  latencyMs?: number
  /** Honour `Idempotency-Key` (the same key returns the same request). @default true */
  idempotency?: boolean
  misbehave?: MockServiceMisbehaviour
}

/** One request the mock service holds. */
export interface MockServiceRequest {
  requestId: string
  jobId: string
  programId: string
  submittedAt: number
  doneAt: number
  status: RemoteStatus
  error?: { class: string; message: string }
  output?: Record<string, unknown>
  proof?: Uint8Array
  /** How many inlined artifacts came with the submit. */
  artifacts: number
  /** The submit body as received. */
  body: unknown
}

/** A running mock prover service. */
export interface MockProverService {
  /** Base URL for the executor's `url`. */
  readonly url: string
  /** Live misbehaviour switches. */
  misbehave: MockServiceMisbehaviour
  /** Calls received by kind, and requests created (a deduplicated submit creates none). */
  readonly stats: { submits: number; created: number; polls: number; results: number; cancels: number; unauthorized: number }
  readonly requests: Map<string, MockServiceRequest>
  /** Forgets every request, like a service that lost its state (calls about them answer 404). */
  forgetAll(): void
  close(): Promise<void>
}

/**
 * A **mock** prover service speaking `proofline.prover-api/v1` (docs/executor-protocol.md, HTTP),
 * for development and tests — an honest, labelled dev tool, like the mock executor: it "proves"
 * with the mock commitment of `src/backends/mock/mock-proof.ts` (inputs seen in the right order,
 * nothing about their validity), and can misbehave on purpose (hang, 5xx, malformed JSON,
 * expired ids, wrong job, bad proof hash, hostile echo of the token).
 */
export async function mockProverService(opts: MockProverServiceOptions = {}): Promise<MockProverService> {
  const requests = new Map<string, MockServiceRequest>()
  const byKey = new Map<string, string>()
  const stats = { submits: 0, created: 0, polls: 0, results: 0, cancels: 0, unauthorized: 0 }
  const sockets = new Set<Socket>()
  const latencyMs = opts.latencyMs ?? 0
  const service: MockProverService = {
    url: '',
    misbehave: opts.misbehave ?? {},
    stats,
    requests,
    forgetAll() {
      requests.clear()
      byKey.clear()
    },
    close: () => Promise.resolve(),
  }

  function send(res: ServerResponse, status: number, body: unknown): void {
    const text = typeof body === 'string' ? body : JSON.stringify(body)
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
    res.end(text)
  }
  function error(res: ServerResponse, status: number, cls: string, message: string, req?: IncomingMessage): void {
    const echo = service.misbehave.echoAuthorization === true && req !== undefined ? ` (you sent ${req.headers.authorization ?? 'nothing'})` : ''
    send(res, status, { error: { class: cls, message: `${message}${echo}` } })
  }
  function takeUnavailable(kind: 'submit' | 'status' | 'result'): boolean {
    const u = service.misbehave.unavailable
    const n = u?.[kind] ?? 0
    if (n <= 0 || u === undefined) return false
    u[kind] = n - 1
    return true
  }
  function refresh(r: MockServiceRequest): void {
    if (r.status === 'queued' || r.status === 'running') r.status = Date.now() >= r.doneAt ? (r.error ? 'failed' : 'succeeded') : 'running'
  }

  async function body(req: IncomingMessage): Promise<string> {
    const chunks: Buffer[] = []
    for await (const c of req) chunks.push(c as Buffer)
    return Buffer.concat(chunks).toString('utf8')
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x')
    const m = /^\/v1\/proofs(?:\/([^/]+)(\/result)?)?$/.exec(url.pathname)
    if (m === null) return error(res, 404, 'transient', `no route ${req.method ?? ''} ${url.pathname}`, req)
    if (opts.token !== undefined && req.headers.authorization !== `Bearer ${opts.token}`) {
      stats.unauthorized++
      return error(res, 401, 'transient', 'missing or wrong bearer token', req)
    }
    const id = m[1] === undefined ? undefined : decodeURIComponent(m[1])
    const kind = id === undefined ? 'submit' : m[2] !== undefined ? 'result' : req.method === 'DELETE' ? 'cancel' : 'status'
    if (kind === 'submit' && req.method !== 'POST') return error(res, 405, 'transient', 'POST only')
    if (kind !== 'cancel' && kind !== 'submit' && req.method !== 'GET') return error(res, 405, 'transient', 'GET only')
    if (kind === 'submit') stats.submits++
    else if (kind === 'status') stats.polls++
    else if (kind === 'result') stats.results++
    else stats.cancels++
    if (kind !== 'cancel') {
      if (service.misbehave.hang === kind) return // never answered; closed by close()
      if (takeUnavailable(kind)) return error(res, 503, 'transient', 'temporarily unavailable')
      // A malformed submit answer comes after the request is stored, like an answer lost on the way.
      if (service.misbehave.malformed === kind && kind !== 'submit') return send(res, 200, '{"requestId": "oops", this is not json')
    }

    if (kind === 'submit') {
      const text = await body(req)
      let doc: ExecutorInputDocument
      try {
        doc = JSON.parse(text) as ExecutorInputDocument
      } catch {
        return error(res, 400, 'transient', 'body is not JSON')
      }
      if (doc.protocol !== EXECUTOR_PROTOCOL) return error(res, 400, 'transient', `unknown protocol ${JSON.stringify(doc.protocol)}`)
      const key = req.headers['idempotency-key']
      if (opts.idempotency !== false && typeof key === 'string') {
        const existing = byKey.get(key)
        if (existing !== undefined && requests.has(existing)) {
          return service.misbehave.malformed === 'submit' ? send(res, 200, '{"requestId": ') : send(res, 200, { requestId: existing })
        }
      }
      const requestId = `mock-${randomUUID()}`
      const now = Date.now()
      const r: MockServiceRequest = {
        requestId,
        jobId: doc.job.id,
        programId: doc.job.programId,
        submittedAt: now,
        doneAt: now + latencyMs,
        status: 'queued',
        artifacts: Object.keys((doc as { artifacts?: object }).artifacts ?? {}).length,
        body: doc,
      }
      try {
        const statement = mockStatement(doc)
        const commitment = mockCommitment(statement)
        r.output = { commitment, first: doc.job.first, last: doc.job.last, lastHash: doc.job.lastHash, program: doc.job.programId }
        r.proof = new TextEncoder().encode(JSON.stringify({ mock: true, commitment }))
      } catch (err) {
        r.error = { class: err instanceof ExecutorError ? err.failureClass : 'transient', message: err instanceof Error ? err.message : String(err) }
      }
      if (service.misbehave.fail) r.error = { ...service.misbehave.fail }
      requests.set(requestId, r)
      if (typeof key === 'string') byKey.set(key, requestId)
      stats.created++
      if (service.misbehave.malformed === 'submit') return send(res, 200, '{"requestId": ')
      return send(res, 202, { requestId })
    }

    const r = requests.get(id as string)
    if (r === undefined) return error(res, 404, 'transient', `unknown request ${id ?? ''}`, req)
    if (service.misbehave.expired === true) return error(res, 410, 'transient', `request ${r.requestId} expired`, req)
    refresh(r)
    if (kind === 'cancel') {
      if (r.status === 'queued' || r.status === 'running') r.status = 'cancelled'
      return send(res, 200, { requestId: r.requestId, status: r.status })
    }
    if (kind === 'status') {
      return send(res, 200, { requestId: r.requestId, status: r.status, ...(r.status === 'failed' ? { error: r.error } : {}) })
    }
    if (r.status !== 'succeeded' || r.output === undefined || r.proof === undefined) {
      return error(res, 409, 'transient', `request ${r.requestId} is ${r.status}`)
    }
    const proofSha = sha256Hex(r.proof)
    return send(res, 200, {
      requestId: r.requestId,
      jobId: service.misbehave.wrongJob === true ? `${r.jobId}-other` : r.jobId,
      programId: service.misbehave.wrongProgram === true ? 'another-program' : r.programId,
      output: r.output,
      proof: { base64: Buffer.from(r.proof).toString('base64'), sha256: service.misbehave.badProofSha === true ? sha256Hex('something else') : proofSha },
      cost: 0.25,
    })
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) error(res, 500, 'transient', err instanceof Error ? err.message : String(err))
    })
  })
  server.on('connection', (s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve())
  })
  const addr = server.address() as AddressInfo
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address
  Object.assign(service, {
    url: `http://${host}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  })
  return service
}
