import { createHash } from 'node:crypto'

/** sha256 of a string or bytes, as lowercase hex without `0x`. */
export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

/** Serialises a JSON value with object keys sorted, so equal content gives equal bytes. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (typeof v === 'bigint') return v.toString()
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      const sorted: Record<string, unknown> = {}
      for (const k of Object.keys(v).sort()) sorted[k] = (v as Record<string, unknown>)[k]
      return sorted
    }
    return v
  })
}

/** What a job proves; equal content gives an equal id, so replays and duplicates are harmless. */
export interface JobIdentity {
  stage: string
  first: number
  last: number
  /** Hash of the last block covered (or of the last input), so a range re-proved after a reorg is a new job. */
  lastHash: string
  /** Program or vkey id of the prover; a different program is different work. */
  programId: string
}

/**
 * A job id readable by people and derived from content:
 * `<stage>:<first>-<last>:<16 hex of sha256(identity)>`.
 */
export function jobId(id: JobIdentity): string {
  const digest = sha256Hex(canonicalJson(id)).slice(0, 16)
  return `${id.stage}:${id.first}-${id.last}:${digest}`
}

/** The bus message id of one attempt of a job. */
export function jobMessageId(job: string, attempt: number): string {
  return `${job}#${attempt}`
}

/** A message id derived from arbitrary content (subject-scoped). */
export function contentId(subject: string, content: unknown): string {
  return `${subject}:${sha256Hex(canonicalJson(content)).slice(0, 24)}`
}
