import { z } from 'zod'
import type { Delivery, Handler } from '../bus/types.js'
import { ProoflineError } from '../core/errors.js'
import type { ControlMessage, EventMessage, JobMessage, ResultMessage } from './messages.js'

/**
 * Decoding of the pipeline's bus messages. The bus delivers whatever JSON was published on a
 * subject — by a worker of another version, a broken one, or anyone with publish rights — so
 * the recorder and the dispatchers check every message's shape before acting on it. An
 * invalid message is a {@link MessageError} (not retryable): it is logged and dead-lettered
 * (`dlq.<subject>`), never applied to a job and never retried.
 *
 * Unknown extra fields are allowed (a newer sender may add some); every field that is read
 * must have its type and range.
 */

/** A bus message that does not have the shape its subject promises. */
export class MessageError extends ProoflineError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super('MESSAGE_INVALID', message, { retryable: false, details })
  }
}

const id = z.string().min(1).max(1024)
const attempt = z.number().int().min(1).max(1_000_000)
const blockNumber = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER)
const artifactRef = z.object({
  key: z.string().min(1).max(1024),
  sha256: z.string().regex(/^[0-9a-f]{64}$/, '64 lowercase hex characters'),
  size: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
})
const text = (max: number) => z.string().max(max)
const failureClass = z.enum(['transient', 'timeout', 'too-big', 'unprovable', 'invalid-output', 'lease-expired', 'bad-input'])

const jobMessage = z
  .object({
    jobId: id,
    stage: z.string().min(1).max(128),
    attempt,
    first: blockNumber,
    last: blockNumber,
    lastHash: text(256),
    programId: text(512),
    inputs: artifactRef,
    avoidWorkers: z.array(text(512)).max(1000),
    requirements: z.object({ labels: z.array(text(256)).max(100), cost: z.number().finite().nonnegative(), programId: text(512) }).optional(),
    pool: z.string().min(1).max(128).optional(),
  })
  .refine((m) => m.first <= m.last, { message: 'first must not be after last', path: ['last'] })

const resultBase = { jobId: id, attempt, workerId: id, durationMs: z.number().finite().nonnegative(), stderrTail: text(1_048_576).optional() }
const resultMessage = z.discriminatedUnion('ok', [
  z.object({ ...resultBase, ok: z.literal(true), output: z.record(z.string(), z.unknown()), proof: artifactRef.optional() }),
  z.object({ ...resultBase, ok: z.literal(false), failureClass, error: text(1_048_576), badInputs: z.array(id).min(1).max(64).optional() }),
])

const eventBase = { jobId: id, attempt, workerId: id, at: z.number().finite().nonnegative() }
const eventMessage = z.discriminatedUnion('type', [
  z.object({ ...eventBase, type: z.enum(['started', 'heartbeat']) }),
  // An executor's observation (a shadow's verdict): recorded as an event, never acted on.
  z.object({ ...eventBase, type: z.literal('observation'), observation: z.object({ kind: z.literal('shadow'), message: text(4096), details: z.record(z.string(), z.unknown()) }) }),
])
const controlMessage = z.object({ type: z.literal('superseded'), jobId: id, attempt })

function decoder<T>(schema: z.ZodType, what: string): (data: unknown) => T {
  return (data) => {
    const r = schema.safeParse(data)
    if (r.success) return r.data as T
    const problems = r.error.issues.slice(0, 5).map((i) => `${i.path.length > 0 ? i.path.join('.') : '(message)'}: ${i.message}`)
    throw new MessageError(`invalid ${what} message: ${problems.join('; ')}`, { problems })
  }
}

/** Checks a `jobs.<stage>` message. Throws {@link MessageError}. */
export const decodeJobMessage: (data: unknown) => JobMessage = decoder(jobMessage, 'job')
/** Checks a `results.<stage>` message. Throws {@link MessageError}. */
export const decodeResultMessage: (data: unknown) => ResultMessage = decoder(resultMessage, 'result')
/** Checks an `events.<stage>` message. Throws {@link MessageError}. */
export const decodeEventMessage: (data: unknown) => EventMessage = decoder(eventMessage, 'event')
/** Checks a `control.<stage>` message. Throws {@link MessageError}. */
export const decodeControlMessage: (data: unknown) => ControlMessage = decoder(controlMessage, 'control')

/** Where an invalid message is reported (pino-compatible). */
export interface DecodeLogger {
  warn(obj: Record<string, unknown>, msg: string): void
}

/**
 * Wraps a handler so it only ever sees messages that `decode` accepts. An invalid message is
 * logged at warn level and dead-lettered with the reason; the handler is not called.
 */
export function decoded<T>(decode: (data: unknown) => T, log: DecodeLogger, handler: Handler<T>): Handler<T> {
  return async (delivery: Delivery<T>) => {
    try {
      decode(delivery.data)
    } catch (err) {
      if (!(err instanceof MessageError)) throw err
      log.warn({ subject: delivery.subject, id: delivery.id, err: err.message }, 'invalid bus message dead-lettered')
      await delivery.giveUp(err.message)
      return
    }
    await handler(delivery)
  }
}
