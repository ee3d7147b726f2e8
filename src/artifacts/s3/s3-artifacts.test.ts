import { CreateBucketCommand, HeadObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3'
import { createHash, randomBytes } from 'node:crypto'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { deleteBucket, rawS3Client, type S3TestServer, startS3Server } from '../../../test/support/s3-server.js'
import { ArtifactError, ConfigError } from '../../core/errors.js'
import type { ArtifactRef } from '../../core/types.js'
import { artifactStoreConformance } from '../conformance.js'
import type { ArtifactStore } from '../types.js'
import { planParts, type S3ArtifactsOptions, s3Artifacts } from './s3-artifacts.js'
import { type S3ObjectClient, sdkS3Client } from './s3-client.js'
import { freePort } from '../../core/net.js'

const MiB = 1024 * 1024

let server: S3TestServer
let raw: S3Client

beforeAll(async () => {
  server = await startS3Server()
  raw = rawS3Client(server)
})
afterAll(async () => {
  raw.destroy()
  await server.close()
})

function connection(): Pick<S3ArtifactsOptions, 'endpoint' | 'forcePathStyle' | 'credentials' | 'region'> {
  return { endpoint: server.endpoint, forcePathStyle: true, credentials: server.credentials, region: 'us-east-1' }
}

async function newBucket(): Promise<string> {
  const bucket = `t-${randomBytes(6).toString('hex')}`
  await raw.send(new CreateBucketCommand({ Bucket: bucket }))
  return bucket
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

artifactStoreConformance('s3 (s3rver)', async () => {
  const bucket = await newBucket()
  const store = s3Artifacts({ bucket, ...connection() })
  return {
    store,
    async corrupt(ref) {
      // Another writer replaces the object: same size, different bytes, none of the store's metadata.
      const bytes = randomBytes(ref.size)
      await raw.send(new PutObjectCommand({ Bucket: bucket, Key: ref.key, Body: bytes }))
    },
    async cleanup() {
      await store.close()
      await deleteBucket(raw, bucket)
    },
  }
})

type Op = keyof Omit<S3ObjectClient, 'destroy'>

/** Wraps a client to count calls per operation, record inputs, and inject failures. */
function instrumented(
  inner: S3ObjectClient,
  before?: (op: Op, input: Record<string, unknown>, n: number) => void,
): { client: S3ObjectClient; calls: Map<Op, Record<string, unknown>[]>; count(op: Op): number; destroyed: () => boolean } {
  const calls = new Map<Op, Record<string, unknown>[]>()
  let destroyed = false
  const record = (op: Op, input: object): void => {
    const list = calls.get(op) ?? []
    list.push(input as Record<string, unknown>)
    calls.set(op, list)
    before?.(op, input as Record<string, unknown>, list.length)
  }
  const client: S3ObjectClient = {
    headBucket: (i, o) => (record('headBucket', i), inner.headBucket(i, o)),
    createBucket: (i, o) => (record('createBucket', i), inner.createBucket(i, o)),
    headObject: (i, o) => (record('headObject', i), inner.headObject(i, o)),
    getObject: (i, o) => (record('getObject', i), inner.getObject(i, o)),
    putObject: (i, o) => (record('putObject', i), inner.putObject(i, o)),
    createMultipartUpload: (i, o) => (record('createMultipartUpload', i), inner.createMultipartUpload(i, o)),
    uploadPart: (i, o) => (record('uploadPart', i), inner.uploadPart(i, o)),
    completeMultipartUpload: (i, o) => (record('completeMultipartUpload', i), inner.completeMultipartUpload(i, o)),
    abortMultipartUpload: (i, o) => (record('abortMultipartUpload', i), inner.abortMultipartUpload(i, o)),
    deleteObject: (i, o) => (record('deleteObject', i), inner.deleteObject(i, o)),
    destroy() {
      destroyed = true
      inner.destroy()
    },
  }
  return { client, calls, count: (op) => calls.get(op)?.length ?? 0, destroyed: () => destroyed }
}

/** An SDK-shaped service error. */
function s3Error(name: string, status: number): Error {
  return Object.assign(new Error(`${name} (simulated)`), { name, $metadata: { httpStatusCode: status, requestId: 'req-1' } })
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => expect.unreachable('expected a rejection'),
    (e: unknown) => e,
  )
}

describe('s3Artifacts (S3 specifics, against s3rver)', () => {
  let bucket: string
  let sdk: S3ObjectClient
  const stores: ArtifactStore[] = []

  beforeEach(async () => {
    bucket = await newBucket()
    sdk = sdkS3Client(connection())
  })
  afterEach(async () => {
    for (const s of stores.splice(0)) await s.close()
    sdk.destroy()
    await deleteBucket(raw, bucket)
  })

  function open(opts: Partial<S3ArtifactsOptions> = {}): ArtifactStore {
    const store = s3Artifacts({ bucket, ...connection(), ...opts })
    stores.push(store)
    return store
  }

  it('behavior: objects live at <prefix>/<kind>/<sha256> with the sha256 in metadata; refs leave the bucket prefix out', async () => {
    const store = open({ prefix: 'deploy-a/v1' })
    const bytes = randomBytes(1000)
    const ref = await store.put(bytes, { prefix: 'traces' })
    expect(ref.key).toBe(`traces/${sha(bytes)}`)
    const head = await raw.send(new HeadObjectCommand({ Bucket: bucket, Key: `deploy-a/v1/traces/${sha(bytes)}` }))
    expect(head.ContentLength).toBe(1000)
    expect(head.Metadata).toEqual({ sha256: sha(bytes) })
    // Another prefix in the same bucket is another store.
    const other = open({ prefix: 'deploy-b' })
    expect(await other.has(ref)).toBe(false)
    await expect(other.get(ref)).rejects.toMatchObject({ code: 'ARTIFACT_NOT_FOUND', retryable: false })
  })

  it('behavior: small artifacts are one PutObject carrying Content-MD5 of the bytes', async () => {
    const w = instrumented(sdk)
    const store = open({ client: w.client })
    const bytes = randomBytes(4096)
    await store.put(bytes)
    expect(w.count('putObject')).toBe(1)
    expect(w.count('createMultipartUpload')).toBe(0)
    expect(w.calls.get('putObject')?.[0]?.ContentMD5).toBe(createHash('md5').update(bytes).digest('base64'))
  })

  it('behavior: above the threshold the upload is multipart, parts of partSizeBytes, and the object is whole', async () => {
    const w = instrumented(sdk)
    const store = open({ client: w.client, multipartThresholdBytes: 5 * MiB, partSizeBytes: 5 * MiB })
    const bytes = randomBytes(12 * MiB + 1)
    const ref = await store.put(bytes)
    expect(w.count('putObject')).toBe(0)
    expect(w.count('createMultipartUpload')).toBe(1)
    expect(w.count('completeMultipartUpload')).toBe(1)
    expect(w.count('abortMultipartUpload')).toBe(0)
    const parts = w.calls.get('uploadPart') ?? []
    expect(parts.map((p) => [p.PartNumber, p.ContentLength])).toEqual([
      [1, 5 * MiB],
      [2, 5 * MiB],
      [3, 2 * MiB + 1],
    ])
    for (const p of parts) expect(p.ContentMD5).toBe(createHash('md5').update(p.Body as Uint8Array).digest('base64'))
    const head = await raw.send(new HeadObjectCommand({ Bucket: bucket, Key: ref.key }))
    expect(head.ContentLength).toBe(bytes.byteLength)
    expect(head.Metadata).toEqual({ sha256: ref.sha256 })
    expect(Buffer.from(await store.get(ref)).equals(bytes)).toBe(true)
  })

  it('behavior: putting content that is already stored sends one HEAD and no upload', async () => {
    const w = instrumented(sdk)
    const store = open({ client: w.client, multipartThresholdBytes: 5 * MiB, partSizeBytes: 5 * MiB })
    const small = randomBytes(2000)
    const large = randomBytes(6 * MiB)
    await store.put(small)
    await store.put(large)
    const uploads = (): number[] => [w.count('putObject'), w.count('createMultipartUpload'), w.count('uploadPart')]
    expect(uploads()).toEqual([1, 1, 2])
    const heads = w.count('headObject')
    expect(await store.put(small)).toEqual({ key: `blobs/${sha(small)}`, sha256: sha(small), size: 2000 })
    await store.put(large)
    expect(uploads()).toEqual([1, 1, 2])
    expect(w.count('headObject')).toBe(heads + 2)
  })

  it('behavior: putting the original bytes again repairs an object another writer replaced', async () => {
    const w = instrumented(sdk)
    const store = open({ client: w.client })
    const bytes = randomBytes(1000)
    const ref = await store.put(bytes)
    await raw.send(new PutObjectCommand({ Bucket: bucket, Key: ref.key, Body: randomBytes(1000) }))
    await expect(store.get(ref)).rejects.toMatchObject({ code: 'ARTIFACT_CORRUPT', retryable: false })
    await store.put(bytes)
    expect(w.count('putObject')).toBe(2)
    expect(Buffer.from(await store.get(ref)).equals(bytes)).toBe(true)
  })

  it('behavior: a wrong size is reported from the response header, with the actual size', async () => {
    const store = open()
    const ref = await store.put(randomBytes(64))
    const err = await rejection(store.get({ ...ref, size: 10 }))
    expect(err).toBeInstanceOf(ArtifactError)
    expect((err as ArtifactError).details).toMatchObject({ expectedSize: 10, actualSize: 64 })
  })

  it('behavior: a failed part aborts the multipart upload; the error is retryable and nothing is stored', async () => {
    const w = instrumented(sdk, (op, _input, n) => {
      if (op === 'uploadPart' && n === 2) throw s3Error('InternalError', 500)
    })
    const store = open({ client: w.client, multipartThresholdBytes: 5 * MiB, partSizeBytes: 5 * MiB, multipartConcurrency: 1 })
    const bytes = randomBytes(11 * MiB)
    const err = await rejection(store.put(bytes))
    expect(err).toBeInstanceOf(ArtifactError)
    expect(err).toMatchObject({ code: 'ARTIFACT_IO', retryable: true, details: { op: 'put', httpStatus: 500, s3Code: 'InternalError' } })
    expect(w.count('uploadPart')).toBe(2)
    expect(w.count('completeMultipartUpload')).toBe(0)
    const aborts = w.calls.get('abortMultipartUpload') ?? []
    expect(aborts).toHaveLength(1)
    expect(aborts[0]?.UploadId).toBeTypeOf('string')
    const ref: ArtifactRef = { key: `blobs/${sha(bytes)}`, sha256: sha(bytes), size: bytes.byteLength }
    expect(await store.has(ref)).toBe(false)
    // A retry starts over and succeeds.
    expect(await store.put(bytes)).toEqual(ref)
    expect(sha(await store.get(ref))).toBe(ref.sha256)
  })

  it('behavior: aborting during a multipart upload stops the parts, aborts the upload and rejects with the reason', async () => {
    const ac = new AbortController()
    const w = instrumented(sdk, (op) => {
      if (op === 'uploadPart') ac.abort(new Error('operator stop'))
    })
    const store = open({ client: w.client, multipartThresholdBytes: 5 * MiB, partSizeBytes: 5 * MiB, multipartConcurrency: 1 })
    await expect(store.put(randomBytes(11 * MiB), { signal: ac.signal })).rejects.toThrow('operator stop')
    expect(w.count('uploadPart')).toBe(1)
    expect(w.count('completeMultipartUpload')).toBe(0)
    expect(w.count('abortMultipartUpload')).toBe(1)
  })

  it('behavior: a missing bucket is a non-retryable ARTIFACT_IO that names the bucket', async () => {
    const store = s3Artifacts({ bucket: 'no-such-bucket-here', ...connection() })
    stores.push(store)
    for (const call of [() => store.put(randomBytes(8)), () => store.get({ key: `blobs/${'a'.repeat(64)}`, sha256: 'a'.repeat(64), size: 8 })]) {
      const err = await rejection(call())
      expect(err).toBeInstanceOf(ArtifactError)
      expect(err).toMatchObject({ code: 'ARTIFACT_IO', retryable: false, details: { s3Code: 'NoSuchBucket', bucket: 'no-such-bucket-here' } })
      expect((err as Error).message).toContain('createBucket')
    }
  })

  it('behavior: createBucket creates a missing bucket once, also when two stores race for it', async () => {
    const name = `t-${randomBytes(6).toString('hex')}`
    const a = instrumented(sdkS3Client(connection()))
    const b = instrumented(sdkS3Client(connection()))
    const sa = s3Artifacts({ bucket: name, client: a.client, createBucket: true })
    const sb = s3Artifacts({ bucket: name, client: b.client, createBucket: true })
    try {
      const [ra, rb] = await Promise.all([sa.put(randomBytes(10)), sb.put(randomBytes(10)), sa.put(randomBytes(10))])
      expect(await sb.has(ra)).toBe(true)
      expect(await sa.has(rb)).toBe(true)
      expect(a.count('createBucket') + b.count('createBucket')).toBeLessThanOrEqual(2)
      expect(a.count('createBucket')).toBeLessThanOrEqual(1)
    } finally {
      await sa.close()
      await sb.close()
      a.client.destroy()
      b.client.destroy()
      await deleteBucket(raw, name)
    }
  })

  it('behavior: refused credentials are a non-retryable ARTIFACT_IO that says to check them', async () => {
    // s3rver checks the access key id only (it does not verify SigV4 signatures).
    const store = open({ credentials: { accessKeyId: 'NOT-A-KEY', secretAccessKey: 'S3RVER' } })
    // put fails at its HEAD, whose 403 has no body; get's names the cause.
    const putErr = await rejection(store.put(randomBytes(8)))
    expect(putErr).toMatchObject({ code: 'ARTIFACT_IO', retryable: false, details: { httpStatus: 403 } })
    expect((putErr as Error).message).toContain('credentials')
    const getErr = await rejection(store.get({ key: `blobs/${'d'.repeat(64)}`, sha256: 'd'.repeat(64), size: 1 }))
    expect(getErr).toMatchObject({ code: 'ARTIFACT_IO', retryable: false, details: { httpStatus: 403, s3Code: 'InvalidAccessKeyId' } })
  })

  it('behavior: server errors, throttling and transfer damage are retryable; other 4xx are not', async () => {
    const cases: [Error, boolean][] = [
      [s3Error('InternalError', 500), true],
      [s3Error('ServiceUnavailable', 503), true],
      [s3Error('SlowDown', 503), true],
      [s3Error('RequestTimeout', 400), true],
      [s3Error('BadDigest', 400), true],
      [s3Error('AccessDenied', 403), false],
      [s3Error('InvalidArgument', 400), false],
      [Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }), true],
    ]
    for (const [thrown, retryable] of cases) {
      const w = instrumented(sdk, (op) => {
        if (op === 'getObject') throw thrown
      })
      const store = open({ client: w.client })
      const err = await rejection(store.get({ key: `blobs/${'b'.repeat(64)}`, sha256: 'b'.repeat(64), size: 1 }))
      expect(err, thrown.name).toBeInstanceOf(ArtifactError)
      expect(err, thrown.name).toMatchObject({ code: 'ARTIFACT_IO', retryable })
      expect((err as ArtifactError).cause).toBe(thrown)
    }
  })

  it('behavior: a server that is down gives a retryable ARTIFACT_IO for put, get and has', async () => {
    const port = await freePort()
    const store = s3Artifacts({ bucket, endpoint: `http://127.0.0.1:${port}`, forcePathStyle: true, credentials: server.credentials, maxAttempts: 2 })
    stores.push(store)
    const ref: ArtifactRef = { key: `blobs/${'c'.repeat(64)}`, sha256: 'c'.repeat(64), size: 1 }
    for (const call of [() => store.put(randomBytes(8)), () => store.get(ref), () => store.has(ref)]) {
      const err = await rejection(call())
      expect(err).toBeInstanceOf(ArtifactError)
      expect(err).toMatchObject({ code: 'ARTIFACT_IO', retryable: true, details: { errno: 'ECONNREFUSED' } })
      expect((err as Error).message).toContain(`http://127.0.0.1:${port}`)
    }
  })

  it('behavior: close destroys a client the store made, not one it was given, and later calls fail', async () => {
    const given = instrumented(sdk)
    const store = s3Artifacts({ bucket, client: given.client })
    await store.close()
    expect(given.destroyed()).toBe(false)
    await expect(store.put(randomBytes(4))).rejects.toMatchObject({ code: 'ARTIFACT_IO', retryable: false })
  })

  it('behavior: invalid options are rejected when the store is created', () => {
    expect(() => s3Artifacts({ bucket, partSizeBytes: 1 * MiB })).toThrow(ConfigError)
    expect(() => s3Artifacts({ bucket, multipartThresholdBytes: 6 * 1024 * MiB })).toThrow(ConfigError)
    expect(() => s3Artifacts({ bucket, multipartConcurrency: 0 })).toThrow(ConfigError)
    expect(() => s3Artifacts({ bucket: '' })).toThrow(ConfigError)
    expect(() => s3Artifacts({ bucket, prefix: '../up' })).toThrow(ArtifactError)
  })
})

describe('planParts', () => {
  it('behavior: splits into part-size ranges with a shorter last part', () => {
    expect(planParts(12, 5)).toEqual([
      { start: 0, end: 5 },
      { start: 5, end: 10 },
      { start: 10, end: 12 },
    ])
    expect(planParts(10, 5)).toHaveLength(2)
  })

  it('behavior: raises the part size so no artifact needs more than 10,000 parts', () => {
    const size = 100_000 * 5 * MiB
    const parts = planParts(size, 5 * MiB)
    expect(parts.length).toBeLessThanOrEqual(10_000)
    expect(parts.at(-1)?.end).toBe(size)
  })
})

