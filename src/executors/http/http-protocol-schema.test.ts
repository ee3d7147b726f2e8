import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Schema, schemaChecker } from '../schema-check.fixture.js'
import { checkResultResponse, checkStatusResponse, checkSubmitResponse } from './protocol.js'
import { type MockProverService, mockProverService } from './mock-service.js'

// docs/executor-protocol.{md,schema.json} §11 are the contract of the HTTP protocol; these tests
// keep the docs, the executor's parsers and the mock service from drifting apart.

const DOCS = fileURLToPath(new URL('../../../docs/', import.meta.url))
const schema = JSON.parse(readFileSync(join(DOCS, 'executor-protocol.schema.json'), 'utf8')) as Schema
const check = schemaChecker(schema)
const as = (def: string, v: unknown): string[] => check({ $ref: `#/$defs/${def}` }, v)

function docExample(name: string): unknown {
  const md = readFileSync(join(DOCS, 'executor-protocol.md'), 'utf8')
  const m = new RegExp(`<!-- example:${name} -->\\s*\`\`\`json\\n([\\s\\S]*?)\`\`\``).exec(md)
  if (m?.[1] === undefined) throw new Error(`docs/executor-protocol.md has no example:${name} block`)
  return JSON.parse(m[1])
}

const hash = (n: number): string => `0x${n.toString(16).padStart(64, '0')}`
const submitBody = {
  protocol: 'proofline.executor/v1',
  job: { id: 'range:1-2:abcdef0123456789', stage: 'range', attempt: 1, first: 1, last: 2, lastHash: hash(2), programId: 'mock-v1' },
  inputs: [1, 2].map((n) => ({ id: `b${n}`, data: { number: n, hash: hash(n), parentHash: hash(n - 1), timestamp: n, gasUsed: 0, cost: 1, txCount: 0 } })),
}

describe('HTTP protocol: docs, schema, parsers and the mock service agree', () => {
  let service: MockProverService
  beforeAll(async () => {
    service = await mockProverService()
  })
  afterAll(async () => {
    await service.close()
  })

  it('behavior: the doc examples validate against the schema and pass the executor\'s checks', () => {
    const sub = docExample('http-submit-response')
    const status = docExample('http-status')
    const result = docExample('http-result') as { requestId: string; jobId: string; programId: string }
    expect(as('httpSubmitResponse', sub)).toEqual([])
    expect(as('httpStatus', status)).toEqual([])
    expect(as('httpResult', result)).toEqual([])
    expect(checkSubmitResponse(sub).requestId).toBe('req-7f3a9c01')
    expect(checkStatusResponse(status, 'req-7f3a9c01').error?.class).toBe('too-big')
    expect(checkResultResponse(result, result, 1024).proof?.bytes).toEqual(new Uint8Array([0, 1, 2]))
  })

  it('behavior: the checker and the parsers reject what breaks the schema', () => {
    expect(as('httpStatus', { requestId: 'r', status: 'done' })).not.toEqual([])
    expect(as('httpSubmitResponse', { requestId: 'has space' })).not.toEqual([])
    expect(as('httpResult', { requestId: 'r', jobId: 'j', output: {} })).toContain('$: missing required programId')
    expect(() => checkStatusResponse({ requestId: 'r', status: 'done' }, 'r')).toThrow(/status/)
    expect(() => checkStatusResponse({ requestId: 'other', status: 'running' }, 'r')).toThrow(/other/)
    expect(() => checkSubmitResponse({ requestId: '../etc' })).toThrow(/requestId/)
  })

  it('behavior: the mock service\'s real answers and the submit body validate', async () => {
    const post = await fetch(`${service.url}/v1/proofs`, { method: 'POST', body: JSON.stringify(submitBody), headers: { 'content-type': 'application/json' } })
    const sub = (await post.json()) as { requestId: string }
    expect(as('httpSubmitResponse', sub)).toEqual([])
    expect(as('httpSubmit', [...service.requests.values()][0]?.body)).toEqual([])
    const status: unknown = await (await fetch(`${service.url}/v1/proofs/${sub.requestId}`)).json()
    expect(as('httpStatus', status)).toEqual([])
    expect(checkStatusResponse(status, sub.requestId).status).toBe('succeeded')
    const result: unknown = await (await fetch(`${service.url}/v1/proofs/${sub.requestId}/result`)).json()
    expect(as('httpResult', result)).toEqual([])
    const unknown = await fetch(`${service.url}/v1/proofs/nope`)
    expect(unknown.status).toBe(404)
    expect(as('httpError', ((await unknown.json()) as { error: unknown }).error)).toEqual([])
  })
})
