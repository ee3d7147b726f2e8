import { randomBytes } from 'node:crypto'
import { mkdir, open, readdir, readFile, rename, stat, unlink } from 'node:fs/promises'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { ArtifactError } from '../../core/errors.js'
import { sha256Hex } from '../../core/ids.js'
import type { ArtifactRef } from '../../core/types.js'
import { DEFAULT_ARTIFACT_PREFIX, artifactKey, checkKey, checkPrefix, checkRef } from '../keys.js'
import type { ArtifactStore } from '../types.js'

/** Options of `fsArtifacts`. */
export interface FsArtifactsOptions {
  /** Root folder of the store; created on the first `put`. */
  dir: string
  /**
   * Prefix used by `put` when the caller gives none.
   * @default 'blobs'
   */
  prefix?: string
  /**
   * Temp files older than this, left by a writer that crashed mid-`put`, are removed the first
   * time this store writes into their folder.
   * @default 3_600_000 (one hour)
   */
  staleTempMs?: number
}

const TEMP_NAME = /^\.[0-9a-f]{64}\.tmp-/

/**
 * The embedded artifact store: a local folder, content-addressed as `<dir>/<prefix>/<sha256>`.
 *
 * - `put` writes a temp file in the destination folder, fsyncs it, renames it into place and
 *   fsyncs the folder, so after it resolves the artifact survives a crash or power loss, and a
 *   reader never sees a partial file. Putting content that is already stored intact is a no-op;
 *   a stored copy that fails its check is replaced.
 * - `get` checks size and sha256 and never returns corrupt bytes.
 * - Keys and prefixes are checked segment by segment (see `checkPrefix`), so no key resolves
 *   outside `dir`.
 */
export function fsArtifacts(opts: FsArtifactsOptions): ArtifactStore {
  const root = resolve(opts.dir)
  const defaultPrefix = checkPrefix(opts.prefix ?? DEFAULT_ARTIFACT_PREFIX)
  const staleTempMs = opts.staleTempMs ?? 3_600_000
  const swept = new Set<string>()
  let closed = false

  function assertOpen(): void {
    if (closed) {
      throw new ArtifactError('ARTIFACT_IO', 'artifact store is closed', { retryable: false, details: { dir: root } })
    }
  }

  function pathOf(key: string): string {
    checkKey(key)
    const path = resolve(root, ...key.split('/'))
    // Belt and braces: the segment rules already make escaping impossible.
    const rel = relative(root, path)
    if (rel.startsWith('..') || rel.startsWith(sep) || rel === '') {
      throw new ArtifactError('ARTIFACT_IO', `artifact key ${JSON.stringify(key)} resolves outside the store`, {
        retryable: false,
        details: { reason: 'invalid-key', key },
      })
    }
    return path
  }

  async function sweepStaleTemps(folder: string): Promise<void> {
    if (swept.has(folder)) return
    swept.add(folder)
    try {
      const now = Date.now()
      for (const name of await readdir(folder)) {
        if (!TEMP_NAME.test(name)) continue
        const path = join(folder, name)
        const st = await stat(path).catch(() => null)
        if (st !== null && now - st.mtimeMs > staleTempMs) await unlink(path).catch(() => undefined)
      }
    } catch {
      // Best effort: a missed sweep leaves garbage, never wrong data.
    }
  }

  return {
    async put(bytes, putOpts = {}) {
      assertOpen()
      putOpts.signal?.throwIfAborted()
      const sha256 = sha256Hex(bytes)
      const ref: ArtifactRef = { key: artifactKey(putOpts.prefix ?? defaultPrefix, sha256), sha256, size: bytes.byteLength }
      const final = pathOf(ref.key)
      try {
        if (await isIntact(final, ref)) return ref
        const folder = dirname(final)
        const created = await mkdir(folder, { recursive: true })
        if (created !== undefined) await fsyncCreatedDirs(root, created, folder)
        await sweepStaleTemps(folder)
        putOpts.signal?.throwIfAborted()
        const tmp = join(folder, `.${sha256}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`)
        try {
          const fh = await open(tmp, 'wx', 0o644)
          try {
            await fh.writeFile(bytes)
            await fh.sync()
          } finally {
            await fh.close()
          }
          putOpts.signal?.throwIfAborted()
          // rename(2) is atomic: concurrent writers of the same content each install a complete copy.
          await rename(tmp, final)
        } catch (err) {
          await unlink(tmp).catch(() => undefined)
          throw err
        }
        await fsyncDir(folder)
        return ref
      } catch (err) {
        throw asIoError(err, `writing artifact ${ref.key}`, ref.key, putOpts.signal)
      }
    },

    async get(ref, getOpts = {}) {
      assertOpen()
      checkRef(ref)
      getOpts.signal?.throwIfAborted()
      const path = pathOf(ref.key)
      let bytes: Buffer
      try {
        const st = await stat(path)
        if (!st.isFile()) throw notFound(ref)
        if (st.size !== ref.size) throw corrupt(ref, { actualSize: st.size })
        bytes = getOpts.signal === undefined ? await readFile(path) : await readFile(path, { signal: getOpts.signal })
      } catch (err) {
        if (isMissing(err)) throw notFound(ref)
        throw asIoError(err, `reading artifact ${ref.key}`, ref.key, getOpts.signal)
      }
      if (bytes.byteLength !== ref.size) throw corrupt(ref, { actualSize: bytes.byteLength })
      const actual = sha256Hex(bytes)
      if (actual !== ref.sha256) throw corrupt(ref, { actualSha256: actual })
      return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    },

    async has(ref, hasOpts = {}) {
      assertOpen()
      hasOpts.signal?.throwIfAborted()
      const path = pathOf(ref.key)
      try {
        return (await stat(path)).isFile()
      } catch (err) {
        if (isMissing(err)) return false
        throw asIoError(err, `checking artifact ${ref.key}`, ref.key, hasOpts.signal)
      }
    },

    close() {
      closed = true
      return Promise.resolve()
    },
  }
}

/** Whether `path` holds exactly the content `ref` describes. */
async function isIntact(path: string, ref: ArtifactRef): Promise<boolean> {
  try {
    const st = await stat(path)
    if (!st.isFile() || st.size !== ref.size) return false
    return sha256Hex(await readFile(path)) === ref.sha256
  } catch (err) {
    if (isMissing(err)) return false
    throw err
  }
}

/** fsyncs a folder so entries created or renamed in it persist. */
export async function fsyncDir(path: string): Promise<void> {
  const fh = await open(path, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

/** After `mkdir -p` created `created` … `folder`, fsync each new folder's parent so the entries persist. */
async function fsyncCreatedDirs(root: string, created: string, folder: string): Promise<void> {
  const dirs: string[] = []
  for (let d = folder; ; d = dirname(d)) {
    dirs.push(dirname(d))
    if (d === created || d === root || dirname(d) === d) break
  }
  for (const d of dirs) await fsyncDir(d)
}

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code
  return code === 'ENOENT' || code === 'ENOTDIR'
}

function notFound(ref: ArtifactRef): ArtifactError {
  return new ArtifactError('ARTIFACT_NOT_FOUND', `artifact ${ref.key} not found; it was never stored here or was deleted`, {
    retryable: false,
    details: { key: ref.key, sha256: ref.sha256, size: ref.size },
  })
}

function corrupt(ref: ArtifactRef, actual: { actualSize?: number; actualSha256?: string }): ArtifactError {
  return new ArtifactError(
    'ARTIFACT_CORRUPT',
    `artifact ${ref.key} is corrupt (${actual.actualSha256 === undefined ? 'size' : 'sha256'} mismatch); put the original bytes again or re-run the job that produced it`,
    { retryable: false, details: { key: ref.key, expectedSha256: ref.sha256, expectedSize: ref.size, ...actual } },
  )
}

function asIoError(err: unknown, what: string, key: string, signal: AbortSignal | undefined): unknown {
  if (err instanceof ArtifactError) return err
  // An abort surfaces as the caller's reason (or Node's AbortError), never as an I/O fault.
  if (signal?.aborted === true && err === signal.reason) return err
  if (err instanceof Error && err.name === 'AbortError') return err
  const code = (err as NodeJS.ErrnoException | null)?.code
  return new ArtifactError('ARTIFACT_IO', `${what} failed: ${err instanceof Error ? err.message : String(err)}`, {
    retryable: true,
    details: { key, ...(code === undefined ? {} : { errno: code }) },
    cause: err,
  })
}
