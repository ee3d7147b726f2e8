import { CreateBucketCommand, GetObjectCommand, type S3Client } from '@aws-sdk/client-s3'
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { deleteBucket, rawS3Client, type S3TestServer, startS3Server } from '../../../test/support/s3-server.js'
import { recordStoreConformance } from '../conformance.js'
import { s3Records } from './s3-records.js'

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

async function newBucket(): Promise<string> {
  const bucket = `r-${randomBytes(6).toString('hex')}`
  await raw.send(new CreateBucketCommand({ Bucket: bucket }))
  return bucket
}
const connection = (): { endpoint: string; forcePathStyle: boolean; credentials: { accessKeyId: string; secretAccessKey: string } } => ({
  endpoint: server.endpoint,
  forcePathStyle: true,
  credentials: server.credentials,
})

recordStoreConformance('s3 (s3rver)', async () => {
  const bucket = await newBucket()
  const store = s3Records({ bucket, prefix: 'deploy-a', ...connection() })
  return {
    store,
    async cleanup() {
      await store.close()
      await deleteBucket(raw, bucket)
    },
  }
})

it('behavior: a record is the object <prefix>/records/<name> in the artifact bucket', async () => {
  const bucket = await newBucket()
  const store = s3Records({ bucket, prefix: 'deploy-a', ...connection() })
  try {
    await store.set('http/r1', new TextEncoder().encode('{"requestId":"x"}'))
    const out = await raw.send(new GetObjectCommand({ Bucket: bucket, Key: 'deploy-a/records/http/r1' }))
    expect(await out.Body?.transformToString()).toBe('{"requestId":"x"}')
  } finally {
    await store.close()
    await deleteBucket(raw, bucket)
  }
})
