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
