import { BusError } from '../core/errors.js'
import type { ConsumeOptions, OutgoingMessage } from './types.js'

// NATS-compatible on purpose: a subject or group accepted by one adapter is accepted by all.
const SUBJECT_RE = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/
const GROUP_RE = /^[A-Za-z0-9_-]+$/
const MAX_NAME_LENGTH = 255

/** Consume options with defaults applied. */
export interface ResolvedConsumeOptions {
  signal: AbortSignal
  concurrency: number
  ackWaitMs: number
  maxDeliver: number
  retryDelayMs: number
}

function invalid(message: string, details: Record<string, unknown>): BusError {
  return new BusError('BUS_INVALID_ARGUMENT', message, { retryable: false, details })
}

/** Throws a non-retryable `BusError` unless `subject` is dot-separated `[A-Za-z0-9_-]` tokens. */
export function checkSubject(subject: string): void {
  if (typeof subject !== 'string' || subject.length > MAX_NAME_LENGTH || !SUBJECT_RE.test(subject)) {
    throw invalid(`bus subject ${JSON.stringify(subject)} is invalid: use dot-separated tokens of letters, digits, '_' and '-' (e.g. "jobs.range")`, { subject })
  }
}

/** Throws a non-retryable `BusError` unless `group` is one `[A-Za-z0-9_-]` token. */
export function checkGroup(group: string): void {
  if (typeof group !== 'string' || group.length > MAX_NAME_LENGTH || !GROUP_RE.test(group)) {
    throw invalid(`bus consumer group ${JSON.stringify(group)} is invalid: use letters, digits, '_' and '-' only (e.g. "dispatcher-range")`, { group })
  }
}

/** Checks a message and returns its data serialised as JSON. */
export function encodeMessage(subject: string, msg: OutgoingMessage<unknown>): string {
  checkSubject(subject)
  if (typeof msg.id !== 'string' || msg.id.length === 0 || msg.id.length > 1024) {
    throw invalid(`message id must be a non-empty string of at most 1024 characters (subject ${subject})`, { subject, id: msg.id })
  }
  if (msg.notBefore !== undefined && !Number.isFinite(msg.notBefore)) {
    throw invalid(`message ${msg.id}: notBefore must be a finite number of ms since epoch`, { subject, id: msg.id })
  }
  if (msg.headers !== undefined) {
    for (const [k, v] of Object.entries(msg.headers)) {
      if (typeof v !== 'string') throw invalid(`message ${msg.id}: header ${JSON.stringify(k)} must be a string`, { subject, id: msg.id })
    }
  }
  let json: string | undefined
  try {
    json = JSON.stringify(msg.data)
  } catch (err) {
    throw new BusError('BUS_INVALID_ARGUMENT', `message ${msg.id} on ${subject}: data is not JSON-serialisable (${(err as Error).message}); convert bigint to string`, {
      retryable: false,
      details: { subject, id: msg.id },
      cause: err,
    })
  }
  return json ?? 'null'
}

function positiveInt(name: string, value: number | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback
  if (!Number.isSafeInteger(value) || value < min) throw invalid(`consume option ${name} must be an integer >= ${min}, got ${value}`, { [name]: value })
  return value
}

/** Applies the documented defaults of `ConsumeOptions` and checks ranges. */
export function resolveConsumeOptions(opts: ConsumeOptions): ResolvedConsumeOptions {
  if (!(opts.signal instanceof AbortSignal)) throw invalid('consume needs opts.signal (an AbortSignal) to stop consuming', {})
  return {
    signal: opts.signal,
    concurrency: positiveInt('concurrency', opts.concurrency, 1, 1),
    ackWaitMs: positiveInt('ackWaitMs', opts.ackWaitMs, 30_000, 1),
    maxDeliver: positiveInt('maxDeliver', opts.maxDeliver, 10, 1),
    retryDelayMs: positiveInt('retryDelayMs', opts.retryDelayMs, 1_000, 0),
  }
}

/** The error a bus operation rejects with after `close()`. */
export function closedError(): BusError {
  return new BusError('BUS_CLOSED', 'the bus is closed; open a new one', { retryable: false })
}

/** The error `publish` rejects with when its signal aborted before the message was stored. */
export function abortError(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('The operation was aborted', 'AbortError')
}
