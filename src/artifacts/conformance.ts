import { createHash, randomBytes } from 'node:crypto'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { ArtifactError } from '../core/errors.js'
import type { ArtifactRef } from '../core/types.js'
import type { ArtifactStore, RecordStore } from './types.js'

/** What a conformance run needs from an adapter: a fresh, empty store per test. */
export interface ArtifactStoreHarness {
  store: ArtifactStore
  /**
   * Changes the stored bytes of `ref` behind the store's back (bit rot, a truncated upload, an
   * operator's mistake). When absent, the at-rest corruption test is skipped; the ref-mismatch
   * tests still run.
   */
  corrupt?: (ref: ArtifactRef) => Promise<void>
  /** Closes the store and deletes everything the test wrote (its folder, its bucket). */
  cleanup: () => Promise<void>
}

/**
 * The `ArtifactStore` contract as a vitest suite. Every adapter runs it against the real thing
 * (a folder, an S3 server); `open` must return a store in its own namespace.
 *
 * ```ts
 * artifactStoreConformance('fs', async () => { … return { store, corrupt, cleanup } })
 * ```
 */
export function artifactStoreConformance(name: string, open: () => Promise<ArtifactStoreHarness>): void {
  describe(`ArtifactStore conformance: ${name}`, () => {
    let h: ArtifactStoreHarness

    beforeEach(async () => {
      h = await open()
    })
    afterEach(async () => {
      await h.cleanup()
    })

    const sha = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex')

    async function expectArtifactError(p: Promise<unknown>, code: string): Promise<ArtifactError> {
      const err: unknown = await p.then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(err).toBeInstanceOf(ArtifactError)
      const ae = err as ArtifactError
      expect(ae.code).toBe(code)
      return ae
    }

    it('behavior: put then get returns the same bytes under <prefix>/<sha256>', async () => {
      const bytes = new TextEncoder().encode('{"hello":"proofline"}')
      const ref = await h.store.put(bytes)
      expect(ref).toEqual({ key: `blobs/${sha(bytes)}`, sha256: sha(bytes), size: bytes.byteLength })
      expect(Buffer.from(await h.store.get(ref)).equals(Buffer.from(bytes))).toBe(true)
      expect(await h.store.has(ref)).toBe(true)
    })

    it('behavior: put with a prefix stores under that prefix, nested prefixes allowed', async () => {
      const bytes = randomBytes(100)
      const a = await h.store.put(bytes, { prefix: 'traces' })
      const b = await h.store.put(bytes, { prefix: 'proofs/range' })
      expect(a.key).toBe(`traces/${sha(bytes)}`)
      expect(b.key).toBe(`proofs/range/${sha(bytes)}`)
      expect(Buffer.from(await h.store.get(a)).equals(bytes)).toBe(true)
      expect(Buffer.from(await h.store.get(b)).equals(bytes)).toBe(true)
    })

    it('behavior: putting the same bytes twice returns the same ref and keeps them readable', async () => {
      const bytes = randomBytes(4096)
      const first = await h.store.put(bytes)
      const second = await h.store.put(Uint8Array.from(bytes))
      expect(second).toEqual(first)
      expect(Buffer.from(await h.store.get(first)).equals(bytes)).toBe(true)
    })

    it('behavior: the empty artifact round-trips', async () => {
      const ref = await h.store.put(new Uint8Array(0))
      expect(ref.size).toBe(0)
      expect((await h.store.get(ref)).byteLength).toBe(0)
    })

    it('behavior: a ref that was never put is ARTIFACT_NOT_FOUND, not retryable; has() is false', async () => {
      const bytes = randomBytes(32)
      const ref: ArtifactRef = { key: `blobs/${sha(bytes)}`, sha256: sha(bytes), size: 32 }
      const err = await expectArtifactError(h.store.get(ref), 'ARTIFACT_NOT_FOUND')
      expect(err.retryable).toBe(false)
      expect(await h.store.has(ref)).toBe(false)
    })

    it('behavior: a ref whose sha256 does not match the stored bytes is ARTIFACT_CORRUPT', async () => {
      const ref = await h.store.put(randomBytes(64))
      const lie: ArtifactRef = { ...ref, sha256: sha(randomBytes(8)) }
      const err = await expectArtifactError(h.store.get(lie), 'ARTIFACT_CORRUPT')
      expect(err.retryable).toBe(false)
    })

    it('behavior: a ref whose size does not match the stored bytes is ARTIFACT_CORRUPT', async () => {
      const ref = await h.store.put(randomBytes(64))
      await expectArtifactError(h.store.get({ ...ref, size: 65 }), 'ARTIFACT_CORRUPT')
      await expectArtifactError(h.store.get({ ...ref, size: 63 }), 'ARTIFACT_CORRUPT')
    })

    it('behavior: bytes corrupted at rest are detected and never returned', async (ctx) => {
      if (h.corrupt === undefined) {
        ctx.skip()
        return
      }
      const ref = await h.store.put(randomBytes(1024))
      await h.corrupt(ref)
      const err = await expectArtifactError(h.store.get(ref), 'ARTIFACT_CORRUPT')
      expect(err.retryable).toBe(false)
    })

    it('behavior: every read is checked — bytes read intact before and corrupted afterwards are detected on the next read', async (ctx) => {
      if (h.corrupt === undefined) {
        ctx.skip()
        return
      }
      const bytes = randomBytes(2048)
      const ref = await h.store.put(bytes)
      for (let i = 0; i < 3; i++) expect(Buffer.from(await h.store.get(ref)).equals(bytes)).toBe(true)
      await h.corrupt(ref)
      for (let i = 0; i < 2; i++) await expectArtifactError(h.store.get(ref), 'ARTIFACT_CORRUPT')
    })

    it('behavior: a 20 MB artifact round-trips intact', async () => {
      const bytes = randomBytes(20 * 1024 * 1024)
      const ref = await h.store.put(bytes)
      expect(ref.size).toBe(bytes.byteLength)
      const back = await h.store.get(ref)
      expect(back.byteLength).toBe(bytes.byteLength)
      expect(sha(back)).toBe(ref.sha256)
    })

    it('behavior: concurrent puts of the same bytes all succeed with one ref', async () => {
      const bytes = randomBytes(256 * 1024)
      const refs = await Promise.all(Array.from({ length: 8 }, () => h.store.put(bytes)))
      for (const r of refs) expect(r).toEqual(refs[0])
      expect(Buffer.from(await h.store.get(refs[0] as ArtifactRef)).equals(bytes)).toBe(true)
    })

    it('behavior: concurrent puts of different bytes are all retrievable', async () => {
      const blobs = Array.from({ length: 16 }, () => randomBytes(10_000))
      const refs = await Promise.all(blobs.map((b) => h.store.put(b)))
      const back = await Promise.all(refs.map((r) => h.store.get(r)))
      back.forEach((b, i) => expect(Buffer.from(b).equals(blobs[i] as Buffer)).toBe(true))
    })

    it('behavior: keys and prefixes that could escape the store are rejected, not retryable', async () => {
      for (const prefix of ['..', '../x', 'a/../../b', '/abs', '', '.', 'a//b', 'a\\b', '.hidden', 'a/']) {
        const err = await expectArtifactError(h.store.put(randomBytes(4), { prefix }), 'ARTIFACT_IO')
        expect(err.retryable).toBe(false)
      }
      const bytes = randomBytes(4)
      for (const key of ['../../etc/passwd', `../${sha(bytes)}`, `/blobs/${sha(bytes)}`, sha(bytes), `blobs/../${sha(bytes)}`]) {
        const ref: ArtifactRef = { key, sha256: sha(bytes), size: 4 }
        const err = await expectArtifactError(h.store.get(ref), 'ARTIFACT_IO')
        expect(err.retryable).toBe(false)
        await expectArtifactError(h.store.has(ref), 'ARTIFACT_IO')
      }
    })

    it('behavior: an aborted signal stops put and get', async () => {
      const ref = await h.store.put(randomBytes(16))
      const ac = new AbortController()
      ac.abort(new Error('stop'))
      await expect(h.store.put(randomBytes(16), { signal: ac.signal })).rejects.toThrow('stop')
      await expect(h.store.get(ref, { signal: ac.signal })).rejects.toThrow('stop')
    })
  })
}

/**
 * The `RecordStore` contract as a vitest suite; `open` returns a fresh, empty store and a
 * cleanup that closes it and deletes what the test wrote.
 */
export function recordStoreConformance(name: string, open: () => Promise<{ store: RecordStore; cleanup: () => Promise<void> }>): void {
  describe(`RecordStore conformance: ${name}`, () => {
    let h: { store: RecordStore; cleanup: () => Promise<void> }
    beforeEach(async () => {
      h = await open()
    })
    afterEach(async () => {
      await h.cleanup()
    })
    const text = (b: Uint8Array | null): string | null => (b === null ? null : Buffer.from(b).toString('utf8'))

    it('behavior: a record that was never set reads as null', async () => {
      expect(await h.store.get('http/never-set')).toBeNull()
    })

    it('behavior: set then get returns the bytes; set again replaces them', async () => {
      await h.store.set('http/abc', new TextEncoder().encode('{"v":1}'))
      expect(text(await h.store.get('http/abc'))).toBe('{"v":1}')
      await h.store.set('http/abc', new TextEncoder().encode('{"v":2,"longer":true}'))
      expect(text(await h.store.get('http/abc'))).toBe('{"v":2,"longer":true}')
    })

    it('behavior: records are independent by name, nested names allowed', async () => {
      await h.store.set('a/one', new TextEncoder().encode('1'))
      await h.store.set('a/two', new TextEncoder().encode('2'))
      await h.store.set('b', new TextEncoder().encode('3'))
      expect([text(await h.store.get('a/one')), text(await h.store.get('a/two')), text(await h.store.get('b'))]).toEqual(['1', '2', '3'])
    })

    it('behavior: delete removes a record; deleting a missing one is fine', async () => {
      await h.store.set('http/gone', new TextEncoder().encode('x'))
      await h.store.delete('http/gone')
      expect(await h.store.get('http/gone')).toBeNull()
      await h.store.delete('http/gone')
      await h.store.delete('http/never-there')
    })

    it('behavior: names that could leave the namespace are refused with a non-retryable error', async () => {
      for (const bad of ['../x', '/abs', 'a//b', '.hidden', 'a/../b', 'back\\slash', '']) {
        const err: unknown = await h.store.get(bad).then(
          () => undefined,
          (e: unknown) => e,
        )
        expect(err, bad).toBeInstanceOf(ArtifactError)
        expect((err as ArtifactError).retryable, bad).toBe(false)
      }
    })
  })
}
