import { randomBytes } from 'node:crypto'
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { ArtifactError } from '../../core/errors.js'
import { RECORDS_PREFIX, checkRecordName } from '../keys.js'
import type { RecordStore } from '../types.js'
import { fsyncDir } from './fs-artifacts.js'

/** Options of `fsRecords`. */
export interface FsRecordsOptions {
  /** The artifact store's root folder; records live in `<dir>/records/<name>`. */
  dir: string
}

/**
 * Named records in a local folder (the fs artifact store's, or a shared mount). `set` writes a
 * temp file, fsyncs it, renames it over the record and fsyncs the folder, so a record is
 * replaced atomically and survives a crash once `set` resolves.
 */
export function fsRecords(opts: FsRecordsOptions): RecordStore {
  const root = resolve(opts.dir, RECORDS_PREFIX)
  let closed = false

  function pathOf(name: string): string {
    if (closed) throw new ArtifactError('ARTIFACT_IO', 'record store is closed', { retryable: false, details: { dir: root } })
    return resolve(root, ...checkRecordName(name).split('/'))
  }

  function ioError(err: unknown, what: string, name: string): unknown {
    if (err instanceof ArtifactError) return err
    if (err instanceof Error && err.name === 'AbortError') return err
    return new ArtifactError('ARTIFACT_IO', `${what} record ${name} failed: ${err instanceof Error ? err.message : String(err)}`, {
      retryable: true,
      details: { record: name, errno: (err as NodeJS.ErrnoException | null)?.code },
      cause: err,
    })
  }

  return {
    async get(name, o = {}) {
      const path = pathOf(name)
      o.signal?.throwIfAborted()
      try {
        const bytes = o.signal === undefined ? await readFile(path) : await readFile(path, { signal: o.signal })
        return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
      } catch (err) {
        if ((err as NodeJS.ErrnoException | null)?.code === 'ENOENT') return null
        throw ioError(err, 'reading', name)
      }
    },

    async set(name, bytes, o = {}) {
      const path = pathOf(name)
      o.signal?.throwIfAborted()
      const folder = dirname(path)
      const tmp = join(folder, `.record.tmp-${process.pid}-${randomBytes(6).toString('hex')}`)
      try {
        await mkdir(folder, { recursive: true })
        const fh = await open(tmp, 'wx', 0o600)
        try {
          await fh.writeFile(bytes)
          await fh.sync()
        } finally {
          await fh.close()
        }
        await rename(tmp, path)
        await fsyncDir(folder)
      } catch (err) {
        await unlink(tmp).catch(() => undefined)
        throw ioError(err, 'writing', name)
      }
    },

    async delete(name, o = {}) {
      const path = pathOf(name)
      o.signal?.throwIfAborted()
      try {
        await unlink(path)
        await fsyncDir(dirname(path))
      } catch (err) {
        if ((err as NodeJS.ErrnoException | null)?.code === 'ENOENT') return
        throw ioError(err, 'deleting', name)
      }
    },

    close() {
      closed = true
      return Promise.resolve()
    },
  }
}
