import { readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { mockCommitment } from '../../backends/mock/mock-proof.js'
import { mockStatement } from '../mock/mock-executor.js'
import { type Schema, schemaChecker } from '../schema-check.fixture.js'
import { processExecutor } from './process-executor.js'
import { type ExecutorInputDocument, inputDocument, parseOutputDocument } from './protocol.js'

// The docs are the contract; these tests keep docs/executor-protocol.{md,schema.json} and the
// implementation from drifting apart (checker: ../schema-check.fixture.ts).

const DOCS = fileURLToPath(new URL('../../../docs/', import.meta.url))
const FAKE = fileURLToPath(new URL('./test-fixtures/fake-prover.mjs', import.meta.url))
const MOCK_PROVER = fileURLToPath(new URL('../../../examples/mock-prover.mjs', import.meta.url))

const schema = JSON.parse(readFileSync(join(DOCS, 'executor-protocol.schema.json'), 'utf8')) as Schema
const defs = schema['$defs'] as Record<string, Schema>
const check = schemaChecker(schema)

const asInput = (v: unknown): string[] => check({ $ref: '#/$defs/input' }, v)
const asOutput = (v: unknown): string[] => check({ $ref: '#/$defs/output' }, v)

function docExample(name: 'input' | 'output'): unknown {
  const md = readFileSync(join(DOCS, 'executor-protocol.md'), 'utf8')
  const m = new RegExp(`<!-- example:${name} -->\\s*\`\`\`json\\n([\\s\\S]*?)\`\`\``).exec(md)
  if (m?.[1] === undefined) throw new Error(`docs/executor-protocol.md has no example:${name} block`)
  return JSON.parse(m[1])
}

const job = { id: 'range:1-2:abcdef0123456789', stage: 'range', attempt: 2, first: 1, last: 2, lastHash: '0x02', programId: 'mock-v1' }
const inputs = [
  { id: 'blocks:1', data: { number: 1, hash: '0x01', parentHash: '0x00', timestamp: 1, gasUsed: 0, cost: 1, txCount: 0 } },
  { id: 'blocks:2', data: { number: 2, hash: '0x02', parentHash: '0x01', timestamp: 2, gasUsed: 0, cost: 1, txCount: 0 } },
]

describe('docs/executor-protocol.schema.json', () => {
  it('behavior: the schema is draft 2020-12 with input and output definitions', () => {
    expect(schema['$schema']).toBe('https://json-schema.org/draft/2020-12/schema')
    expect(defs['input']?.['required']).toEqual(['protocol', 'job', 'inputs'])
    expect(defs['output']?.['required']).toEqual(['output'])
  })

  it('behavior: the examples in docs/executor-protocol.md are valid, and the output is the mock answer to the input', () => {
    const input = docExample('input') as ExecutorInputDocument
    const output = docExample('output') as { output: { commitment: string } }
    expect(asInput(input)).toEqual([])
    expect(asOutput(output)).toEqual([])
    for (const i of input.inputs) expect(check({ $ref: '#/$defs/blockMessage' }, i.data)).toEqual([])
    expect(output.output.commitment).toBe(mockCommitment(mockStatement(input)))
    expect(() => parseOutputDocument(JSON.stringify(output))).not.toThrow()
  })

  it('behavior: the checker rejects documents that break the schema (so the tests above can fail)', () => {
    const good = inputDocument({ job, inputs })
    expect(asInput({ ...good, protocol: 'proofline.executor/v2' })).not.toEqual([])
    const { id: _dropped, ...jobWithoutId } = job
    expect(asInput({ ...good, job: jobWithoutId })).toContain('$.job: missing required id')
    expect(asInput({ ...good, job: { ...job, attempt: 0 } })).toContain('$.job.attempt: below 1')
    expect(asInput({ ...good, inputs: [{ id: 'x' }] })).toContain('$.inputs[0]: missing required data')
    expect(asOutput({ result: {} })).toContain('$: missing required output')
    expect(asOutput({ output: [] })).not.toEqual([])
    expect(asOutput({ output: {}, proof: { key: 'k', sha256: 'XYZ', size: 1 } })).not.toEqual([])
    expect(check(schema, 42)).not.toEqual([])
  })

  it('behavior: the schema requires exactly the job fields the executor sends', () => {
    const sent = Object.keys(inputDocument({ job: { ...job, extra: 1 } as typeof job, inputs }).job).sort()
    expect([...(defs['job']?.['required'] as string[])].sort()).toEqual(sent)
  })

  it('behavior: the IN.json processExecutor writes and the OUT.json mock-prover.mjs writes both validate', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'proofline-protocol-schema-'))
    const echo = processExecutor({ command: [process.execPath, FAKE, '--mode', 'echo'], timeoutMs: 20_000, workDir: dir, ownerTag: 'schema-test' })
    const mock = processExecutor({ command: [process.execPath, MOCK_PROVER], timeoutMs: 20_000, workDir: dir, ownerTag: 'schema-test' })
    try {
      const req = { job, inputs, signal: new AbortController().signal }
      const sentIn = (await echo.execute(req)).output['echo']
      expect(asInput(sentIn)).toEqual([])
      const res = await mock.execute(req)
      expect(asOutput({ output: res.output })).toEqual([])
    } finally {
      await echo.close()
      await mock.close()
      await rm(dir, { recursive: true, force: true })
    }
  })
})
