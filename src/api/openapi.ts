/**
 * The OpenAPI 3.1 description of the orchestrator's HTTP API, served at `GET /openapi.json`
 * and kept in docs/openapi.json (a test checks they are equal; regenerate with
 * `npx tsx scripts/write-openapi.ts`).
 */

const json = (schema: unknown, description = 'OK'): unknown => ({ description, content: { 'application/json': { schema } } })
const ref = (name: string): unknown => ({ $ref: `#/components/schemas/${name}` })
const error = (description: string): unknown => json(ref('Error'), description)
const adminResponses = (ok: unknown): unknown => ({
  200: ok,
  401: error('No or wrong bearer token'),
  404: error('No such job, stage or route'),
  409: error('The job is in a state that does not allow it'),
  503: error('The orchestrator is not running (starting or stopping)'),
})
const pathParam = (name: string, description: string, type: 'string' | 'integer' = 'string'): unknown => ({ name, in: 'path', required: true, description, schema: { type } })
const queryParam = (name: string, description: string, type: 'string' | 'integer' = 'string'): unknown => ({ name, in: 'query', required: false, description, schema: { type } })

const JOB_STATES = ['pending', 'running', 'succeeded', 'failed', 'retrying', 'dead', 'split', 'cancelled', 'invalidated']
const FAILURE_CLASSES = ['transient', 'timeout', 'too-big', 'unprovable', 'invalid-output', 'lease-expired', 'bad-input']

/** The OpenAPI document. */
export function openApiDocument(): Record<string, unknown> {
  return {
    openapi: '3.1.0',
    info: {
      title: 'proofline orchestrator API',
      version: '1',
      description:
        'Status of the pipeline, its blocks, jobs, proposals and workers; Prometheus metrics; the dashboard; and admin actions. Read endpoints are open on the bound interface (api.host, default 127.0.0.1). Every POST needs `Authorization: Bearer <token>` (api.token, or the token written to <dataDir>/api.json) and is refused with 401 without it.',
    },
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      schemas: {
        Error: { type: 'object', required: ['error'], properties: { error: { type: 'string' } } },
        JobState: { type: 'string', enum: JOB_STATES },
        FailureClass: { type: 'string', enum: FAILURE_CLASSES },
        ArtifactRef: { type: 'object', properties: { key: { type: 'string' }, sha256: { type: 'string' }, size: { type: 'integer' } } },
        Job: {
          type: 'object',
          description: 'A job as stored (times in ms since epoch).',
          properties: {
            id: { type: 'string', description: '<stage>:<first>-<last>:<digest>' },
            stage: { type: 'string' },
            first: { type: 'integer' },
            last: { type: 'integer' },
            lastHash: { type: 'string' },
            programId: { type: 'string' },
            state: ref('JobState'),
            attempt: { type: 'integer' },
            maxAttempts: { type: 'integer' },
            cost: { type: 'number' },
            capacity: { type: ['number', 'null'] },
            overCapacity: { type: 'boolean' },
            parentId: { type: ['string', 'null'] },
            result: { type: ['object', 'null'], properties: { proof: ref('ArtifactRef'), output: { type: 'object' } } },
            failureClass: { oneOf: [ref('FailureClass'), { type: 'null' }] },
            lastError: { type: ['string', 'null'] },
            leaseExpiresAt: { type: ['integer', 'null'] },
            heartbeatAt: { type: ['integer', 'null'] },
            notBefore: { type: ['integer', 'null'] },
            dispatchedAttempt: { type: 'integer' },
            resultPublished: { type: 'boolean' },
            createdAt: { type: 'integer' },
            updatedAt: { type: 'integer' },
          },
        },
        Attempt: {
          type: 'object',
          properties: {
            jobId: { type: 'string' },
            attempt: { type: 'integer' },
            workerId: { type: ['string', 'null'] },
            startedAt: { type: ['integer', 'null'] },
            endedAt: { type: ['integer', 'null'] },
            outcome: { type: 'string', enum: ['running', 'succeeded', 'failed', 'stale', 'rejected'] },
            failureClass: { oneOf: [ref('FailureClass'), { type: 'null' }] },
            error: { type: ['string', 'null'] },
            stderrTail: { type: ['string', 'null'], description: 'The last bytes the executor wrote to stderr' },
            durationMs: { type: ['integer', 'null'] },
          },
        },
        Event: {
          type: 'object',
          properties: {
            at: { type: 'integer' },
            kind: { type: 'string', enum: ['dead-letter', 'rejected-output', 'stale-result', 'split', 'retry', 'lease-expired', 'cancelled', 'invalidated', 'over-capacity', 'overflow', 'alert', 'admin', 'shadow'] },
            jobId: { type: ['string', 'null'] },
            message: { type: 'string' },
            details: { type: 'object' },
          },
        },
        Proposal: {
          type: 'object',
          description: 'A proposal confirmed on L1 (wei and L1 numbers as decimal strings).',
          properties: {
            l2Block: { type: 'integer' },
            first: { type: 'integer' },
            outputRoot: { type: 'string' },
            txHash: { type: 'string' },
            l1Block: { type: 'string' },
            gasUsed: { type: 'string' },
            effectiveGasPrice: { type: 'string' },
            verifier: { type: 'string' },
            jobId: { type: 'string' },
            proofBytes: { type: 'integer' },
            proposedAt: { type: 'integer' },
          },
        },
        Stage: {
          type: 'object',
          properties: {
            name: { type: 'string' },
            input: { type: 'string' },
            output: { type: 'string' },
            executor: { type: 'string' },
            inProcess: { type: 'boolean' },
            paused: { type: 'boolean' },
            jobs: { type: 'object', additionalProperties: { type: 'integer' }, description: 'count by job state' },
            openInputs: { type: ['integer', 'null'] },
            queued: { type: 'integer' },
            oldestPendingAgeMs: { type: ['number', 'null'] },
            coveredTo: { type: ['integer', 'null'], description: 'every block from the start to this one is covered by succeeded jobs' },
            lagBlocks: { type: ['integer', 'null'] },
            lagSeconds: { type: ['number', 'null'] },
            utilization: { type: ['number', 'null'], description: 'useful / paid prover capacity since start' },
          },
        },
        Worker: {
          type: 'object',
          properties: {
            workerId: { type: 'string' },
            stage: { type: 'string' },
            pool: { type: ['string', 'null'] },
            state: { type: 'string', enum: ['running', 'draining', 'drained', 'stopped', 'gone'] },
            running: { type: 'array', items: { type: 'object', properties: { jobId: { type: 'string' }, attempt: { type: 'integer' }, first: { type: 'integer' }, last: { type: 'integer' }, startedAt: { type: 'integer' } } } },
            concurrency: { type: 'integer' },
            labels: { type: 'array', items: { type: 'string' } },
            lastSeenAt: { type: 'integer' },
            attempts: { type: 'object', properties: { succeeded: { type: 'integer' }, failed: { type: 'integer' }, rejected: { type: 'integer' }, stale: { type: 'integer' } } },
            successRate: { type: ['number', 'null'] },
          },
        },
        Pipeline: {
          type: 'object',
          description: 'The pipeline at a glance (at most api.snapshotMaxAgeMs old).',
          properties: {
            at: { type: 'integer' },
            name: { type: 'string' },
            orchestrator: { type: 'string', enum: ['starting', 'running', 'stopping', 'stopped'] },
            stages: { type: 'array', items: ref('Stage') },
            blocks: { type: 'object', properties: { start: { type: 'integer' }, head: { type: ['integer', 'null'] }, seen: { type: ['integer', 'null'] }, seenCount: { type: 'integer' }, proposed: { type: ['integer', 'null'] } } },
            lag: { type: 'object', properties: { blocks: { type: ['integer', 'null'] }, seconds: { type: ['number', 'null'] }, to: { type: 'string' } } },
            proposer: {
              type: ['object', 'null'],
              properties: {
                address: { type: 'string' },
                oracle: { type: 'string' },
                balanceWei: { type: ['string', 'null'] },
                feesWei: { type: 'string' },
                confirmed: { type: 'integer' },
                inFlight: { type: 'integer' },
                refused: { type: 'integer' },
                rejected: { type: 'integer' },
                lastProposal: { type: ['object', 'null'] },
              },
            },
            workers: { type: 'array', items: ref('Worker') },
            failures: { type: 'object', properties: { byClass: { type: 'object', additionalProperties: { type: 'integer' } }, recent: { type: 'array', items: { type: 'object' } } } },
          },
        },
        ControlResult: {
          type: 'object',
          properties: { ok: { type: 'boolean' }, stage: { type: 'string' }, paused: { type: 'boolean' }, jobs: { type: 'integer', description: 'pause: queued attempts withdrawn; resume: jobs published' }, error: { type: 'string' } },
        },
      },
    },
    paths: {
      '/healthz': { get: { summary: 'Liveness', responses: { 200: json({ type: 'object', properties: { ok: { type: 'boolean' }, orchestrator: { type: 'string' } } }) } } },
      '/status': {
        get: {
          summary: 'Run summary (continuity check over every job), job counts, open collector inputs, paused stages, and the pipeline snapshot',
          description: 'The summary scans every job; prefer /pipeline for frequent polling.',
          responses: { 200: json({ type: 'object', properties: { summary: { type: ['object', 'null'] }, jobs: { type: 'object' }, openItems: { type: 'object' }, state: { type: 'string' }, paused: { type: 'array', items: { type: 'string' } }, pipeline: ref('Pipeline') } }) },
        },
      },
      '/pipeline': { get: { summary: 'The pipeline at a glance: stages, heights, lag, proposer, workers, failures', responses: { 200: json(ref('Pipeline')) } } },
      '/history': {
        get: {
          summary: 'Samples taken every api.sampleIntervalMs: heights, throughput (blocks/s per stage), latency (job created → succeeded, ms), lag, failures',
          responses: { 200: json({ type: 'object', properties: { samples: { type: 'array', items: { type: 'object' } } } }) },
        },
      },
      '/timeline': {
        get: {
          summary: 'The block timeline: for the last N blocks seen, what covers them in each lane (seen, each stage, proposed), and how far each range of the first stage got',
          parameters: [queryParam('blocks', 'window size in blocks (default 64, max 1000)', 'integer')],
          responses: { 200: json({ type: 'object', properties: { from: { type: 'integer' }, to: { type: 'integer' }, head: { type: ['integer', 'null'] }, lanes: { type: 'array' }, ranges: { type: 'array' } } }) },
        },
      },
      '/workers': { get: { summary: 'Workers from their presence reports, with attempt outcomes and success rate', responses: { 200: json({ type: 'object', properties: { workers: { type: 'array', items: ref('Worker') } } }) } } },
      '/events': {
        get: {
          summary: 'Operational events, newest first',
          parameters: [queryParam('kind', 'event kind'), queryParam('limit', 'at most this many (default 100)', 'integer')],
          responses: { 200: json({ type: 'object', properties: { events: { type: 'array', items: ref('Event') } } }) },
        },
      },
      '/proposals': {
        get: {
          summary: 'Proposals: confirmed (newest first), in flight, and refusals/rejections',
          parameters: [queryParam('limit', 'at most this many (default 100)', 'integer')],
          responses: {
            200: json({
              type: 'object',
              properties: {
                enabled: { type: 'boolean' },
                address: { type: 'string' },
                oracle: { type: 'string' },
                confirmed: { type: 'array', items: ref('Proposal') },
                inFlight: { type: 'array', items: { type: 'object' } },
                refusals: { type: 'array', items: { type: 'object' } },
              },
            }),
          },
        },
      },
      '/jobs': {
        get: {
          summary: 'Jobs, most recently updated first',
          parameters: [
            queryParam('stage', 'only this stage'),
            queryParam('state', 'comma-separated job states'),
            queryParam('failed', '1: only failed, retrying and dead jobs'),
            queryParam('limit', 'at most this many (default 100)', 'integer'),
          ],
          responses: { 200: json({ type: 'object', properties: { jobs: { type: 'array', items: ref('Job') } } }), 400: error('Unknown state or bad limit') },
        },
      },
      '/jobs/{id}': {
        get: {
          summary: 'A job with its attempts (worker, outcome, error, stderr tail), its events, and the latest stderr tail',
          parameters: [pathParam('id', 'job id')],
          responses: {
            200: json({
              type: 'object',
              properties: {
                job: ref('Job'),
                attempts: { type: 'array', items: ref('Attempt') },
                events: { type: 'array', items: ref('Event') },
                logTail: { type: ['object', 'null'], properties: { attempt: { type: 'integer' }, worker: { type: ['string', 'null'] }, stderr: { type: 'string' } } },
              },
            }),
            404: error('No such job'),
          },
        },
      },
      '/blocks/{number}': {
        get: {
          summary: 'Where a block is: the block as seen, the jobs of each stage covering it (with their proofs), and the proposal that covers it',
          parameters: [pathParam('number', 'L2 block number', 'integer')],
          responses: {
            200: json({
              type: 'object',
              properties: {
                number: { type: 'integer' },
                status: { type: 'string', description: 'unseen | seen | <stage>:<state> of the furthest stage reached in order | proposed' },
                block: { type: ['object', 'null'] },
                stages: { type: 'array', items: { type: 'object', properties: { stage: { type: 'string' }, jobs: { type: 'array', items: { type: 'object' } } } } },
                proposal: { oneOf: [ref('Proposal'), { type: 'null' }] },
                inFlightProposal: { type: ['object', 'null'] },
              },
            }),
            400: error('Not a block number'),
            404: error('Not seen and not covered by any job'),
          },
        },
      },
      '/metrics': { get: { summary: 'Prometheus metrics (text exposition format); see docs/operations.md (Metrics)', responses: { 200: { description: 'OK', content: { 'text/plain': { schema: { type: 'string' } } } } } } },
      '/openapi.json': { get: { summary: 'This document', responses: { 200: json({ type: 'object' }) } } },
      '/dashboard/': { get: { summary: 'The live dashboard (HTML); / redirects here', responses: { 200: { description: 'OK', content: { 'text/html': { schema: { type: 'string' } } } } } } },
      '/jobs/{id}/requeue': {
        post: {
          summary: 'Give a dead or cancelled job another attempt (published unless its stage is paused)',
          security: [{ bearer: [] }],
          parameters: [pathParam('id', 'job id')],
          responses: adminResponses(json({ type: 'object', properties: { ok: { type: 'boolean' }, jobId: { type: 'string' }, attempt: { type: 'integer' } } })),
        },
      },
      '/jobs/{id}/cancel': {
        post: {
          summary: 'Cancel a pending, retrying, running or failed job: a running attempt is stopped, a queued one skipped; its blocks wait until it is requeued',
          security: [{ bearer: [] }],
          parameters: [pathParam('id', 'job id')],
          responses: adminResponses(json({ type: 'object', properties: { ok: { type: 'boolean' }, jobId: { type: 'string' }, was: ref('JobState'), attempt: { type: 'integer' } } })),
        },
      },
      '/stages/{name}/pause': {
        post: {
          summary: 'Pause a stage: its jobs are no longer published, attempts published but not started are withdrawn; running ones finish. Kept across restarts.',
          security: [{ bearer: [] }],
          parameters: [pathParam('name', 'stage name')],
          responses: adminResponses(json(ref('ControlResult'))),
        },
      },
      '/stages/{name}/resume': {
        post: { summary: 'Resume a paused stage: its unpublished jobs are published now', security: [{ bearer: [] }], parameters: [pathParam('name', 'stage name')], responses: adminResponses(json(ref('ControlResult'))) },
      },
      '/workers/{id}/drain': {
        post: {
          summary: 'Drain a worker: it takes no new jobs, finishes the ones it runs, reports drained (a `proofline worker` process then exits 0)',
          security: [{ bearer: [] }],
          parameters: [pathParam('id', 'worker id (as in /workers)')],
          responses: { 202: json({ type: 'object', properties: { ok: { type: 'boolean' }, workerId: { type: 'string' }, subjects: { type: 'array', items: { type: 'string' } } } }, 'Sent on every stage\'s control subject'), 401: error('No or wrong bearer token'), 503: error('The orchestrator is not running') },
        },
      },
      '/workers/{id}/undrain': {
        post: {
          summary: 'Take a drained (still running) worker back into service',
          security: [{ bearer: [] }],
          parameters: [pathParam('id', 'worker id')],
          responses: { 202: json({ type: 'object', properties: { ok: { type: 'boolean' }, workerId: { type: 'string' }, subjects: { type: 'array', items: { type: 'string' } } } }), 401: error('No or wrong bearer token'), 503: error('The orchestrator is not running') },
        },
      },
    },
  }
}
