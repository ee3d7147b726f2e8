import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect, it } from 'vitest'
import { recordStoreConformance } from '../conformance.js'
import { fsRecords } from './fs-records.js'

recordStoreConformance('fs', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'proofline-fs-records-'))
  const store = fsRecords({ dir })
  return {
    store,
    async cleanup() {
      await store.close()
      await rm(dir, { recursive: true, force: true })
    },
  }
})

it('behavior: records live under <dir>/records and leave no temp files behind', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'proofline-fs-records-'))
  try {
    const store = fsRecords({ dir })
    await store.set('http/r1', new TextEncoder().encode('{}'))
    await store.set('http/r1', new TextEncoder().encode('{"again":true}'))
    expect(await readdir(join(dir, 'records', 'http'))).toEqual(['r1'])
    await store.close()
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})
