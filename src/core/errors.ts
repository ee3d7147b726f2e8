/**
 * One error base for the whole project. Every error carries a literal `code`, says
 * explicitly whether retrying can help, and keeps its `cause`.
 */
export interface ProoflineErrorOptions {
  /** Whether the same operation may succeed if tried again. Never guessed: callers decide. */
  retryable: boolean
  /** Structured context for logs and API responses. */
  details?: Record<string, unknown>
  cause?: unknown
}

/** Base class of every error proofline throws on purpose. */
export class ProoflineError extends Error {
  /** A stable, machine-readable code, e.g. `CONFIG_INVALID`. */
  readonly code: string
  /** Whether the failed operation may succeed on retry. */
  readonly retryable: boolean
  readonly details: Record<string, unknown>

  constructor(code: string, message: string, opts: ProoflineErrorOptions) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause })
    this.name = new.target.name
    this.code = code
    this.retryable = opts.retryable
    this.details = opts.details ?? {}
  }

  /** A JSON-safe view for logs, summaries and the API. */
  toJSON(): Record<string, unknown> {
    return { name: this.name, code: this.code, message: this.message, retryable: this.retryable, details: this.details }
  }
}

/** The pipeline file or an env override is invalid. Not retryable: fix the file. */
export class ConfigError extends ProoflineError {
  constructor(message: string, details: Record<string, unknown> = {}, cause?: unknown) {
    super('CONFIG_INVALID', message, { retryable: false, details, cause })
  }
}

/** An artifact is missing or its content does not match its sha256. */
export class ArtifactError extends ProoflineError {
  constructor(code: 'ARTIFACT_NOT_FOUND' | 'ARTIFACT_CORRUPT' | 'ARTIFACT_IO', message: string, opts: ProoflineErrorOptions) {
    super(code, message, opts)
  }
}

/** A state-store operation failed (connection, migration, constraint). */
export class StateError extends ProoflineError {
  constructor(code: string, message: string, opts: ProoflineErrorOptions) {
    super(code, message, opts)
  }
}

/** A bus operation failed (connection, publish not acknowledged). */
export class BusError extends ProoflineError {
  constructor(code: string, message: string, opts: ProoflineErrorOptions) {
    super(code, message, opts)
  }
}

/**
 * How a failed job attempt is treated.
 * - `transient`: retry with backoff, preferably on another worker.
 * - `timeout`: the attempt ran past its deadline and was killed; retried like transient.
 * - `too-big`: the executor asked for the range to be split.
 * - `unprovable`: the input can never be proven; dead-letter and alert, never retry blindly.
 * - `invalid-output`: the executor claimed success but its output failed validation; retried.
 * - `lease-expired`: the worker stopped heartbeating; retried.
 */
/**
 * Why an attempt failed. `bad-input`: the job's own work is fine but one of its inputs (a
 * proof made by an earlier stage) is not; the attempt names those inputs' jobs, which are
 * proved again before the job is retried (src/pipeline/repair.ts).
 */
export type FailureClass = 'transient' | 'timeout' | 'too-big' | 'unprovable' | 'invalid-output' | 'lease-expired' | 'bad-input'

/** Failure classes that are retried (subject to the stage's retry budget). */
export const RETRYABLE_FAILURES: ReadonlySet<FailureClass> = new Set(['transient', 'timeout', 'invalid-output', 'lease-expired'])

/** An executor attempt failed; `failureClass` decides what the orchestrator does next. */
export class ExecutorError extends ProoflineError {
  readonly failureClass: FailureClass
  constructor(failureClass: FailureClass, message: string, details: Record<string, unknown> = {}, cause?: unknown) {
    super(`EXECUTOR_${failureClass.toUpperCase().replace(/-/g, '_')}`, message, {
      retryable: RETRYABLE_FAILURES.has(failureClass),
      details,
      cause,
    })
    this.failureClass = failureClass
  }
}

/** Whether `err` says it may succeed on retry. Unknown errors are treated as retryable infrastructure faults. */
export function isRetryable(err: unknown): boolean {
  return err instanceof ProoflineError ? err.retryable : true
}

/** A short, single-line description of any thrown value, with credentials in URLs masked ({@link redactUrls}). */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return redactUrls(err.message)
  return redactUrls(typeof err === 'string' ? err : String(JSON.stringify(err)))
}

const URL_IN_TEXT = /\b([a-z][a-z0-9+.-]*:\/\/)([^\s/?#@"'<>]*@)?([^\s/?#"'<>]*)([^\s?#"'<>]*)(\?[^\s#"'<>]*)?/gi
/** A path segment that looks like an API key (Infura `/v3/<key>`, Alchemy `/v2/<key>`, QuickNode `/<token>/`). */
const KEY_LIKE_SEGMENT = /^[A-Za-z0-9_-]{20,}$/

/**
 * Masks what may be a credential in every URL of `text`, as third-party errors quote them
 * (viem's "URL: …" lines, driver messages): a userinfo password (or a bare userinfo token), the
 * values of the query string, and path segments that look like API keys. Scheme, host, port
 * and the rest of the path stay, so the message still says which endpoint failed.
 */
export function redactUrls(text: string): string {
  return text.replace(URL_IN_TEXT, (_m, scheme: string, userinfo: string | undefined, host: string, path: string, query: string | undefined) => {
    let user = ''
    if (userinfo !== undefined) {
      const colon = userinfo.indexOf(':')
      user = colon >= 0 ? `${userinfo.slice(0, colon)}:***@` : '***@'
    }
    const p = path
      .split('/')
      .map((seg) => (KEY_LIKE_SEGMENT.test(seg) ? '***' : seg))
      .join('/')
    const q = query === undefined ? '' : query.replace(/=([^&]*)/g, (_v, value: string) => (value === '' ? '=' : '=***'))
    return `${scheme}${user}${host}${p}${q}`
  })
}
