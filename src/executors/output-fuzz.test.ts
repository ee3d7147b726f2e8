import fc from 'fast-check'
import { randomUUID } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ExecutorError } from '../core/errors.js'
import { checkResultResponse, checkStatusResponse, checkSubmitResponse, parseErrorBody, parseJsonBody, ProtocolViolation } from './http/protocol.js'
import { processExecutor } from './process/process-executor.js'
import { parseOutputDocument } from './process/protocol.js'
import type { Executor } from './types.js'

/**
 * Executor-output parsing, fuzzed: whatever a prover (a local binary or a remote service)
 * writes, proofline either gets a well-formed result or a typed error that fails the attempt
 * as `invalid-output` — never another exception that could take the long-running process down.
 */

const SHA = 'ab'.repeat(32)
const validOutputDoc = { output: { commitment: 'c'.repeat(64), first: 1, last: 2 }, proof: { key: `proofs/${SHA}`, sha256: SHA, size: 10 } }

/** Text a prover could write: JSON of any shape, valid documents with one field replaced, or raw bytes. */
function proverText(): fc.Arbitrary<string> {
  const mutated = fc
    .tuple(fc.constantFrom('output', 'proof', 'proof.key', 'proof.sha256', 'proof.size'), fc.option(fc.jsonValue(), { nil: undefined }))
    .map(([path, value]) => {
      const doc = structuredClone(validOutputDoc) as Record<string, unknown>
      const [top, sub] = path.split('.') as [string, string | undefined]
      const target = sub === undefined ? doc : (doc[top] as Record<string, unknown>)
      const key = sub ?? top
      if (value === undefined) delete target[key]
      else target[key] = value
      return JSON.stringify(doc)
    })
  return fc.oneof(
    fc.jsonValue().map((v) => JSON.stringify(v) ?? 'null'),
    mutated,
    fc.string({ maxLength: 200 }),
    fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b).toString('latin1')),
    // Truncated valid documents.
    fc.nat({ max: JSON.stringify(validOutputDoc).length - 1 }).map((n) => JSON.stringify(validOutputDoc).slice(0, n)),
  )
}

/** A parsed document's shape, checked independently of the parser. */
function wellFormed(doc: { output: unknown; proof?: unknown }): void {
  expect(doc.output !== null && typeof doc.output === 'object' && !Array.isArray(doc.output)).toBe(true)
  if (doc.proof !== undefined) {
    const p = doc.proof as { key: unknown; sha256: unknown; size: unknown }
    expect(typeof p.key === 'string' && p.key.length > 0).toBe(true)
    expect(p.sha256).toMatch(/^[0-9a-f]{64}$/)
    expect(Number.isSafeInteger(p.size) && (p.size as number) >= 0).toBe(true)
  }
}

describe('executor output parsing (fuzzed)', () => {
  it('behavior: process protocol — any text is a well-formed output document or ExecutorError(invalid-output) with a clear message', () => {
    let refused = 0
    fc.assert(
      fc.property(proverText(), (text) => {
        let doc
        try {
          doc = parseOutputDocument(text, { jobId: 'j' })
        } catch (err) {
          expect(err).toBeInstanceOf(ExecutorError)
          const e = err as ExecutorError
          expect(e.failureClass).toBe('invalid-output')
          expect(e.message).toMatch(/^prover output is invalid: \S/)
          expect(e.details).toMatchObject({ jobId: 'j' })
          refused++
          return
        }
        wellFormed(doc)
      }),
      { numRuns: 1000 },
    )
    // The generators mostly produce garbage: the property is not vacuous.
    expect(refused).toBeGreaterThan(100)
    expect(parseOutputDocument(JSON.stringify(validOutputDoc))).toEqual(validOutputDoc)
  })

  it('behavior: HTTP protocol — any body is a checked response or a ProtocolViolation; error bodies never throw', () => {
    const expectIds = { requestId: 'req-1', jobId: 'range:1-2:x', programId: 'mock-v1' }
    const valid = {
      submit: { requestId: 'req-1' },
      status: { requestId: 'req-1', status: 'failed', error: { class: 'too-big', message: 'm' }, retryAfterMs: 10 },
      result: { ...expectIds, output: { commitment: 'c' }, proof: { base64: 'AAEC', sha256: SHA }, cost: 3 },
    }
    const checks = {
      submit: (d: unknown) => checkSubmitResponse(d),
      status: (d: unknown) => checkStatusResponse(d, 'req-1'),
      result: (d: unknown) => checkResultResponse(d, expectIds, 1_000),
    }
    const body = (name: keyof typeof valid): fc.Arbitrary<string> =>
      fc.oneof(
        proverText(),
        fc.tuple(fc.constantFrom(...Object.keys(valid[name])), fc.option(fc.jsonValue(), { nil: undefined })).map(([k, v]) => {
          const doc: Record<string, unknown> = { ...valid[name] }
          if (v === undefined) delete doc[k]
          else doc[k] = v
          return JSON.stringify(doc)
        }),
      )
    for (const name of ['submit', 'status', 'result'] as const) {
      expect(() => checks[name](valid[name])).not.toThrow()
      let refused = 0
      fc.assert(
        fc.property(body(name), (text) => {
          expect(() => parseErrorBody(text)).not.toThrow()
          try {
            checks[name](parseJsonBody(text))
          } catch (err) {
            expect(err).toBeInstanceOf(ProtocolViolation)
            expect((err as Error).message.length).toBeGreaterThan(5)
            refused++
          }
        }),
        { numRuns: 500 },
      )
      expect(refused).toBeGreaterThan(50)
    }
  })

  describe('through a real prover process', () => {
    let dir: string
    let executor: Executor
    const outFile = (): string => join(dir, 'answer')
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'pl-outfuzz-'))
      // A prover that reads its input on stdin and answers with whatever is in `answer`.
      const script = `let n=0;process.stdin.on('data',()=>n++);process.stdin.on('end',()=>process.stdout.write(require('fs').readFileSync(${JSON.stringify(outFile())})))`
      executor = processExecutor({ command: [process.execPath, '-e', script], protocol: 'stdio', timeoutMs: 20_000, workDir: join(dir, 'work'), ownerTag: `fuzz-${randomUUID()}` })
    })
    afterAll(async () => {
      await executor.close()
      await rm(dir, { recursive: true, force: true })
    })

    it('behavior: a prover that exits 0 with any output ends the attempt with a result or an invalid-output ExecutorError', async () => {
      const job = { id: 'range:1-2:fuzz', stage: 'range', attempt: 1, first: 1, last: 2, lastHash: '0x02', programId: 'mock-v1' }
      const inputs = [{ id: 'blocks:1', data: { number: 1, hash: '0x01', parentHash: '0x00' } }]
      const outcomes = { ok: 0, invalid: 0 }
      await fc.assert(
        fc.asyncProperty(proverText(), async (text) => {
          await writeFile(outFile(), text, 'latin1')
          try {
            const r = await executor.execute({ job, inputs, signal: new AbortController().signal })
            wellFormed(r)
            outcomes.ok++
          } catch (err) {
            expect(err).toBeInstanceOf(ExecutorError)
            expect((err as ExecutorError).failureClass).toBe('invalid-output')
            outcomes.invalid++
          }
        }),
        // Each run spawns a process: few runs, seeded for a repeatable set.
        { numRuns: 12, seed: 8 },
      )
      expect(outcomes.invalid).toBeGreaterThan(0)
    })
  })
})
