import { createHash } from 'node:crypto'
import { ArtifactError, ConfigError } from '../../core/errors.js'
import { RECORDS_PREFIX, checkPrefix, checkRecordName } from '../keys.js'
import type { RecordStore } from '../types.js'
import { classify, isNotFound } from './s3-artifacts.js'
import { type S3ObjectClient, type SdkS3ClientOptions, sdkS3Client } from './s3-client.js'

/** Options of `s3Records`: the same bucket and prefix as the artifact store's. */
export interface S3RecordsOptions extends SdkS3ClientOptions {
  bucket: string
  /** Key prefix inside the bucket; records are `<prefix>/records/<name>`. No prefix when absent. */
  prefix?: string
  /** Use this client instead of one built from the connection options; it is not destroyed by `close`. */
  client?: S3ObjectClient
}

/**
 * Named records in the artifact bucket, as `s3://<bucket>/<prefix>/records/<name>`. One
 * `PutObject` per `set` (S3 replaces an object atomically; `Content-MD5` guards the transfer),
 * `GetObject` for `get` (a missing key is `null`), `DeleteObject` for `delete`. Failures are
 * `ArtifactError`s classified like the artifact store's (5xx/throttling/network retryable).
 */
export function s3Records(opts: S3RecordsOptions): RecordStore {
  if (typeof opts.bucket !== 'string' || opts.bucket.length === 0) {
    throw new ConfigError('s3Records: bucket must be a non-empty bucket name', { option: 'bucket' })
  }
  const bucket = opts.bucket
  const base = opts.prefix === undefined ? RECORDS_PREFIX : `${checkPrefix(opts.prefix)}/${RECORDS_PREFIX}`
  const ownsClient = opts.client === undefined
  const client = opts.client ?? sdkS3Client(opts)
  let closed = false

  function keyOf(name: string): string {
    if (closed) throw new ArtifactError('ARTIFACT_IO', 'record store is closed', { retryable: false, details: { bucket } })
    return `${base}/${checkRecordName(name)}`
  }
  const where = (key: string): Record<string, string> => ({ bucket, objectKey: key, ...(opts.endpoint === undefined ? {} : { endpoint: opts.endpoint }) })
  const call = (signal: AbortSignal | undefined): { abortSignal?: AbortSignal } => (signal === undefined ? {} : { abortSignal: signal })

  return {
    async get(name, o = {}) {
      const key = keyOf(name)
      try {
        const out = await client.getObject({ Bucket: bucket, Key: key }, call(o.signal))
        return out.Body === undefined ? new Uint8Array(0) : await out.Body.transformToByteArray()
      } catch (err) {
        if (isNotFound(err)) return null
        if (o.signal?.aborted === true) throw o.signal.reason
        throw classify(err, 'get record', where(key))
      }
    },

    async set(name, bytes, o = {}) {
      const key = keyOf(name)
      try {
        await client.putObject(
          {
            Bucket: bucket,
            Key: key,
            Body: bytes,
            ContentLength: bytes.byteLength,
            ContentMD5: createHash('md5').update(bytes).digest('base64'),
            ContentType: 'application/json',
            Metadata: {},
          },
          call(o.signal),
        )
      } catch (err) {
        if (o.signal?.aborted === true) throw o.signal.reason
        throw classify(err, 'put record', where(key))
      }
    },

    async delete(name, o = {}) {
      const key = keyOf(name)
      try {
        await client.deleteObject({ Bucket: bucket, Key: key }, call(o.signal))
      } catch (err) {
        if (isNotFound(err)) return
        if (o.signal?.aborted === true) throw o.signal.reason
        throw classify(err, 'delete record', where(key))
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
