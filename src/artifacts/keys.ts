import { ArtifactError } from '../core/errors.js'
import type { ArtifactRef } from '../core/types.js'

/** The prefix `put` uses when none is given. */
export const DEFAULT_ARTIFACT_PREFIX = 'blobs'

/** sha256 as every ref carries it: 64 lowercase hex characters, no `0x`. */
export const SHA256_HEX = /^[0-9a-f]{64}$/

// A segment starts with a letter or digit, so `.`, `..`, hidden names and option-like names
// (`-x`) are impossible; no separators of any platform, no NUL.
const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/
const MAX_KEY_LENGTH = 1024

function invalidKey(what: 'prefix' | 'key' | 'record name', value: string, why: string): ArtifactError {
  return new ArtifactError('ARTIFACT_IO', `invalid ${what === 'record name' ? '' : 'artifact '}${what} ${JSON.stringify(value)}: ${why}`, {
    retryable: false,
    details: { reason: 'invalid-key', [what]: value },
  })
}

/**
 * Checks a prefix: one or more `/`-separated segments of `[A-Za-z0-9._-]` that start with a
 * letter or digit. Rejects anything that could leave the store (`..`, absolute paths,
 * backslashes, empty segments). Throws a non-retryable `ArtifactError` (`details.reason =
 * 'invalid-key'`).
 */
export function checkPrefix(prefix: string): string {
  if (prefix.length === 0 || prefix.length > MAX_KEY_LENGTH - 65) throw invalidKey('prefix', prefix, 'length must be 1..959')
  for (const segment of prefix.split('/')) {
    if (!SEGMENT.test(segment)) {
      throw invalidKey('prefix', prefix, `segment ${JSON.stringify(segment)} must match ${SEGMENT.source} (no '..', no absolute paths)`)
    }
  }
  return prefix
}

/** Checks a key with the same segment rules as `checkPrefix`, and that it has at least two segments. */
export function checkKey(key: string): string {
  const slash = key.lastIndexOf('/')
  if (slash <= 0 || key.length > MAX_KEY_LENGTH) throw invalidKey('key', key, 'expected <prefix>/<sha256>')
  checkPrefix(key.slice(0, slash))
  const last = key.slice(slash + 1)
  if (!SEGMENT.test(last)) throw invalidKey('key', key, `last segment must match ${SEGMENT.source}`)
  return key
}

/** Checks that a ref is well formed (valid key, sha256 hex, non-negative safe-integer size). */
export function checkRef(ref: ArtifactRef): ArtifactRef {
  checkKey(ref.key)
  if (typeof ref.sha256 !== 'string' || !SHA256_HEX.test(ref.sha256)) {
    throw new ArtifactError('ARTIFACT_IO', `invalid artifact ref for ${ref.key}: sha256 must be 64 lowercase hex characters`, {
      retryable: false,
      details: { reason: 'invalid-ref', key: ref.key, sha256: ref.sha256 },
    })
  }
  if (!Number.isSafeInteger(ref.size) || ref.size < 0) {
    throw new ArtifactError('ARTIFACT_IO', `invalid artifact ref for ${ref.key}: size must be a non-negative integer`, {
      retryable: false,
      details: { reason: 'invalid-ref', key: ref.key, size: ref.size },
    })
  }
  return ref
}

/** The key of content with this sha256 under `prefix`: `<prefix>/<sha256>`. */
export function artifactKey(prefix: string, sha256: string): string {
  return `${checkPrefix(prefix)}/${sha256}`
}

/** The folder (fs) or key namespace (S3) records live in, beside the artifacts' prefixes. */
export const RECORDS_PREFIX = 'records'

/** Checks a record name with the same segment rules as `checkPrefix` (one or more `/`-separated segments). */
export function checkRecordName(name: string): string {
  if (name.length === 0 || name.length > 512) throw invalidKey('record name', name, 'length must be 1..512')
  for (const segment of name.split('/')) {
    if (!SEGMENT.test(segment)) throw invalidKey('record name', name, `segment ${JSON.stringify(segment)} must match ${SEGMENT.source}`)
  }
  return name
}
