import { DeleteBucketCommand, DeleteObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3'
import { mkdtemp, rm } from 'node:fs/promises'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** The fixed key pair s3rver accepts (its built-in dummy account). */
export const S3RVER_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const

/** A running s3rver. */
export interface S3TestServer {
  /** `http://127.0.0.1:<port>`; use with `forcePathStyle: true`. */
  endpoint: string
  /** Always `S3RVER_CREDENTIALS`. */
  credentials: { accessKeyId: string; secretAccessKey: string }
  /** The folder s3rver stores buckets in; removed by `close()`. */
  directory: string
  /** Stops the server (dropping open keep-alive connections) and deletes its folder. */
  close(): Promise<void>
}

// s3rver ships no types: depend on the subset used here (style rule 4).
interface S3rverInstance {
  run(): Promise<AddressInfo>
  close(): Promise<void>
  httpServer?: Server
}
type S3rverConstructor = new (opts: {
  address: string
  port: number
  silent: boolean
  directory: string
  resetOnClose: boolean
  configureBuckets: { name: string }[]
}) => S3rverInstance

const S3rver = createRequire(import.meta.url)('s3rver') as S3rverConstructor

/**
 * Starts s3rver on 127.0.0.1 on a free port, silent, storing into a fresh temp folder.
 * `buckets` are created before it starts listening.
 *
 * s3rver is a test double, not S3: it checks the access key id but not SigV4 signatures, does
 * not verify `Content-MD5`, has no `AbortMultipartUpload` (405), does not enforce the 5 MiB
 * minimum part size, writes objects in place (not atomically), and rejects the SDK's default
 * CRC32 request checksums — clients must set `requestChecksumCalculation: 'WHEN_REQUIRED'`.
 */
export async function startS3Server(opts: { buckets?: string[] } = {}): Promise<S3TestServer> {
  const directory = await mkdtemp(join(tmpdir(), 'proofline-s3rver-'))
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory,
    resetOnClose: false,
    configureBuckets: (opts.buckets ?? []).map((name) => ({ name })),
  })
  let address: AddressInfo
  try {
    address = await server.run()
  } catch (err) {
    await rm(directory, { recursive: true, force: true })
    throw err
  }
  let closed: Promise<void> | undefined
  return {
    endpoint: `http://127.0.0.1:${address.port}`,
    credentials: { ...S3RVER_CREDENTIALS },
    directory,
    close() {
      closed ??= (async () => {
        // http.Server#close waits for idle keep-alive sockets of clients that were not destroyed.
        const done = server.close()
        server.httpServer?.closeAllConnections()
        await done
        await rm(directory, { recursive: true, force: true })
      })()
      return closed
    },
  }
}

/**
 * Deletes every object in `bucket`, then the bucket (a test's cleanup). One `DeleteObject` per
 * key: `DeleteObjects` needs a request checksum some servers do not accept.
 */
export async function deleteBucket(client: S3Client, bucket: string): Promise<void> {
  let token: string | undefined
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, ...(token === undefined ? {} : { ContinuationToken: token }) }))
    for (const o of page.Contents ?? []) if (o.Key !== undefined) await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: o.Key }))
    token = page.IsTruncated === true ? page.NextContinuationToken : undefined
  } while (token !== undefined)
  await client.send(new DeleteBucketCommand({ Bucket: bucket }))
}

/** A raw SDK client for `server` (for test setup and for changing objects behind a store's back). */
export function rawS3Client(server: Pick<S3TestServer, 'endpoint' | 'credentials'>): S3Client {
  return new S3Client({
    region: 'us-east-1',
    endpoint: server.endpoint,
    forcePathStyle: true,
    credentials: server.credentials,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  })
}
