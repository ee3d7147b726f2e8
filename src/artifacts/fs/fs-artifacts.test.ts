import { randomBytes } from 'node:crypto'
import { mkdtemp, open, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { ArtifactError } from '../../core/errors.js'
import { artifactStoreConformance } from '../conformance.js'
import type { ArtifactStore } from '../types.js'
import { fsArtifacts } from './fs-artifacts.js'

artifactStoreConformance('fs', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'proofline-fs-artifacts-'))
  const store = fsArtifacts({ dir })
  return {
    store,
    async corrupt(ref) {
      // Flip one byte in place, keeping the size: only the sha256 check can catch it.
      const fh = await open(join(dir, ...ref.key.split('/')), 'r+')
      try {
        const b = Buffer.alloc(1)
        await fh.read(b, 0, 1, 0)
        b[0] = (b[0] ?? 0) ^ 0xff
        await fh.write(b, 0, 1, 0)
      } finally {
        await fh.close()
      }
    },
    async cleanup() {
      await store.close()
      await rm(dir, { recursive: true, force: true })
    },
  }
})

describe('fsArtifacts (folder specifics)', () => {
  let dir: string
  let store: ArtifactStore

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'proofline-fs-artifacts-'))
    store = fsArtifacts({ dir })
  })
  afterEach(async () => {
    await store.close()
    await rm(dir, { recursive: true, force: true })
  })

  it('behavior: a put leaves exactly one file named by its sha256 and no temp files', async () => {
    const ref = await store.put(randomBytes(1000))
    expect(await readdir(join(dir, 'blobs'))).toEqual([ref.sha256])
  })

  it('behavior: putting content that is already stored intact does not rewrite the file', async () => {
    const bytes = randomBytes(1000)
    const ref = await store.put(bytes)
    const path = join(dir, 'blobs', ref.sha256)
    const old = new Date(Date.now() - 60_000)
    await utimes(path, old, old)
    const before = await stat(path)
    await store.put(bytes)
    const after = await stat(path)
    expect(after.ino).toBe(before.ino)
    expect(after.mtimeMs).toBe(before.mtimeMs)
  })

  it('behavior: putting the original bytes again repairs a corrupted copy', async () => {
    const bytes = randomBytes(1000)
    const ref = await store.put(bytes)
    await writeFile(join(dir, 'blobs', ref.sha256), randomBytes(1000))
    await expect(store.get(ref)).rejects.toMatchObject({ code: 'ARTIFACT_CORRUPT' })
    await store.put(bytes)
    expect(Buffer.from(await store.get(ref)).equals(bytes)).toBe(true)
  })

  it('behavior: stale temp files of a crashed writer are swept, fresh ones are left alone', async () => {
    await store.put(randomBytes(10))
    const stale = join(dir, 'blobs', `.${'a'.repeat(64)}.tmp-1-000000`)
    const fresh = join(dir, 'blobs', `.${'b'.repeat(64)}.tmp-1-000000`)
    await writeFile(stale, 'partial')
    await writeFile(fresh, 'partial')
    const old = new Date(Date.now() - 2 * 3_600_000)
    await utimes(stale, old, old)
    const reopened = fsArtifacts({ dir })
    await reopened.put(randomBytes(10))
    const names = await readdir(join(dir, 'blobs'))
    expect(names).not.toContain(`.${'a'.repeat(64)}.tmp-1-000000`)
    expect(names).toContain(`.${'b'.repeat(64)}.tmp-1-000000`)
  })

  it('behavior: a closed store refuses work', async () => {
    await store.close()
    await expect(store.put(randomBytes(4))).rejects.toBeInstanceOf(ArtifactError)
  })

  it('behavior: an invalid default prefix is rejected when the store is created', () => {
    expect(() => fsArtifacts({ dir, prefix: '../up' })).toThrow(ArtifactError)
  })
})
