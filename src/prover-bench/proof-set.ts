import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { bytesToHex, hexToBytes, type Hex } from 'viem'
import type { BuiltinBackend, BuiltinSetup } from '../backends/builtin/backend.js'
import { withCacheLock } from '../backends/crs/cache-lock.js'
import type { OnProgress, Proof, PublicValues } from '../backends/types.js'
import type { DevBlocks } from './dev-blocks.js'

/**
 * Real proofs made once and cached (a labelled dev tool for tests and the benchmark): range
 * proofs over consecutive slices of a {@link DevBlocks} set, and aggregates over consecutive
 * groups of them. The cache key is everything a proof depends on — both programs' key hashes
 * (circuit + CRS), the CRS, and the blocks — so a changed circuit or CRS proves again, and an
 * unchanged one costs a file read. Proving runs under a cache lock, so parallel test workers
 * wait for one another instead of proving the same set twice at once.
 */

/** A proof as JSON. */
export interface StoredProof {
  program: string
  vkHash: Hex
  bytes: Hex
  publicInputs: Hex[]
  publicValues: PublicValues
}

/** A cached proof set. */
export interface ProofSet {
  format: 'proofline/proof-set@1'
  key: string
  blocksPerRange: number
  aggregateK: number
  /** Range proofs, in block order: range i covers blocks [i·n, (i+1)·n) of the block set. */
  ranges: StoredProof[]
  /** Aggregates, in block order: aggregate j covers ranges [j·K, (j+1)·K). */
  aggregates: StoredProof[]
  programId: Hex
  /** What making the set cost, when it was made (not on a cache hit). */
  timings: { rangeMs: number[]; aggregateMs: number[] }
}

export function storeProof(p: Proof): StoredProof {
  return { program: p.program, vkHash: p.vkHash, bytes: bytesToHex(p.bytes), publicInputs: [...p.publicInputs], publicValues: { ...p.publicValues } }
}

export function loadProof(p: StoredProof): Proof {
  return { program: p.program, vkHash: p.vkHash, bytes: hexToBytes(p.bytes), publicInputs: [...p.publicInputs], publicValues: { ...p.publicValues } }
}

/** Options of {@link proofSet}. */
export interface ProofSetOptions {
  backend: BuiltinBackend
  blocks: DevBlocks
  cacheDir: string
  /** Blocks per range proof (must be the backend's). */
  blocksPerRange: number
  /** Range proofs per aggregate (must be the backend's). */
  aggregateK: number
  /** Aggregates to make (each over K ranges of n blocks: the block set must hold aggregates·K·n blocks). */
  aggregates: number
  signal?: AbortSignal
  onProgress?: OnProgress
}

/** The cache key of a proof set. */
export function proofSetKey(setup: BuiltinSetup, blocks: DevBlocks, n: number, k: number, aggregates: number): string {
  return createHash('sha256')
    .update(JSON.stringify(['proof-set@1', setup.range.vkHash, setup.aggregate.vkHash, setup.crs.g1Sha256, blocks.sha256, n, k, aggregates]))
    .digest('hex')
}

/** The proof set for these programs and blocks: from the cache, or proven once and cached. */
export async function proofSet(opts: ProofSetOptions): Promise<ProofSet> {
  const { backend, blocks, blocksPerRange: n, aggregateK: k, aggregates } = opts
  const need = aggregates * k * n
  if (blocks.blocks.length < need) throw new RangeError(`a proof set of ${aggregates} aggregates × ${k} ranges × ${n} blocks needs ${need} blocks; the block set has ${blocks.blocks.length}`)
  const setup = await backend.ready({ ...(opts.signal ? { signal: opts.signal } : {}), ...(opts.onProgress ? { onProgress: opts.onProgress } : {}) })
  if (setup.range.capacity !== n || setup.aggregate.capacity !== k) {
    throw new RangeError(`the backend proves ${setup.range.capacity} blocks per range and ${setup.aggregate.capacity} ranges per aggregate, not ${n} and ${k}`)
  }
  const key = proofSetKey(setup, blocks, n, k, aggregates)
  const dir = join(opts.cacheDir, 'fixtures')
  const file = join(dir, `proof-set-${key.slice(0, 32)}.json`)
  const read = async (): Promise<ProofSet> => JSON.parse(await readFile(file, 'utf8')) as ProofSet
  if (existsSync(file)) return read()
  await mkdir(dir, { recursive: true })
  const say = opts.onProgress ?? (() => {})
  const po = { ...(opts.signal ? { signal: opts.signal } : {}), onProgress: say }
  return withCacheLock(file, async () => {
    if (existsSync(file)) return read()
    const ranges: Proof[] = []
    const timings: ProofSet['timings'] = { rangeMs: [], aggregateMs: [] }
    for (let i = 0; i < aggregates * k; i++) {
      say(`proof set: range ${i + 1}/${aggregates * k}…`)
      const started = performance.now()
      ranges.push(await backend.prove({ blocks: blocks.blocks.slice(i * n, (i + 1) * n), chainConfigHash: blocks.chainConfigHash }, po))
      timings.rangeMs.push(Math.round(performance.now() - started))
    }
    const aggs: Proof[] = []
    for (let j = 0; j < aggregates; j++) {
      say(`proof set: aggregate ${j + 1}/${aggregates}…`)
      const started = performance.now()
      aggs.push(await backend.aggregate(ranges.slice(j * k, (j + 1) * k), po))
      timings.aggregateMs.push(Math.round(performance.now() - started))
    }
    const set: ProofSet = { format: 'proofline/proof-set@1', key, blocksPerRange: n, aggregateK: k, ranges: ranges.map(storeProof), aggregates: aggs.map(storeProof), programId: setup.programId, timings }
    const tmp = `${file}.${process.pid}.tmp`
    await writeFile(tmp, JSON.stringify(set))
    await rename(tmp, file)
    return set
  }, opts.signal ? { signal: opts.signal } : {})
}

/** One proof, made once by `make` and cached under `<cacheDir>/fixtures/proof-<name>-<key>.json` (key: whatever it depends on). */
export async function cachedProof(cacheDir: string, name: string, key: readonly unknown[], make: () => Promise<Proof>): Promise<Proof> {
  const hash = createHash('sha256').update(JSON.stringify(['proof@1', name, ...key])).digest('hex').slice(0, 32)
  const dir = join(cacheDir, 'fixtures')
  const file = join(dir, `proof-${name}-${hash}.json`)
  const read = async (): Promise<Proof> => loadProof(JSON.parse(await readFile(file, 'utf8')) as StoredProof)
  if (existsSync(file)) return read()
  await mkdir(dir, { recursive: true })
  return withCacheLock(file, async () => {
    if (existsSync(file)) return read()
    const proof = await make()
    const tmp = `${file}.${process.pid}.tmp`
    await writeFile(tmp, JSON.stringify(storeProof(proof)))
    await rename(tmp, file)
    return proof
  })
}
