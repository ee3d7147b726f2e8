import { resolve } from 'node:path'
import type { ArtifactStore } from '../../artifacts/types.js'
import type { ProverConfig } from '../../config/schema.js'
import { defaultCacheDir, resolveCrs } from '../crs/resolve.js'
import { builtinBackend, type BuiltinBackend } from './backend.js'

/**
 * One built-in backend per process and prover settings: the stage executors, the
 * orchestrator's `verify: builtin` and the proposer share its setup (compiled circuits, keys,
 * the in-process EVM verifier) instead of each loading its own.
 */

const shared = new Map<string, Promise<BuiltinBackend>>()

/** Options of {@link sharedBuiltinBackend}. */
export interface SharedBackendOptions {
  /** A pinned development CRS missing locally is fetched from here. */
  artifacts?: ArtifactStore
  /** CRS generation and setup progress. */
  onProgress?: (message: string) => void
}

/** The process's backend for `prover` (created, CRS resolved and set up on first call). */
export function sharedBuiltinBackend(prover: ProverConfig, opts: SharedBackendOptions = {}): Promise<BuiltinBackend> {
  const cacheDir = prover.cacheDir === undefined ? defaultCacheDir() : resolve(prover.cacheDir)
  const { crs } = prover
  const key = JSON.stringify([prover.blocksPerRange, prover.aggregateK, prover.chainConfigHash.toLowerCase(), cacheDir, prover.threads ?? null, crs.kind, crs.points, crs.path ?? null, crs.sha256 ?? null])
  let p = shared.get(key)
  if (p === undefined) {
    p = (async () => {
      const crs = await resolveCrs({
        kind: prover.crs.kind,
        points: prover.crs.points,
        cacheDir,
        ...(prover.crs.path === undefined ? {} : { path: prover.crs.path }),
        ...(prover.crs.sha256 === undefined ? {} : { sha256: prover.crs.sha256 }),
        ...(opts.artifacts ? { artifacts: opts.artifacts } : {}),
        ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
      })
      const backend = builtinBackend({
        crs,
        cacheDir,
        blocksPerRange: prover.blocksPerRange,
        aggregateK: prover.aggregateK,
        ...(prover.threads === undefined ? {} : { threads: prover.threads }),
      })
      await backend.ready(opts.onProgress ? { onProgress: opts.onProgress } : {})
      return backend
    })()
    shared.set(key, p)
    p.catch(() => shared.delete(key))
  }
  return p
}
