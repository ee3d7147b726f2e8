import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  jetstream,
  JetStreamApiError,
  jetstreamManager,
  ReplayPolicy,
  RetentionPolicy,
  StorageType,
  type Consumer,
  type ConsumerConfig,
  type JetStreamClient,
  type JetStreamManager,
  type StreamConfig,
  type StreamInfo,
} from '@nats-io/jetstream'
import { ClosedConnectionError, DrainingConnectionError, headers as natsHeaders, nanos, type MsgHdrs, type NatsConnection } from '@nats-io/nats-core'
import { connect } from '@nats-io/transport-node'
import { BusError, errorMessage } from '../../core/errors.js'
import { consoleLogger, runConsumer, type BusLogger } from '../consumer.js'
import { DEAD_LETTER_HEADERS, deadLetterId, deadLetterSubject, type Bus, type ConsumeOptions, type Handler, type OutgoingMessage } from '../types.js'
import { abortError, checkGroup, checkSubject, closedError, encodeMessage, resolveConsumeOptions } from '../validate.js'
import { consumerName, headerValue, isNatsHeader, isValidStreamName, natsMsgId, natsSubject, NOT_BEFORE_HEADER } from './names.js'
import { HoldCounter, PullStore, type NatsClaim } from './pull-store.js'

/** Options of {@link natsBus}. */
export interface NatsBusOptions {
  /** NATS server URL(s), e.g. `nats://10.0.0.5:4222` or `['nats://a:4222', 'nats://b:4222']`. */
  servers: string | string[]
  /** The JetStream stream holding every subject of this bus. @default 'PROOFLINE' */
  stream?: string
  /** Port subject `jobs.range` is NATS subject `<subjectPrefix>.jobs.range`; the stream covers `<subjectPrefix>.>`. @default 'proofline' */
  subjectPrefix?: string
  /**
   * How long JetStream remembers a message id for dedupe (the stream's `duplicate_window`).
   * Applied when the stream is created, and on open whenever it is given explicitly.
   * @default 600000
   */
  duplicateWindowMs?: number
  /** Stream replicas (3 in production clusters). Applied on create, and on open when given. @default 1 */
  replicas?: number
  /**
   * Maximum age of stream messages (`max_age`); 0 keeps them until deleted by other limits.
   * Must be at least `duplicateWindowMs`. Applied on create, and on open when given. @default 0
   */
  maxAgeMs?: number
  /** Connection name, shown by the server's monitoring. @default 'proofline' */
  name?: string
  /** Credentials, when the server requires them. */
  auth?: { token: string } | { user: string; pass: string }
  /** How long a publish waits for its PubAck (and a management call for its answer). @default 5000 */
  timeoutMs?: number
  /** Where connection events and background failures are reported. @default console */
  logger?: BusLogger
}

/** Expiry of one pull request: bounds how long a lost pull (server restart) can go unnoticed. */
const PULL_EXPIRES_MS = 5_000
/** Reconnect backoff bounds: retry fast after a blip, then every few seconds during an outage. */
const RECONNECT_MIN_MS = 250
const RECONNECT_MAX_MS = 5_000

const encoder = new TextEncoder()

function unavailable(what: string, err: unknown, hint = ''): BusError {
  return new BusError('BUS_UNAVAILABLE', `nats bus: ${what} failed: ${errorMessage(err)}${hint}`, { retryable: true, cause: err })
}

function invalid(message: string, details: Record<string, unknown> = {}, cause?: unknown): BusError {
  return new BusError('BUS_INVALID_ARGUMENT', message, { retryable: false, details, cause })
}

function misconfigured(message: string, details: Record<string, unknown> = {}, cause?: unknown): BusError {
  return new BusError('BUS_MISCONFIGURED', message, { retryable: false, details, cause })
}

function checkOptionalInt(name: string, v: number | undefined, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (v !== undefined && (!Number.isSafeInteger(v) || v < min || v > max)) {
    throw invalid(`natsBus option ${name} must be an integer between ${min} and ${max}, got ${String(v)}`, { [name]: v })
  }
}

/**
 * The bus over NATS JetStream (nats-server 2.9 or later): one stream with limits retention
 * covering `<subjectPrefix>.>`, one durable pull consumer per (subject, group). Connects and
 * creates or updates the stream before resolving; rejects with a retryable `BUS_UNAVAILABLE`
 * when the server cannot be reached. The connection reconnects forever; consumers resume by
 * themselves after an outage, publishes during one reject with `BUS_UNAVAILABLE`.
 * See docs/bus-nats.md.
 */
export async function natsBus(opts: NatsBusOptions): Promise<Bus> {
  const stream = opts.stream ?? 'PROOFLINE'
  const prefix = opts.subjectPrefix ?? 'proofline'
  const timeoutMs = opts.timeoutMs ?? 5_000
  const logger = opts.logger ?? consoleLogger
  const servers = opts.servers
  if (!isValidStreamName(stream)) throw invalid(`natsBus option stream ${JSON.stringify(stream)} is invalid: use letters, digits, '_' and '-' (e.g. "PROOFLINE")`, { stream })
  try {
    checkSubject(prefix)
  } catch (err) {
    throw invalid(`natsBus option subjectPrefix ${JSON.stringify(prefix)} is invalid: use dot-separated tokens of letters, digits, '_' and '-'`, { subjectPrefix: prefix }, err)
  }
  if (typeof servers !== 'string' && (!Array.isArray(servers) || servers.length === 0)) throw invalid('natsBus option servers must be a URL or a non-empty list of URLs')
  checkOptionalInt('duplicateWindowMs', opts.duplicateWindowMs, 1_000)
  checkOptionalInt('replicas', opts.replicas, 1, 5)
  checkOptionalInt('maxAgeMs', opts.maxAgeMs, 0)
  checkOptionalInt('timeoutMs', opts.timeoutMs, 100)
  const duplicateWindowMs = opts.duplicateWindowMs ?? 600_000
  if (opts.maxAgeMs !== undefined && opts.maxAgeMs > 0 && opts.maxAgeMs < duplicateWindowMs) {
    throw invalid(`natsBus option maxAgeMs (${opts.maxAgeMs}) must be 0 or at least duplicateWindowMs (${duplicateWindowMs})`)
  }
  const where = ` (servers ${JSON.stringify(servers)}); check that nats-server runs there with JetStream enabled (-js)`

  // Backoff grows with the length of the outage, not the number of calls (the client asks
  // for the delay on every pass of its dial loop).
  let outageSince: number | null = null
  const reconnectDelay = () => {
    outageSince ??= Date.now()
    const base = Math.min(RECONNECT_MAX_MS, Math.max(RECONNECT_MIN_MS, (Date.now() - outageSince) / 4))
    return Math.round(base * (0.8 + Math.random() * 0.4))
  }

  let nc: NatsConnection
  try {
    nc = await connect({
      servers,
      name: opts.name ?? 'proofline',
      waitOnFirstConnect: false,
      reconnect: true,
      maxReconnectAttempts: -1,
      reconnectDelayHandler: reconnectDelay,
      pingInterval: 10_000,
      maxPingOut: 3,
      timeout: timeoutMs,
      ...(opts.auth === undefined ? {} : 'token' in opts.auth ? { token: opts.auth.token } : { user: opts.auth.user, pass: opts.auth.pass }),
    })
  } catch (err) {
    throw unavailable('connecting', err, where)
  }

  let jsm: JetStreamManager
  let js: JetStreamClient
  try {
    jsm = await jetstreamManager(nc, { timeout: timeoutMs })
    js = jetstream(nc, { timeout: timeoutMs })
  } catch (err) {
    await nc.close().catch(() => {})
    throw unavailable('opening JetStream', err, where)
  }

  const wanted: Partial<StreamConfig> = {
    ...(opts.duplicateWindowMs === undefined ? {} : { duplicate_window: nanos(opts.duplicateWindowMs) }),
    ...(opts.replicas === undefined ? {} : { num_replicas: opts.replicas }),
    ...(opts.maxAgeMs === undefined ? {} : { max_age: nanos(opts.maxAgeMs) }),
  }

  const ensureStream = async (): Promise<void> => {
    const subjects = `${prefix}.>`
    let info: StreamInfo | null = null
    try {
      info = await jsm.streams.info(stream)
    } catch (err) {
      if (!/stream not found/i.test(errorMessage(err))) throw unavailable(`reading stream ${stream}`, err, where)
    }
    if (info === null) {
      const config: Partial<StreamConfig> & { name: string } = {
        name: stream,
        description: 'proofline message bus',
        subjects: [subjects],
        retention: RetentionPolicy.Limits,
        storage: StorageType.File,
        discard: DiscardPolicy.Old,
        num_replicas: opts.replicas ?? 1,
        duplicate_window: nanos(duplicateWindowMs),
        max_age: nanos(opts.maxAgeMs ?? 0),
      }
      try {
        await jsm.streams.add(config)
        return
      } catch (err) {
        // Another process may have created it first; fall through to the update path.
        if (!/already in use/i.test(errorMessage(err))) throw streamError('creating', err)
        info = await jsm.streams.info(stream).catch((e: unknown) => {
          throw unavailable(`reading stream ${stream}`, e, where)
        })
      }
    }
    const cfg = info.config
    if (cfg.retention !== RetentionPolicy.Limits) {
      throw misconfigured(
        `NATS stream ${stream} has ${cfg.retention} retention; the bus needs limits retention (work-queue retention refuses overlapping consumers and interest retention drops what current groups acked, so new groups would miss it). Delete the stream or set natsBus option stream to another name`,
        { stream, retention: cfg.retention },
      )
    }
    if (cfg.storage !== StorageType.File) logger.warn({ stream, storage: cfg.storage }, 'bus: the NATS stream uses memory storage; messages do not survive a server restart')
    const update: Partial<StreamConfig> = {}
    const current = cfg.subjects ?? []
    if (!current.includes(subjects)) update.subjects = [...current, subjects]
    if (opts.duplicateWindowMs === undefined && cfg.duplicate_window < nanos(600_000)) {
      logger.warn({ stream, duplicateWindowMs: cfg.duplicate_window / 1e6 }, 'bus: the NATS stream dedupes ids for less than 10 minutes; the bus port promises at least 10')
    }
    for (const [k, v] of Object.entries(wanted) as Array<[keyof StreamConfig, unknown]>) {
      if (cfg[k] !== v) Object.assign(update, { [k]: v })
    }
    if (Object.keys(update).length === 0) return
    try {
      await jsm.streams.update(stream, update)
    } catch (err) {
      throw streamError('updating', err)
    }
  }

  const streamError = (what: string, err: unknown): BusError =>
    err instanceof JetStreamApiError
      ? misconfigured(`nats bus: ${what} stream ${stream} (subjects ${prefix}.>) was refused: ${errorMessage(err)}. Check the natsBus options stream, subjectPrefix, replicas and maxAgeMs (another stream may already cover these subjects)`, { stream }, err)
      : unavailable(`${what} stream ${stream}`, err, where)

  try {
    await ensureStream()
  } catch (err) {
    await nc.close().catch(() => {})
    throw err
  }

  const closing = new AbortController()
  let closeOnce: Promise<void> | null = null
  let connected = true
  const holds = new HoldCounter()
  /** Publishes awaiting their PubAck; close() waits for them. */
  const inflight = new Set<Promise<unknown>>()

  const watchStatus = (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') {
        connected = false
        outageSince ??= Date.now()
        if (!closing.signal.aborted) logger.warn({ server: s.server }, 'bus: disconnected from nats-server; reconnecting')
      } else if (s.type === 'reconnect') {
        connected = true
        outageSince = null
        logger.warn({ server: s.server }, 'bus: reconnected to nats-server')
      }
    }
  })().catch((err: unknown) => logger.warn({ err }, 'bus: watching the NATS connection failed'))
  void nc.closed().then((err) => {
    if (!closing.signal.aborted) logger.warn({ err }, 'bus: the NATS connection closed for good (e.g. rejected credentials); open a new bus')
  })

  /** Publishes a payload with a scoped msg id; resolves with the PubAck's duplicate flag. */
  const publishRaw = (subject: string, id: string, payload: Uint8Array, h: MsgHdrs, signal?: AbortSignal): Promise<{ duplicate: boolean }> => {
    if (closing.signal.aborted) return Promise.reject(closedError())
    if (signal?.aborted === true) return Promise.reject(abortError(signal))
    const max = nc.info?.max_payload
    if (max !== undefined && payload.length > max) {
      return Promise.reject(invalid(`message ${id} on ${subject} is ${payload.length} bytes, over the server's max_payload (${max}); put large data in the artifact store and publish a reference`, { subject, id }))
    }
    if (!connected) return Promise.reject(unavailable(`publishing ${id} to ${subject}`, new Error('not connected to nats-server'), where))
    const ack = js.publish(natsSubject(prefix, subject), payload, { msgID: natsMsgId(subject, id), headers: h, timeout: timeoutMs }).then(
      (pa) => ({ duplicate: pa.duplicate }),
      (err: unknown) => {
        if (err instanceof ClosedConnectionError || err instanceof DrainingConnectionError) throw closing.signal.aborted ? closedError() : unavailable(`publishing ${id} to ${subject}`, err, where)
        if (err instanceof JetStreamApiError) {
          throw new BusError('BUS_PUBLISH_REJECTED', `nats bus: stream ${stream} refused ${id} on ${subject}: ${errorMessage(err)}`, { retryable: true, cause: err })
        }
        throw unavailable(`publishing ${id} to ${subject}`, err, where)
      },
    )
    inflight.add(ack)
    const forget = () => inflight.delete(ack)
    ack.then(forget, forget)
    if (signal === undefined) return ack
    return new Promise((resolve, reject) => {
      const onAbort = () => reject(abortError(signal))
      signal.addEventListener('abort', onAbort, { once: true })
      void ack.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort))
    })
  }

  const deadLetter = async (c: NatsClaim, group: string, reason: string, deliveredCount: number): Promise<void> => {
    const h = natsHeaders()
    for (const [k, v] of Object.entries(c.headers)) h.set(k, v)
    h.set(DEAD_LETTER_HEADERS.reason, headerValue(reason))
    h.set(DEAD_LETTER_HEADERS.subject, c.subject)
    h.set(DEAD_LETTER_HEADERS.group, group)
    h.set(DEAD_LETTER_HEADERS.id, headerValue(c.id))
    h.set(DEAD_LETTER_HEADERS.deliveryCount, String(deliveredCount))
    await publishRaw(deadLetterSubject(c.subject), deadLetterId(group, c.id), c.payload, h)
    try {
      // Plain term(): nats-server 2.9 does not understand `+TERM <reason>`.
      c.msg.term()
    } catch (err) {
      throw unavailable(`terminating ${c.id} after dead-lettering it`, err)
    }
  }

  const consumerConfig = (subject: string, group: string, name: string, ackWaitMs: number): Partial<ConsumerConfig> => ({
    durable_name: name,
    description: `proofline group ${group} on ${subject}`,
    filter_subject: natsSubject(prefix, subject),
    ack_policy: AckPolicy.Explicit,
    ack_wait: nanos(ackWaitMs),
    // The consume loop enforces maxDeliver and dead-letters on the delivery after the last
    // one. A server-side max_deliver would stop redelivering a message whose last lease
    // expired and leave it stuck in the stream instead of dead-lettered.
    max_deliver: -1,
    // Messages waiting on a nak delay (retryLater, notBefore) count as ack-pending; with the
    // default cap (1000) a backlog of delayed messages would stall the group. Our pulls only
    // ask for free handler slots, so the cap adds no flow control.
    max_ack_pending: -1,
    deliver_policy: DeliverPolicy.All,
    replay_policy: ReplayPolicy.Instant,
  })

  const openConsumer = async (subject: string, group: string, name: string, ackWaitMs: number, recreate: boolean): Promise<Consumer> => {
    if (!connected) throw unavailable(`creating consumer ${name}`, new Error('not connected to nats-server'), where)
    if (recreate) await ensureStream()
    try {
      // On 2.9 adding an existing durable with a different config updates it (ack wait).
      await jsm.consumers.add(stream, consumerConfig(subject, group, name, ackWaitMs))
      return await js.consumers.get(stream, name)
    } catch (err) {
      if (err instanceof JetStreamApiError && !/not found/i.test(errorMessage(err))) {
        throw misconfigured(`nats bus: creating consumer ${name} on stream ${stream} was refused: ${errorMessage(err)}`, { stream, consumer: name }, err)
      }
      throw unavailable(`creating consumer ${name}`, err, where)
    }
  }

  return {
    async publish<T>(subject: string, msg: OutgoingMessage<T>, popts?: { signal?: AbortSignal }): Promise<{ duplicate: boolean }> {
      if (closing.signal.aborted) throw closedError()
      const json = encodeMessage(subject, msg)
      if (/[\r\n]/.test(msg.id)) throw invalid(`message id ${JSON.stringify(msg.id)} contains a line break, which a NATS header (Nats-Msg-Id) cannot carry`, { subject, id: msg.id })
      const h = natsHeaders()
      try {
        for (const [k, v] of Object.entries(msg.headers ?? {})) {
          if (isNatsHeader(k) || k.toLowerCase() === NOT_BEFORE_HEADER.toLowerCase()) {
            throw invalid(`message ${msg.id}: header ${JSON.stringify(k)} is reserved (Nats-* and ${NOT_BEFORE_HEADER}); rename it`, { subject, id: msg.id })
          }
          h.set(k, v)
        }
      } catch (err) {
        if (err instanceof BusError) throw err
        throw invalid(`message ${msg.id}: invalid header (${errorMessage(err)}); header names are printable ASCII without ':' and values have no line breaks`, { subject, id: msg.id }, err)
      }
      if (msg.notBefore !== undefined) h.set(NOT_BEFORE_HEADER, String(Math.ceil(msg.notBefore)))
      return publishRaw(subject, msg.id, encoder.encode(json), h, popts?.signal)
    },

    async consume<T>(subject: string, group: string, handler: Handler<T>, copts: ConsumeOptions): Promise<void> {
      const options = resolveConsumeOptions(copts)
      checkSubject(subject)
      checkGroup(group)
      if (closing.signal.aborted) throw closedError()
      if (options.signal.aborted) return
      const name = consumerName(subject, group)
      // Fail here, not in the loop, when consumption cannot start.
      const first = await openConsumer(subject, group, name, options.ackWaitMs, false)
      let opened = false
      const store = new PullStore({
        subject,
        group,
        consumerName: name,
        open: (recreate) => {
          if (!opened && !recreate) {
            opened = true
            return Promise.resolve(first)
          }
          return openConsumer(subject, group, name, options.ackWaitMs, recreate)
        },
        deadLetter: (c, reason, count) => deadLetter(c, group, reason, count),
        holds,
        signals: [options.signal, closing.signal],
        pullExpiresMs: PULL_EXPIRES_MS,
        logger,
      })
      try {
        await runConsumer({
          store,
          handler: handler as Handler<unknown>,
          options,
          closed: closing.signal,
          subscribe: () => () => {},
          pollIntervalMs: null,
          logger,
          subject,
          group,
        })
      } finally {
        await store.stop()
      }
    },

    close(): Promise<void> {
      closeOnce ??= (async () => {
        closing.abort()
        while (inflight.size > 0) await Promise.allSettled([...inflight])
        // Draining flushes acks and naks, but waits for the server: not during an outage, and not forever.
        let drained = false
        if (connected) {
          let timer: NodeJS.Timeout | undefined
          drained = await Promise.race([
            nc.drain().then(() => true, () => false),
            new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
          ])
          clearTimeout(timer)
        }
        if (!drained) await nc.close().catch(() => {})
        await watchStatus
      })()
      return closeOnce
    },
  }
}
