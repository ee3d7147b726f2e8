import { readFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { openApiDocument } from './openapi.js'

describe('docs/openapi.json', () => {
  it('behavior: equals the document GET /openapi.json serves (regenerate: npx tsx scripts/write-openapi.ts)', async () => {
    const file = JSON.parse(await readFile(new URL('../../docs/openapi.json', import.meta.url), 'utf8')) as unknown
    expect(file).toEqual(JSON.parse(JSON.stringify(openApiDocument())))
  })
})
