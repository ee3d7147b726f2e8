import { createHash } from 'node:crypto'
import { ArtifactError, ConfigError, errorMessage } from '../../core/errors.js'
import { sha256Hex } from '../../core/ids.js'
import type { ArtifactRef } from '../../core/types.js'
import { DEFAULT_ARTIFACT_PREFIX, artifactKey, checkKey, checkPrefix, checkRef } from '../keys.js'
import type { ArtifactStore } from '../types.js'
import { type S3ObjectClient, type SdkS3ClientOptions, sdkS3Client } from './s3-client.js'

const MiB = 1024 * 1024
/** S3's limits: parts are 5 MiB – 5 GiB (except the last), at most 10,000 of them; one PUT is at most 5 GiB. */
const MIN_PART_BYTES = 5 * MiB
const MAX_PART_BYTES = 5 * 1024 * MiB
const MAX_PARTS = 10_000
const MAX_SINGLE_PUT_BYTES = 5 * 1024 * MiB
/** The user-metadata key (`x-amz-meta-sha256`) holding the content's sha256. */
const SHA256_METADATA = 'sha256'
const CONTENT_TYPE = 'application/octet-stream'
/** Bounds the best-effort calls made after the caller's operation already failed or was aborted. */
const CLEANUP_TIMEOUT_MS = 30_000

/** Options of `s3Artifacts`. */
export interface S3ArtifactsOptions extends SdkS3ClientOptions {
  /** The bucket holding the artifacts. */
  bucket: string
  /**
   * Key prefix inside the bucket, so several stores (deployments, tests) share one bucket. Not
   * part of refs: a ref's key is `<kind>/<sha256>` and the object's key is `<prefix>/<kind>/<sha256>`.
   * Checked with the same segment rules as ref keys (`checkPrefix`). No prefix when absent.
   */
  prefix?: string
  /**
   * Artifacts larger than this are uploaded with a multipart upload; others with one `PutObject`.
   * At most 5 GiB (S3's single-PUT limit).
   * @default 16 MiB
   */
  multipartThresholdBytes?: number
  /**
   * Part size of multipart uploads, 5 MiB – 5 GiB (S3's limits). Raised automatically when an
   * artifact would need more than 10,000 parts.
   * @default 8 MiB
   */
  partSizeBytes?: number
  /**
   * Parts of one multipart upload sent at the same time.
   * @default 4
   */
  multipartConcurrency?: number
  /**
   * Create the bucket (once, on first use) if it does not exist. Off in production, where the
   * bucket, its lifecycle rules and its policy are provisioned separately.
   * @default false
   */
  createBucket?: boolean
  /**
   * Use this client instead of one built from the connection options (`region`, `endpoint`,
   * `forcePathStyle`, `credentials`, timeouts), which are then ignored. The store does not
   * destroy a client it was given.
   */
  client?: S3ObjectClient
}

/**
 * The artifact store on S3 or any S3-compatible server, content-addressed as
 * `s3://<bucket>/<prefix>/<kind>/<sha256>` (a ref's key is `<kind>/<sha256>`, as with the folder
 * adapter).
 *
 * - `put` skips the upload when `HeadObject` finds the object with the right size and sha256
 *   metadata; otherwise uploads with `Content-MD5` (the server rejects damaged bytes) and the
 *   sha256 in metadata (`x-amz-meta-sha256`), as one `PutObject` up to `multipartThresholdBytes`
 *   and as a multipart upload above it (aborted on failure). S3 writes are atomic per object:
 *   readers never see a partial artifact.
 * - `get` checks size and sha256 locally and never returns corrupt bytes.
 * - Missing objects are `ARTIFACT_NOT_FOUND`; throttling, 5xx and network failures are
 *   retryable `ARTIFACT_IO`; refused credentials, a missing bucket and other 4xx are
 *   non-retryable `ARTIFACT_IO`.
 */
export function s3Artifacts(opts: S3ArtifactsOptions): ArtifactStore {
  const bucket = opts.bucket
  if (typeof bucket !== 'string' || bucket.length === 0) {
    throw new ConfigError('s3Artifacts: bucket must be a non-empty bucket name', { option: 'bucket' })
  }
  const keyPrefix = opts.prefix === undefined ? undefined : checkPrefix(opts.prefix)
  const threshold = intOption('multipartThresholdBytes', opts.multipartThresholdBytes ?? 16 * MiB, 0, MAX_SINGLE_PUT_BYTES)
  const partSize = intOption('partSizeBytes', opts.partSizeBytes ?? 8 * MiB, MIN_PART_BYTES, MAX_PART_BYTES)
  const concurrency = intOption('multipartConcurrency', opts.multipartConcurrency ?? 4, 1, 64)
  const ownsClient = opts.client === undefined
  const client = opts.client ?? sdkS3Client(opts)
  const where = { bucket, ...(keyPrefix === undefined ? {} : { prefix: keyPrefix }), ...(opts.endpoint === undefined ? {} : { endpoint: opts.endpoint }) }
  let closed = false
  let bucketReady: Promise<void> | undefined

  function assertOpen(): void {
    if (closed) throw new ArtifactError('ARTIFACT_IO', 'artifact store is closed', { retryable: false, details: { ...where } })
  }

  function objectKey(refKey: string): string {
    return keyPrefix === undefined ? refKey : `${keyPrefix}/${refKey}`
  }

  /** Maps anything an S3 call threw to what the store throws; see `classify`. */
  function fail(err: unknown, op: string, refKey: string | undefined, signal: AbortSignal | undefined): unknown {
    if (err instanceof ArtifactError) return err
    // An abort surfaces as the caller's reason, never as an I/O fault.
    if (signal?.aborted === true) return signal.reason
    return classify(err, op, refKey === undefined ? where : { ...where, key: refKey, objectKey: objectKey(refKey) })
  }

  async function ensureBucket(signal: AbortSignal | undefined): Promise<void> {
    if (opts.createBucket !== true) return
    // Shared by concurrent callers, so it runs on its own deadline rather than on one caller's signal.
    bucketReady ??= createBucketIfMissing(client, bucket, opts.region ?? 'us-east-1').catch((err: unknown) => {
      bucketReady = undefined
      throw fail(err, 'createBucket', undefined, undefined)
    })
    await untilAborted(bucketReady, signal)
  }

  async function uploadMultipart(key: string, bytes: Uint8Array, metadata: Record<string, string>, signal: AbortSignal | undefined): Promise<void> {
    const created = await client.createMultipartUpload(
      { Bucket: bucket, Key: key, ContentType: CONTENT_TYPE, Metadata: metadata },
      callOpts(signal),
    )
    const uploadId = created.UploadId
    if (uploadId === undefined || uploadId === '') throw new Error('CreateMultipartUpload returned no UploadId')
    try {
      const parts = planParts(bytes.byteLength, partSize)
      const etags: string[] = new Array<string>(parts.length)
      // One controller for every part: the first failure (or the caller's abort) stops the others,
      // and all of them settle before the upload is aborted, so no part lands after the abort.
      const stop = new AbortController()
      const onAbort = (): void => stop.abort(signal?.reason)
      signal?.addEventListener('abort', onAbort, { once: true })
      let next = 0
      let failure: { err: unknown } | undefined
      const worker = async (): Promise<void> => {
        while (failure === undefined && next < parts.length) {
          const i = next++
          const { start, end } = parts[i] as { start: number; end: number }
          const body = bytes.subarray(start, end)
          try {
            const out = await client.uploadPart(
              { Bucket: bucket, Key: key, UploadId: uploadId, PartNumber: i + 1, Body: body, ContentLength: body.byteLength, ContentMD5: md5Base64(body) },
              { abortSignal: stop.signal },
            )
            if (out.ETag === undefined || out.ETag === '') throw new Error(`UploadPart ${i + 1} returned no ETag`)
            etags[i] = out.ETag
          } catch (err) {
            if (failure === undefined) {
              failure = { err }
              stop.abort(err)
            }
            return
          }
        }
      }
      try {
        await Promise.all(Array.from({ length: Math.min(concurrency, parts.length) }, worker))
      } finally {
        signal?.removeEventListener('abort', onAbort)
      }
      if (failure !== undefined) throw failure.err
      signal?.throwIfAborted()
      await client.completeMultipartUpload(
        { Bucket: bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) } },
        callOpts(signal),
      )
    } catch (err) {
      // Best effort: parts of an abandoned upload are billed until aborted. A bucket lifecycle rule
      // (AbortIncompleteMultipartUpload) is the backstop when this call fails too.
      await client
        .abortMultipartUpload({ Bucket: bucket, Key: key, UploadId: uploadId }, { abortSignal: AbortSignal.timeout(CLEANUP_TIMEOUT_MS) })
        .catch(() => undefined)
      throw err
    }
  }

  return {
    async put(bytes, putOpts = {}) {
      assertOpen()
      const signal = putOpts.signal
      signal?.throwIfAborted()
      const sha256 = sha256Hex(bytes)
      const ref: ArtifactRef = { key: artifactKey(putOpts.prefix ?? DEFAULT_ARTIFACT_PREFIX, sha256), sha256, size: bytes.byteLength }
      const key = objectKey(ref.key)
      try {
        await ensureBucket(signal)
        if (await isStored(client, bucket, key, ref, signal)) return ref
        signal?.throwIfAborted()
        const metadata = { [SHA256_METADATA]: sha256 }
        if (bytes.byteLength > threshold) {
          await uploadMultipart(key, bytes, metadata, signal)
        } else {
          await client.putObject(
            {
              Bucket: bucket,
              Key: key,
              Body: bytes,
              ContentLength: bytes.byteLength,
              ContentMD5: md5Base64(bytes),
              ContentType: CONTENT_TYPE,
              Metadata: metadata,
            },
            callOpts(signal),
          )
        }
        return ref
      } catch (err) {
        throw fail(err, 'put', ref.key, signal)
      }
    },

    async get(ref, getOpts = {}) {
      assertOpen()
      checkRef(ref)
      const signal = getOpts.signal
      signal?.throwIfAborted()
      let bytes: Uint8Array
      try {
        await ensureBucket(signal)
        const out = await client.getObject({ Bucket: bucket, Key: objectKey(ref.key) }, callOpts(signal))
        // A wrong size is caught from the header, without downloading the object.
        if (out.ContentLength !== undefined && out.ContentLength !== ref.size) {
          out.Body?.destroy()
          throw corrupt(ref, { actualSize: out.ContentLength })
        }
        bytes = out.Body === undefined ? new Uint8Array(0) : await out.Body.transformToByteArray()
        signal?.throwIfAborted()
      } catch (err) {
        if (isNotFound(err)) throw notFound(ref, bucket, objectKey(ref.key))
        throw fail(err, 'get', ref.key, signal)
      }
      if (bytes.byteLength !== ref.size) throw corrupt(ref, { actualSize: bytes.byteLength })
      const actual = sha256Hex(bytes)
      if (actual !== ref.sha256) throw corrupt(ref, { actualSha256: actual })
      return bytes
    },

    async has(ref, hasOpts = {}) {
      assertOpen()
      checkKey(ref.key)
      const signal = hasOpts.signal
      signal?.throwIfAborted()
      try {
        await ensureBucket(signal)
        await client.headObject({ Bucket: bucket, Key: objectKey(ref.key) }, callOpts(signal))
        return true
      } catch (err) {
        if (isNotFound(err)) return false
        throw fail(err, 'has', ref.key, signal)
      }
    },

    close() {
      if (!closed) {
        closed = true
        if (ownsClient) client.destroy()
      }
      return Promise.resolve()
    },
  }
}

/**
 * Splits `size` bytes into multipart ranges of `partSizeBytes` (the last one shorter), raising the
 * part size when more than 10,000 parts would be needed. Exported for tests.
 */
export function planParts(size: number, partSizeBytes: number): { start: number; end: number }[] {
  const part = Math.max(partSizeBytes, Math.ceil(size / MAX_PARTS))
  const parts: { start: number; end: number }[] = []
  for (let start = 0; start < size; start += part) parts.push({ start, end: Math.min(size, start + part) })
  return parts
}

/** Whether `key` already holds this content: same size and the same sha256 in its metadata. */
async function isStored(client: S3ObjectClient, bucket: string, key: string, ref: ArtifactRef, signal: AbortSignal | undefined): Promise<boolean> {
  try {
    const head = await client.headObject({ Bucket: bucket, Key: key }, callOpts(signal))
    // An object without our metadata (written by another tool, or overwritten) is replaced: the
    // upload is the repair.
    return head.ContentLength === ref.size && head.Metadata?.[SHA256_METADATA] === ref.sha256
  } catch (err) {
    if (isNotFound(err)) return false
    throw err
  }
}

async function createBucketIfMissing(client: S3ObjectClient, bucket: string, region: string): Promise<void> {
  const deadline = { abortSignal: AbortSignal.timeout(CLEANUP_TIMEOUT_MS) }
  try {
    await client.headBucket({ Bucket: bucket }, deadline)
    return
  } catch (err) {
    if (!isNotFound(err) && s3ErrorName(err) !== 'NoSuchBucket') throw err
  }
  try {
    await client.createBucket(
      { Bucket: bucket, ...(region === 'us-east-1' ? {} : { CreateBucketConfiguration: { LocationConstraint: region } }) },
      deadline,
    )
  } catch (err) {
    const name = s3ErrorName(err)
    if (name === 'BucketAlreadyOwnedByYou') return
    // Another store created it first (S3 says "owned by you" for that; some servers do not), or
    // the name belongs to someone else: only the second is an error.
    if (name === 'BucketAlreadyExists') {
      await client.headBucket({ Bucket: bucket }, deadline)
      return
    }
    throw err
  }
}

function callOpts(signal: AbortSignal | undefined): { abortSignal?: AbortSignal } {
  return signal === undefined ? {} : { abortSignal: signal }
}

/** Resolves with `p`, or rejects with the signal's reason as soon as it aborts (leaving `p` to run). */
async function untilAborted<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return p
  signal.throwIfAborted()
  let onAbort: (() => void) | undefined
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        onAbort = () => reject(signal.reason)
        signal.addEventListener('abort', onAbort, { once: true })
      }),
    ])
  } finally {
    if (onAbort !== undefined) signal.removeEventListener('abort', onAbort)
  }
}

function md5Base64(bytes: Uint8Array): string {
  return createHash('md5').update(bytes).digest('base64')
}

function intOption(name: string, value: number, min: number, max: number): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new ConfigError(`s3Artifacts: ${name} must be an integer between ${min} and ${max}, got ${value}`, { option: name, value })
  }
  return value
}

interface S3ErrorShape {
  name?: unknown
  Code?: unknown
  code?: unknown
  $metadata?: { httpStatusCode?: unknown; requestId?: unknown }
}

function s3ErrorName(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined
  const e = err as S3ErrorShape
  if (typeof e.Code === 'string') return e.Code
  // The SDK names an error without a body (any HEAD) 'Unknown': the status says more.
  return typeof e.name === 'string' && e.name !== 'Unknown' ? e.name : undefined
}

function httpStatus(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null) return undefined
  const status = (err as S3ErrorShape).$metadata?.httpStatusCode
  return typeof status === 'number' ? status : undefined
}

/** A missing object: `NoSuchKey` from GET, a bare 404 from HEAD. A missing bucket is not this. */
export function isNotFound(err: unknown): boolean {
  const name = s3ErrorName(err)
  if (name === 'NoSuchBucket') return false
  return name === 'NoSuchKey' || name === 'NotFound' || httpStatus(err) === 404
}

/**
 * 4xx answers the same request would get again. Everything else that reaches here — 5xx,
 * throttling, timeouts, transfer corruption caught by the server, network errors without a
 * status — is retryable.
 */
const RETRYABLE_4XX = new Set([
  'RequestTimeout',
  'RequestTimeTooSkewed',
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'TooManyRequestsException',
  'BadDigest',
  'XAmzContentSHA256Mismatch',
  'IncompleteBody',
  'ExpiredToken',
  'OperationAborted',
  'NoSuchUpload',
])

const CREDENTIAL_ERRORS = new Set(['AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'InvalidToken', 'AllAccessDisabled'])

/** Maps an S3 client failure to an `ArtifactError` (retryable or not, with advice). */
export function classify(err: unknown, op: string, where: Record<string, string>): ArtifactError {
  const status = httpStatus(err)
  const name = s3ErrorName(err)
  const errno = typeof (err as S3ErrorShape | null)?.code === 'string' ? ((err as S3ErrorShape).code as string) : undefined
  const requestId = (err as S3ErrorShape | null)?.$metadata?.requestId
  const details: Record<string, unknown> = {
    ...where,
    op,
    ...(status === undefined ? {} : { httpStatus: status }),
    ...(name === undefined ? {} : { s3Code: name }),
    ...(errno === undefined ? {} : { errno }),
    ...(typeof requestId === 'string' ? { requestId } : {}),
  }
  const target = `s3://${where.bucket ?? ''}/${where.objectKey ?? ''}`.replace(/\/$/, '')
  const cause = errorMessage(err)
  const retryable = status === undefined || status >= 500 || status === 408 || status === 429 || (name !== undefined && RETRYABLE_4XX.has(name))
  if (retryable) {
    const hint = status === undefined ? `; check that ${where.endpoint ?? 'the S3 endpoint'} is reachable` : ''
    return new ArtifactError('ARTIFACT_IO', `S3 ${op} of ${target} failed (${name ?? 'network error'}: ${cause}); it may succeed if retried${hint}`, {
      retryable: true,
      details,
      cause: err,
    })
  }
  let advice: string
  if (name === 'NoSuchBucket') {
    advice = `bucket ${where.bucket ?? ''} does not exist: create it, fix artifacts.bucket, or set createBucket: true`
  } else if (name === 'BucketAlreadyExists') {
    advice = `bucket name ${where.bucket ?? ''} belongs to another account: choose another artifacts.bucket`
  } else if (status === 403 || (name !== undefined && CREDENTIAL_ERRORS.has(name))) {
    advice =
      'S3 refused the credentials: check artifacts.credentials (or the SDK credential chain) and that the policy allows s3:GetObject, s3:PutObject, s3:AbortMultipartUpload and s3:ListBucket on the bucket'
  } else {
    advice = 'the request was rejected and will be rejected again; check the artifacts options against what the server supports'
  }
  return new ArtifactError('ARTIFACT_IO', `S3 ${op} of ${target} failed (${name ?? `HTTP ${status}`}: ${cause}); ${advice}`, {
    retryable: false,
    details,
    cause: err,
  })
}

function notFound(ref: ArtifactRef, bucket: string, key: string): ArtifactError {
  return new ArtifactError('ARTIFACT_NOT_FOUND', `artifact ${ref.key} not found at s3://${bucket}/${key}; it was never stored here or was deleted`, {
    retryable: false,
    details: { key: ref.key, sha256: ref.sha256, size: ref.size, bucket, objectKey: key },
  })
}

function corrupt(ref: ArtifactRef, actual: { actualSize?: number; actualSha256?: string }): ArtifactError {
  return new ArtifactError(
    'ARTIFACT_CORRUPT',
    `artifact ${ref.key} is corrupt (${actual.actualSha256 === undefined ? 'size' : 'sha256'} mismatch); put the original bytes again or re-run the job that produced it (if the bad object still carries the right size and x-amz-meta-sha256, delete it first: put trusts those)`,
    { retryable: false, details: { key: ref.key, expectedSha256: ref.sha256, expectedSize: ref.size, ...actual } },
  )
}
