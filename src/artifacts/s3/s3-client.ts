import {
  AbortMultipartUploadCommand,
  type BucketLocationConstraint,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3'

/** Per-call options of every `S3ObjectClient` method. */
export interface S3CallOptions {
  /** Aborts the HTTP request; the call then rejects. */
  abortSignal?: AbortSignal
}

/** The body of a `GetObject` response. */
export interface S3ObjectBody {
  /** Reads the whole body. */
  transformToByteArray(): Promise<Uint8Array>
  /** Discards the body without reading it, so its connection can be released. */
  destroy(): void
}

/**
 * The subset of S3 the artifact store uses, shaped like the AWS SDK's inputs and outputs (so the
 * S3 API reference applies) but owning no SDK type. Implementations reject with the SDK's
 * service exceptions (`name`, `$metadata.httpStatusCode`) or with Node network errors (`code`).
 * Tests wrap it to count or fail calls; another S3 client can stand in for the SDK.
 */
export interface S3ObjectClient {
  headBucket(input: { Bucket: string }, opts?: S3CallOptions): Promise<unknown>
  createBucket(input: { Bucket: string; CreateBucketConfiguration?: { LocationConstraint: string } }, opts?: S3CallOptions): Promise<unknown>
  headObject(
    input: { Bucket: string; Key: string },
    opts?: S3CallOptions,
  ): Promise<{ ContentLength?: number | undefined; Metadata?: Record<string, string> | undefined }>
  getObject(input: { Bucket: string; Key: string }, opts?: S3CallOptions): Promise<{ ContentLength?: number | undefined; Body?: S3ObjectBody | undefined }>
  putObject(
    input: {
      Bucket: string
      Key: string
      Body: Uint8Array
      ContentLength: number
      ContentMD5: string
      ContentType: string
      Metadata: Record<string, string>
    },
    opts?: S3CallOptions,
  ): Promise<unknown>
  createMultipartUpload(
    input: { Bucket: string; Key: string; ContentType: string; Metadata: Record<string, string> },
    opts?: S3CallOptions,
  ): Promise<{ UploadId?: string | undefined }>
  uploadPart(
    input: { Bucket: string; Key: string; UploadId: string; PartNumber: number; Body: Uint8Array; ContentLength: number; ContentMD5: string },
    opts?: S3CallOptions,
  ): Promise<{ ETag?: string | undefined }>
  completeMultipartUpload(
    input: { Bucket: string; Key: string; UploadId: string; MultipartUpload: { Parts: { ETag: string; PartNumber: number }[] } },
    opts?: S3CallOptions,
  ): Promise<unknown>
  abortMultipartUpload(input: { Bucket: string; Key: string; UploadId: string }, opts?: S3CallOptions): Promise<unknown>
  /** Removes an object; S3 answers success for a missing key too. Used by the record store only. */
  deleteObject(input: { Bucket: string; Key: string }, opts?: S3CallOptions): Promise<unknown>
  /** Closes the client's sockets. */
  destroy(): void
}

/** Options of `sdkS3Client`. */
export interface SdkS3ClientOptions {
  /** @default 'us-east-1' */
  region?: string
  /** An S3-compatible endpoint (`http://127.0.0.1:9000`); AWS's own when absent. */
  endpoint?: string
  /**
   * Path-style URLs (`<endpoint>/<bucket>/<key>`) instead of virtual-hosted ones; most
   * S3-compatible servers need it.
   * @default false
   */
  forcePathStyle?: boolean
  /** Static credentials; the SDK's default chain (env, profile, instance role…) when absent. */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string }
  /**
   * Attempts per S3 call, made by the SDK with backoff before an error reaches the store.
   * @default 3
   */
  maxAttempts?: number
  /**
   * Abandon a TCP/TLS connect after this long.
   * @default 10_000
   */
  connectTimeoutMs?: number
  /**
   * Abandon a request whose socket stays idle this long (a hung server), so no call waits forever.
   * @default 60_000
   */
  idleTimeoutMs?: number
}

/**
 * An `S3ObjectClient` over the AWS SDK v3. Checksums are sent and validated only when an
 * operation requires them: the SDK's default CRC32 checksums are not understood by every
 * S3-compatible server (s3rver rejects them), and the store does its own integrity checks
 * (`Content-MD5` on uploads, size + sha256 on reads).
 */
export function sdkS3Client(opts: SdkS3ClientOptions = {}): S3ObjectClient {
  const client = new S3Client({
    region: opts.region ?? 'us-east-1',
    ...(opts.endpoint === undefined ? {} : { endpoint: opts.endpoint }),
    forcePathStyle: opts.forcePathStyle ?? false,
    ...(opts.credentials === undefined ? {} : { credentials: opts.credentials }),
    maxAttempts: opts.maxAttempts ?? 3,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: { connectionTimeout: opts.connectTimeoutMs ?? 10_000, socketTimeout: opts.idleTimeoutMs ?? 60_000 },
  })
  return {
    headBucket: (input, o) => client.send(new HeadBucketCommand(input), o),
    createBucket: (input, o) =>
      client.send(
        new CreateBucketCommand({
          Bucket: input.Bucket,
          // The SDK's union of region names lags new regions and other servers' names; S3 decides.
          ...(input.CreateBucketConfiguration === undefined
            ? {}
            : { CreateBucketConfiguration: { LocationConstraint: input.CreateBucketConfiguration.LocationConstraint as BucketLocationConstraint } }),
        }),
        o,
      ),
    headObject: (input, o) => client.send(new HeadObjectCommand(input), o),
    async getObject(input, o) {
      const out = await client.send(new GetObjectCommand(input), o)
      const body = out.Body
      return {
        ContentLength: out.ContentLength,
        Body:
          body === undefined
            ? undefined
            : {
                transformToByteArray: () => body.transformToByteArray(),
                destroy() {
                  // In Node the body is an http.IncomingMessage; elsewhere a web stream.
                  const b = body as { destroy?: () => void; cancel?: () => Promise<void> }
                  if (typeof b.destroy === 'function') b.destroy()
                  else if (typeof b.cancel === 'function') b.cancel().catch(() => undefined)
                },
              },
      }
    },
    putObject: (input, o) => client.send(new PutObjectCommand(input), o),
    createMultipartUpload: (input, o) => client.send(new CreateMultipartUploadCommand(input), o),
    uploadPart: (input, o) => client.send(new UploadPartCommand(input), o),
    completeMultipartUpload: (input, o) => client.send(new CompleteMultipartUploadCommand(input), o),
    abortMultipartUpload: (input, o) => client.send(new AbortMultipartUploadCommand(input), o),
    deleteObject: (input, o) => client.send(new DeleteObjectCommand(input), o),
    destroy: () => client.destroy(),
  }
}
