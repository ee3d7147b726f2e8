import { randomUUID } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { parse as parseYaml } from 'yaml'
import { fsArtifacts } from '../../artifacts/fs/fs-artifacts.js'
import type { ArtifactStore } from '../../artifacts/types.js'
import { loadConfig } from '../../config/load.js'
import { ConfigError, ExecutorError } from '../../core/errors.js'
import { jobId } from '../../core/ids.js'
import type { Job } from '../../core/types.js'
import { mockVerifier } from '../../pipeline/verify.js'
import type { ExecuteRequest, Executor } from '../types.js'
import { createExecutor } from '../../wiring.js'
import { type ZkvmExecutorOptions, zkvmExecutor } from './zkvm-executor.js'

// Conformance of the SP1 / RISC Zero adapter against examples/zkvm-host-standin.mjs, a stand-in
// that behaves like those hosts at their interface (docs/zkvm.md).

const EXAMPLES = fileURLToPath(new URL('../../../examples/', import.meta.url))
const STANDIN = join(EXAMPLES, 'zkvm-host-standin.mjs')
const RANGE_ELF = join(EXAMPLES, 'zkvm', 'range.elf')
const VKEY = { sp1: '0xd07eed984d098fc4dac0a130931c7ff41e0a34014980086018951d53369ea01a', risc0: 'da5f4d190619203f425e61f97b2d8f7511d2bdc3d9a43669eb2dd4d398978aa0' }
const hash = (n: number): `0x${string}` => `0x${n.toString(16).padStart(64, '0')}`

function request(first: number, last: number, over: { brokenAt?: number; gas?: number; programId?: string } = {}): ExecuteRequest {
  const inputs = []
  for (let n = first; n <= last; n++) {
    inputs.push({ id: `b${n}`, data: { number: n, hash: hash(n), parentHash: n === over.brokenAt ? hash(424242) : hash(n - 1), timestamp: n, gasUsed: over.gas ?? 1000, cost: 1000, txCount: 1 } })
  }
  const programId = over.programId ?? 'sp1-range-standin'
  return {
    job: { id: jobId({ stage: 'range', first, last, lastHash: hash(last), programId }), stage: 'range', attempt: 1, first, last, lastHash: hash(last), programId },
    inputs,
    signal: new AbortController().signal,
  }
}
const asJob = (req: ExecuteRequest): Job => ({ ...req.job, inputs: req.inputs }) as unknown as Job

const INPUT_FIELDS = {
  program: 'job.programId',
  stage: 'job.stage',
  first: 'job.first',
  last: 'job.last',
  last_hash: 'job.lastHash',
  commitments: 'inputs[*].data.hash',
  parent_hashes: 'inputs[*].data.parentHash',
  gas: 'inputs[*].data.gasUsed',
}
const ABI = 'bytes32 commitment, uint64 first, uint64 last, bytes32 lastHash'

async function failure(p: Promise<unknown>): Promise<ExecutorError> {
  const err: unknown = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(ExecutorError)
  return err as ExecutorError
}

describe('zkVM adapter conformance against a protocol-faithful host stand-in', () => {
  let dir: string
  let artifacts: ArtifactStore
  let executors: Executor[]
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'proofline-zkvm-'))
    artifacts = fsArtifacts({ dir: join(dir, 'artifacts') })
    executors = []
  })
  afterEach(async () => {
    await Promise.all(executors.map((e) => e.close()))
    await rm(dir, { recursive: true, force: true })
  })

  function host(vm: 'sp1' | 'risc0', extra: string[] = [], over: Partial<ZkvmExecutorOptions> = {}): Executor {
    const files = vm === 'sp1'
      ? { proof: { field: 'proof' }, publicValues: { field: 'public_values' }, vkey: { field: 'vkey' }, fields: { cycles: 'cycles' } }
      : { proof: { file: 'receipt.bin' }, publicValues: { file: 'journal.bin' }, vkey: { file: 'image_id.txt' } }
    const ex = zkvmExecutor({
      vm,
      command: [process.execPath, STANDIN, '--vm', vm, '--elf', '{elf}', '--input', '{input}', '--out-dir', '{outputDir}', ...extra],
      program: { elf: RANGE_ELF, vkey: VKEY[vm] },
      input: { fields: INPUT_FIELDS },
      output: { ...files, publicValuesAbi: ABI },
      artifacts,
      timeoutMs: 30_000,
      workDir: join(dir, 'work'),
      ownerTag: `zkvm-test-${randomUUID().slice(0, 8)}`,
      ...over,
    })
    executors.push(ex)
    return ex
  }

  it('behavior: SP1 (output JSON): proof bytes are stored, public values decoded, vkey checked; the output passes the stage verifier', async () => {
    const req = request(1, 4)
    const out = await host('sp1').execute(req)
    expect(out.output).toMatchObject({ program: 'sp1-range-standin', vm: 'sp1', vkey: VKEY.sp1, first: 1, last: 4, lastHash: hash(4), cycles: 1_004_000 })
    expect(out.output.publicValues).toMatch(/^0x[0-9a-f]{256}$/)
    expect(mockVerifier(asJob(req), out.output)).toEqual({ ok: true })
    const proof = Buffer.from(await artifacts.get(out.proof as NonNullable<typeof out.proof>))
    expect(proof.subarray(0, 18).toString()).toBe('STANDIN-sp1-PROOF:')
    expect(out.stderrTail).toMatch(/1004000 cycles/)
  })

  it('behavior: RISC Zero (files): receipt, journal and image id are mapped; the image id is normalised and checked', async () => {
    const req = request(5, 7, { programId: 'risc0-range-standin' })
    const out = await host('risc0').execute(req)
    expect(out.output).toMatchObject({ program: 'risc0-range-standin', vm: 'risc0', vkey: `0x${VKEY.risc0}`, first: 5, last: 7 })
    expect(mockVerifier(asJob(req), out.output)).toEqual({ ok: true })
    expect(Buffer.from(await artifacts.get(out.proof as NonNullable<typeof out.proof>)).subarray(0, 20).toString()).toBe('STANDIN-risc0-PROOF:')
  })

  it('behavior: the input file holds exactly the mapped fields', async () => {
    const seen = join(dir, 'seen.json')
    // A host that copies its input aside, then behaves like the stand-in.
    const script = join(dir, 'copy-then-run.mjs')
    await writeFile(script, `import { copyFileSync } from 'node:fs'; import { execFileSync } from 'node:child_process'
const i = process.argv.indexOf('--input'); copyFileSync(process.argv[i + 1], ${JSON.stringify(seen)})
execFileSync(process.execPath, [${JSON.stringify(STANDIN)}, ...process.argv.slice(2)], { stdio: 'inherit' })`)
    const ex = host('sp1', [], { command: [process.execPath, script, '--vm', 'sp1', '--elf', '{elf}', '--input', '{input}', '--out-dir', '{outputDir}'] })
    await ex.execute(request(10, 11))
    expect(JSON.parse(await readFile(seen, 'utf8'))).toEqual({
      program: 'sp1-range-standin', stage: 'range', first: 10, last: 11, last_hash: hash(11),
      commitments: [hash(10), hash(11)], parent_hashes: [hash(9), hash(10)], gas: [1000, 1000],
    })
  })

  it('behavior: over the cycle limit is too-big (split): SP1 panics with exit 101, RISC Zero says "Session limit exceeded"', async () => {
    for (const vm of ['sp1', 'risc0'] as const) {
      const err = await failure(host(vm, ['--cycle-limit', '1500000']).execute(request(1, 4, { gas: 200_000, programId: `${vm}-range-standin` })))
      expect(err.failureClass, vm).toBe('too-big')
      expect(err.details.exitCode, vm).toBe(vm === 'sp1' ? 101 : 1)
      expect(err.message, vm).toMatch(/split/)
    }
  })

  it('behavior: a bad ELF is unprovable (dead-letter and alert), for both hosts', async () => {
    const bad = join(dir, 'not-an.elf')
    await writeFile(bad, 'this is not an ELF file')
    for (const vm of ['sp1', 'risc0'] as const) {
      const err = await failure(host(vm, [], { program: { elf: bad, vkey: VKEY[vm] } }).execute(request(1, 2)))
      expect(err.failureClass, vm).toBe('unprovable')
      expect(String(err.details.stderrTail), vm).toMatch(/elf/i)
    }
  })

  it('behavior: a guest that rejects its input (broken header chain) is unprovable', async () => {
    for (const vm of ['sp1', 'risc0'] as const) {
      const err = await failure(host(vm).execute(request(1, 4, { brokenAt: 3 })))
      expect(err.failureClass, vm).toBe('unprovable')
    }
  })

  it('behavior: a host crash is transient (retried): a panic without a known text, and death by SIGSEGV', async () => {
    const panic = await failure(host('sp1', ['--crash', 'panic']).execute(request(1, 2)))
    expect(panic.failureClass).toBe('transient')
    expect(panic.details.exitCode).toBe(101)
    const segv = await failure(host('sp1', ['--crash', 'segv']).execute(request(1, 2)))
    expect(segv.failureClass).toBe('transient')
    expect(segv.details.signal).toBe('SIGSEGV')
  })

  it('behavior: a host that proved another program (vkey mismatch) is not believed: invalid-output', async () => {
    const err = await failure(host('sp1', [], { program: { elf: RANGE_ELF, vkey: VKEY.risc0 } }).execute(request(1, 2)))
    expect(err.failureClass).toBe('invalid-output')
    expect(err.message).toMatch(/program\.vkey pins/)
  })

  it('behavior: a host that exits 0 without its files is invalid-output; malformed public values too', async () => {
    const silent = await failure(host('sp1', [], { command: [process.execPath, '-e', 'process.exit(0)'] }).execute(request(1, 2)))
    expect(silent.failureClass).toBe('invalid-output')
    const wrongAbi = await failure(host('sp1', [], { output: { proof: { field: 'proof' }, publicValues: { field: 'public_values' }, vkey: { field: 'vkey' }, publicValuesAbi: 'bytes32 a, bytes32 b, bytes32 c, bytes32 d, bytes32 e' } }).execute(request(1, 2)))
    expect(wrongAbi.failureClass).toBe('invalid-output')
  })

  it('behavior: exitCodes and errorPatterns from config take precedence over the presets', async () => {
    const three = await failure(host('sp1', [], { command: [process.execPath, '-e', 'process.exit(3)'], exitCodes: { '3': 'too-big' } }).execute(request(1, 2)))
    expect(three.failureClass).toBe('too-big')
    // An operator whose guest input comes from flaky RPC nodes maps guest panics to transient.
    const flaky = await failure(host('risc0', [], { errorPatterns: [{ match: 'guest panicked', class: 'transient' }] }).execute(request(1, 4, { brokenAt: 2 })))
    expect(flaky.failureClass).toBe('transient')
  })

  it('behavior: a host past its deadline is killed: timeout', async () => {
    const err = await failure(host('sp1', [], { command: [process.execPath, '-e', 'setTimeout(() => {}, 60000)'], timeoutMs: 500, killGraceMs: 200 }).execute(request(1, 2)))
    expect(err.failureClass).toBe('timeout')
  })

  it('behavior: bad adapter config is refused at construction with the key named', () => {
    const base = { vm: 'sp1' as const, program: { elf: RANGE_ELF, vkey: VKEY.sp1 }, input: { fields: INPUT_FIELDS }, output: { proof: { field: 'proof' }, publicValues: { field: 'public_values' }, vkey: { field: 'vkey' } }, artifacts, timeoutMs: 1000, workDir: dir, ownerTag: 't' }
    expect(() => zkvmExecutor({ ...base, command: ['host', '{nope}'] })).toThrow(/unknown placeholder \{nope\}/)
    expect(() => zkvmExecutor({ ...base, command: ['host'], program: { elf: join(dir, 'missing.elf'), vkey: 'ab' } })).toThrow(/does not exist/)
    expect(() => zkvmExecutor({ ...base, command: ['host'], program: { vkey: '' } })).toThrow(/program\.vkey is required/)
    expect(() => zkvmExecutor({ ...base, command: ['host'], output: { ...base.output, fields: { program: 'x' } } })).toThrow(ConfigError)
    expect(() => zkvmExecutor({ ...base, command: ['host'], input: { fields: { a: 'blocks[*].hash' } } })).toThrow(/starts with job, inputs or program/)
    expect(() => zkvmExecutor({ ...base, command: ['host'], output: { ...base.output, proof: { file: '../../etc/passwd' } } })).toThrow(/relative/)
  })
})

describe('zkVM adapter: the shipped example configs build and run with config only', () => {
  for (const [file, vm] of [['zkvm-sp1.yaml', 'sp1'], ['zkvm-risc0.yaml', 'risc0']] as const) {
    it(`behavior: examples/${file} (range stage) proves a job through createExecutor`, async () => {
      const dir = await mkdtemp(join(tmpdir(), 'proofline-zkvm-example-'))
      try {
        const config = await loadConfig(join(EXAMPLES, file), { env: { PROOFLINE_DATA_DIR: dir } })
        const range = config.stages[0]
        if (range === undefined) throw new Error('no range stage')
        expect(range.executor).toMatchObject({ type: 'zkvm', vm, program: { elf: RANGE_ELF } })
        const ex = createExecutor(config, range, 'zkvm-example-test')
        try {
          const req = request(1, 3, { programId: range.programId })
          const out = await ex.execute(req)
          expect(mockVerifier(asJob(req), out.output)).toEqual({ ok: true })
        } finally {
          await ex.close()
        }
      } finally {
        await rm(dir, { recursive: true, force: true })
      }
    })
  }
})

describe('docs/zkvm.md stays true', () => {
  it('behavior: the worked examples in docs/zkvm.md are the range executors of the shipped example configs', async () => {
    const md = await readFile(fileURLToPath(new URL('../../../docs/zkvm.md', import.meta.url)), 'utf8')
    for (const [heading, file] of [['## Worked example: SP1', 'zkvm-sp1.yaml'], ['## Worked example: RISC Zero', 'zkvm-risc0.yaml']] as const) {
      const section = md.slice(md.indexOf(heading))
      const block = /```yaml\n([\s\S]*?)```/.exec(section)?.[1]
      if (block === undefined) throw new Error(`no yaml block after ${heading}`)
      const documented = (parseYaml(block) as { executor: unknown }).executor
      const shipped = (parseYaml(await readFile(join(EXAMPLES, file), 'utf8')) as { stages: { executor: Record<string, unknown> }[] }).stages[0]?.executor
      const { timeoutMs: _t, exitCodes: _e, ...comparable } = shipped ?? {}
      expect(documented, file).toEqual(comparable)
    }
  })
})
