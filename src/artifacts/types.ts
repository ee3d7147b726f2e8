import type { ArtifactRef } from '../core/types.js'

/** Content-addressed storage for traces, inputs and proofs. */
export interface ArtifactStore {
  /**
   * Stores `bytes` under `<prefix>/<sha256>` and resolves once durable. Putting the same
   * bytes twice is harmless and returns the same ref.
   */
  put(bytes: Uint8Array, opts?: { prefix?: string; signal?: AbortSignal }): Promise<ArtifactRef>
  /**
   * Reads an artifact and checks its sha256 and size. Throws `ArtifactError` with code
   * `ARTIFACT_NOT_FOUND` (not retryable) or `ARTIFACT_CORRUPT` (not retryable) — a corrupt
   * artifact is never returned.
   */
  get(ref: ArtifactRef, opts?: { signal?: AbortSignal }): Promise<Uint8Array>
  /** Whether an artifact with this key exists (its content is not checked). */
  has(ref: ArtifactRef, opts?: { signal?: AbortSignal }): Promise<boolean>
  /** Releases connections. */
  close(): Promise<void>
}

/**
 * Small named, mutable records (a few KB of JSON) kept beside the artifacts, for state that
 * every dispatcher of a pool must reach while holding no database credentials — e.g. the
 * remote request id of an HTTP prover job (docs/executor-protocol.md, HTTP). Unlike artifacts,
 * a record is found by its name, not by its content.
 */
export interface RecordStore {
  /** Reads a record; `null` when there is none. */
  get(name: string, opts?: { signal?: AbortSignal }): Promise<Uint8Array | null>
  /**
   * Creates or replaces a record and resolves once it is durable. Replacement is atomic: a
   * reader sees the old bytes or the new ones, never a mix. Concurrent writers: last one wins.
   */
  set(name: string, bytes: Uint8Array, opts?: { signal?: AbortSignal }): Promise<void>
  /** Removes a record; removing one that does not exist is not an error. */
  delete(name: string, opts?: { signal?: AbortSignal }): Promise<void>
  /** Releases connections. */
  close(): Promise<void>
}
