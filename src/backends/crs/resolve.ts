import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, open, readFile, rename, stat, writeFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { basename, dirname, join, resolve } from 'node:path'
import type { ArtifactStore } from '../../artifacts/types.js'
import { isDevChain } from '../../chain/anvil.js'
import type { ArtifactRef } from '../../core/types.js'
import { withCacheLock } from './cache-lock.js'
import { CrsError, generateDevCrs } from './dev-crs.js'
import { IGNITION_G1_TAU, IGNITION_G2, type CrsKind, type G2Point, type ResolvedCrs } from './types.js'

/**
 * Where a CRS comes from, and the checks before it is used:
 *
 * - `dev`: `<cacheDir>/crs/dev-<sha256>/` holds `bn254_g1.dat` and `crs.json` (points, sha256,
 *   [tau]·G2); `<cacheDir>/crs/dev.json` names the current one. Without a pin, the current one
 *   is used if it has enough points, otherwise a new one is generated (under a lock) and
 *   becomes current. With a pin (`sha256`), only that CRS is used: from the cache, or fetched
 *   from the artifact store (`crs/<sha256>`, sha256-checked), which is how remote workers get
 *   the orchestrator's CRS.
 * - `ignition`: a folder (or its `bn254_g1.dat`) holding Aztec Ignition's G1 points, checked to
 *   start with G1 and Ignition's [tau]·G1; G2 is Ignition's.
 */

/** The manifest format of a cached CRS. */
export const CRS_MANIFEST_FORMAT = 'proofline/crs@1'

/** The artifact-store prefix CRS files are shared under. */
export const CRS_ARTIFACT_PREFIX = 'crs'

/** `crs.json` next to a cached `bn254_g1.dat`. */
export interface CrsManifest {
  format: typeof CRS_MANIFEST_FORMAT
  kind: CrsKind
  points: number
  g1Sha256: string
  /** [tau]·G2, or null when it is unknown here (a CRS fetched by a worker that only proves). */
  g2: G2Point | null
  createdAt: string
  /** How long generation took, when generated here. */
  generationMs?: number
}

/** Options of {@link resolveCrs}. */
export interface ResolveCrsOptions {
  kind: CrsKind
  /** G1 points needed (circuit size + 1 for the largest circuit). */
  points: number
  /** @default `defaultCacheDir()` */
  cacheDir?: string
  /** `ignition`: the folder holding `bn254_g1.dat`, or the file itself. */
  path?: string
  /** sha256 of `bn254_g1.dat` that must be used (every prover of a pipeline uses the same). */
  sha256?: string
  /** Where a pinned CRS missing from the cache is fetched from. */
  artifacts?: ArtifactStore
  /** Generate a dev CRS when none fits. @default true */
  generate?: boolean
  /** Generation progress (stderr in the CLI). */
  onProgress?: (message: string) => void
  signal?: AbortSignal
}

/** `$PROOFLINE_CACHE_DIR`, else `~/.cache/proofline`. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const dir = env.PROOFLINE_CACHE_DIR
  return dir !== undefined && dir !== '' ? resolve(dir) : join(homedir(), '.cache', 'proofline')
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

async function readManifest(dir: string): Promise<CrsManifest | undefined> {
  try {
    const m = JSON.parse(await readFile(join(dir, 'crs.json'), 'utf8')) as CrsManifest
    if (m.format !== CRS_MANIFEST_FORMAT) return undefined
    const size = (await stat(join(dir, 'bn254_g1.dat'))).size
    return size === m.points * 64 ? m : undefined
  } catch {
    return undefined
  }
}

function resolved(dir: string, m: CrsManifest): ResolvedCrs {
  return { kind: m.kind, dir, points: m.points, g1Sha256: m.g1Sha256, g2: m.g2 }
}

/**
 * Resolves the CRS to prove with: checks, caches, generates or fetches as described above.
 * Throws `CrsError` (`CRS_NOT_FOUND`, `CRS_INVALID`) with what to do next.
 */
export async function resolveCrs(opts: ResolveCrsOptions): Promise<ResolvedCrs> {
  if (opts.kind === 'ignition') return resolveIgnition(opts)
  const cacheDir = opts.cacheDir ?? defaultCacheDir()
  const root = join(cacheDir, 'crs')
  await mkdir(root, { recursive: true })
  const say = opts.onProgress ?? (() => {})

  if (opts.sha256 !== undefined) {
    const pin = opts.sha256.toLowerCase()
    const dir = join(root, `dev-${pin}`)
    return withCacheLock(dir, async () => {
      const have = await readManifest(dir)
      if (have) return checkPoints(resolved(dir, have), opts.points)
      if (!opts.artifacts) {
        throw new CrsError('CRS_NOT_FOUND', `the pinned development CRS ${pin} is not in ${root} and no artifact store was given to fetch it from`, { retryable: false, details: { sha256: pin } })
      }
      const ref: ArtifactRef = { key: `${CRS_ARTIFACT_PREFIX}/${pin}`, sha256: pin, size: opts.points * 64 }
      const found = await opts.artifacts.has(ref, opts.signal ? { signal: opts.signal } : {})
      if (!found) {
        throw new CrsError('CRS_NOT_FOUND', `the pinned development CRS ${pin} is neither in ${root} nor in the artifact store (key ${ref.key}): start the orchestrator first (it publishes its CRS), or fix prover.crs.sha256`, {
          retryable: true,
          details: { sha256: pin, key: ref.key },
        })
      }
      say(`fetching the development CRS ${pin.slice(0, 12)}… from the artifact store`)
      const bytes = await opts.artifacts.get(ref, opts.signal ? { signal: opts.signal } : {})
      await mkdir(dir, { recursive: true })
      await writeAtomic(join(dir, 'bn254_g1.dat'), bytes)
      const manifest: CrsManifest = { format: CRS_MANIFEST_FORMAT, kind: 'dev', points: bytes.length / 64, g1Sha256: pin, g2: null, createdAt: new Date().toISOString() }
      await writeAtomic(join(dir, 'crs.json'), Buffer.from(JSON.stringify(manifest, null, 2)))
      return checkPoints(resolved(dir, manifest), opts.points)
    }, lockOpts(opts))
  }

  const current = join(root, 'dev.json')
  return withCacheLock(join(root, 'dev'), async () => {
    const pointer = await readFile(current, 'utf8').then((t) => JSON.parse(t) as { sha256: string }).catch(() => undefined)
    if (pointer) {
      const dir = join(root, `dev-${pointer.sha256}`)
      const have = await readManifest(dir)
      if (have && have.points >= opts.points && have.g2 !== null) return resolved(dir, have)
    }
    if (opts.generate === false) {
      throw new CrsError('CRS_NOT_FOUND', `no development CRS with ${opts.points} points in ${root}, and generating one is off`, { retryable: false, details: { points: opts.points } })
    }
    const tmpDir = join(root, `dev-new-${process.pid}`)
    await mkdir(tmpDir, { recursive: true })
    say(`generating a development CRS of ${opts.points} points in ${root} (once; later runs reuse it)`)
    let last = 0
    const started = Date.now()
    const gen = await generateDevCrs({
      points: opts.points,
      g1Path: join(tmpDir, 'bn254_g1.dat'),
      ...(opts.signal ? { signal: opts.signal } : {}),
      onProgress: (done, total) => {
        const now = Date.now()
        if (now - last < 2_000 && done < total) return
        last = now
        say(`  development CRS: ${done}/${total} points (${Math.round((100 * done) / total)}%, ${Math.round((now - started) / 1000)} s)`)
      },
    })
    const manifest: CrsManifest = {
      format: CRS_MANIFEST_FORMAT,
      kind: 'dev',
      points: gen.points,
      g1Sha256: gen.g1Sha256,
      g2: gen.g2,
      createdAt: new Date().toISOString(),
      generationMs: gen.durationMs,
    }
    await writeFile(join(tmpDir, 'crs.json'), JSON.stringify(manifest, null, 2))
    const dir = join(root, `dev-${gen.g1Sha256}`)
    await rename(tmpDir, dir)
    await writeAtomic(current, Buffer.from(JSON.stringify({ sha256: gen.g1Sha256 })))
    say(`development CRS ${gen.g1Sha256} ready (${gen.points} points, ${Math.round(gen.durationMs / 1000)} s)`)
    return resolved(dir, manifest)
  }, lockOpts(opts))
}

function lockOpts(opts: ResolveCrsOptions): { signal?: AbortSignal; onWait: (owner: string) => void } {
  return { ...(opts.signal ? { signal: opts.signal } : {}), onWait: (owner) => opts.onProgress?.(`waiting for ${owner} to finish the CRS…`) }
}

function checkPoints<T extends ResolvedCrs>(crs: T, points: number): T {
  if (crs.points < points) {
    throw new CrsError('CRS_INVALID', `the CRS ${crs.g1Sha256} has ${crs.points} points, the circuits need ${points}`, { retryable: false, details: { have: crs.points, need: points } })
  }
  return crs
}

async function writeAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`)
  await writeFile(tmp, bytes)
  await rename(tmp, path)
}

async function resolveIgnition(opts: ResolveCrsOptions): Promise<ResolvedCrs> {
  if (opts.path === undefined) {
    throw new CrsError('CRS_NOT_FOUND', 'prover.crs.kind "ignition" needs prover.crs.path: the folder holding Ignition\'s bn254_g1.dat (e.g. ~/.bb-crs, filled by `bb` where there is internet)', { retryable: false })
  }
  const p = resolve(opts.path)
  const isDir = (await stat(p).catch(() => undefined))?.isDirectory() ?? false
  const file = isDir ? join(p, 'bn254_g1.dat') : p
  const size = (await stat(file).catch(() => undefined))?.size
  if (size === undefined) throw new CrsError('CRS_NOT_FOUND', `no Ignition CRS at ${file}`, { retryable: false, details: { path: file } })
  const points = Math.floor(size / 64)
  if (points < opts.points) {
    throw new CrsError('CRS_INVALID', `the Ignition CRS at ${file} has ${points} points, the circuits need ${opts.points}`, { retryable: false, details: { have: points, need: opts.points } })
  }
  if (basename(file) !== 'bn254_g1.dat') {
    throw new CrsError('CRS_INVALID', `bb reads the CRS from a folder's bn254_g1.dat; ${file} has another name: point prover.crs.path at its folder, named bn254_g1.dat`, { retryable: false })
  }
  const head = Buffer.alloc(128)
  const fh = await open(file, 'r')
  try {
    await fh.read(head, 0, 128, 0)
  } finally {
    await fh.close()
  }
  const word = (at: number): string => `0x${head.subarray(at, at + 32).toString('hex')}`
  const g1ok = BigInt(word(0)) === 1n && BigInt(word(32)) === 2n
  const tauOk = word(64) === IGNITION_G1_TAU[0] && word(96) === IGNITION_G1_TAU[1]
  if (!g1ok || !tauOk) {
    throw new CrsError('CRS_INVALID', `${file} is not Ignition's CRS: its first points are not G1 and Ignition's [tau]·G1`, { retryable: false, details: { path: file } })
  }
  const g1Sha256 = await sha256File(file)
  if (opts.sha256 !== undefined && opts.sha256.toLowerCase() !== g1Sha256) {
    throw new CrsError('CRS_INVALID', `${file} has sha256 ${g1Sha256}, prover.crs.sha256 pins ${opts.sha256}`, { retryable: false, details: { path: file } })
  }
  return { kind: 'ignition', dir: dirname(file), points, g1Sha256, g2: IGNITION_G2 }
}

/**
 * Refuses a development CRS for a chain that is not a dev chain: whoever generated it can
 * forge proofs. Throws `CrsError('CRS_REFUSED')`.
 */
export function checkCrsForChain(crs: Pick<ResolvedCrs, 'kind' | 'g1Sha256'>, chainId: number | bigint, what = 'L1'): void {
  if (crs.kind === 'dev' && !isDevChain(chainId)) {
    throw new CrsError('CRS_REFUSED', `a development CRS (${crs.g1Sha256.slice(0, 12)}…) is refused for ${what} chain id ${chainId}: whoever generated it can forge proofs. Set prover.crs.kind: ignition and prover.crs.path to Ignition's bn254_g1.dat folder`, {
      retryable: false,
      details: { chainId: String(chainId), sha256: crs.g1Sha256 },
    })
  }
}

/** Shares the CRS's G1 file through the artifact store (`crs/<sha256>`), so remote workers prove over the same bytes. */
export async function publishCrs(crs: Pick<ResolvedCrs, 'dir' | 'g1Sha256'>, artifacts: ArtifactStore, opts: { signal?: AbortSignal } = {}): Promise<ArtifactRef> {
  const bytes = await readFile(join(crs.dir, 'bn254_g1.dat'))
  const size = bytes.length
  const ref: ArtifactRef = { key: `${CRS_ARTIFACT_PREFIX}/${crs.g1Sha256}`, sha256: crs.g1Sha256, size }
  if (await artifacts.has(ref, opts)) return ref
  const put = await artifacts.put(bytes, { prefix: CRS_ARTIFACT_PREFIX, ...opts })
  if (put.sha256 !== crs.g1Sha256) throw new CrsError('CRS_INVALID', `the CRS file in ${crs.dir} changed: sha256 ${put.sha256}, expected ${crs.g1Sha256}`, { retryable: false })
  return put
}
