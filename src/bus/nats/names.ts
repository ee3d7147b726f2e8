/**
 * How port names map to NATS names. Port subjects and groups are already NATS-safe tokens
 * (see `validate.ts`); these functions still sanitise, so a name NATS would refuse never
 * reaches the server.
 */
import { createHash } from 'node:crypto'

/** The header that carries `OutgoingMessage.notBefore` (ms since epoch, decimal). */
export const NOT_BEFORE_HEADER = 'Proofline-Not-Before'

/** NATS stream names: no `.`, `*`, `>`, whitespace or path separators. */
const STREAM_RE = /^[A-Za-z0-9_-]{1,200}$/

/** Whether `name` is a stream name this adapter accepts. */
export function isValidStreamName(name: string): boolean {
  return typeof name === 'string' && STREAM_RE.test(name)
}

/** The NATS subject of port subject `subject`. */
export function natsSubject(prefix: string, subject: string): string {
  return `${prefix}.${subject}`
}

/**
 * The `Nats-Msg-Id` of message `id` on `subject`. JetStream deduplicates per stream, the
 * port per subject, so the id is scoped by the subject (`/` cannot occur in a subject).
 */
export function natsMsgId(subject: string, id: string): string {
  return `${subject}/${id}`
}

/** The port id back from a `Nats-Msg-Id` (ids published by other clients are kept whole). */
export function portId(subject: string, msgId: string): string {
  const scope = `${subject}/`
  return msgId.startsWith(scope) ? msgId.slice(scope.length) : msgId
}

const clean = (s: string) => s.replace(/[^A-Za-z0-9_-]/g, '_')

/**
 * The durable consumer of (`subject`, `group`): readable (`<group>__<subject with _>`), legal
 * in NATS (no `.`, `*`, `>`, spaces), at most 140 characters, and unique per pair thanks to a
 * hash suffix (`a.b_c` and `a_b.c` read the same once sanitised).
 */
export function consumerName(subject: string, group: string): string {
  const readable = `${clean(group)}__${clean(subject)}`.slice(0, 128)
  const hash = createHash('sha256').update(`${subject}\u0000${group}`).digest('hex').slice(0, 10)
  return `${readable}_${hash}`
}

/** Whether a header is NATS's own (`Nats-*`) rather than the publisher's. */
export function isNatsHeader(key: string): boolean {
  return key.toLowerCase().startsWith('nats-')
}

/** A header value NATS accepts: no CR/LF, bounded length. */
export function headerValue(v: string, max = 2_000): string {
  const flat = v.replace(/[\r\n]+/g, ' ')
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat
}
