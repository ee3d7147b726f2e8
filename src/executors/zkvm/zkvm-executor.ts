import { existsSync } from 'node:fs'
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises'
import { isAbsolute, join, normalize, resolve } from 'node:path'
import { decodeAbiParameters, parseAbiParameters, toHex, type AbiParameter } from 'viem'
import type { ArtifactStore } from '../../artifacts/types.js'
import { ConfigError, ExecutorError, errorMessage, type FailureClass } from '../../core/errors.js'
import type { ArtifactRef } from '../../core/types.js'
import { processExecutor, type ProcessDialect, type ProcessExecutorOptions } from '../process/process-executor.js'
import { inputDocument, serializeInputDocument } from '../process/protocol.js'
import type { ExecuteRequest, Executor } from '../types.js'
import { type ErrorPattern, VM_ERROR_PATTERNS, type ZkvmKind } from './presets.js'
import { parseSelector, select, type Selector } from './selectors.js'

/** Where the host puts some bytes: a file in its output folder, or a field of its output JSON. */
export interface ZkvmBytesSpec {
  /** A file name relative to `{outputDir}`, read as raw bytes (as text for `vkey`). */
  file?: string | undefined
  /** A selector into the host's output JSON (`output.file`): a hex string (`0x` optional), a base64 string, or an array of byte values. */
  field?: string | undefined
  /** How a string `field` is encoded. @default 'hex' */
  encoding?: 'hex' | 'base64' | undefined
}

/** Options of `zkvmExecutor`. Process handling options are the process executor's. */
export interface ZkvmExecutorOptions extends Pick<ProcessExecutorOptions, 'timeoutMs' | 'killGraceMs' | 'env' | 'inheritEnv' | 'cwd' | 'workDir' | 'ownerTag' | 'stderrTailBytes' | 'heartbeatMs' | 'maxOutputBytes'> {
  /** The zkVM family: picks the stderr patterns of its failures (`./presets.ts`). */
  vm: ZkvmKind
  /**
   * argv of the host, first element the program, no shell. Placeholders are replaced per attempt:
   * `{input}` (the input file the adapter wrote), `{outputDir}` (an empty folder for the host's
   * files), `{attemptDir}`, `{elf}`, `{vkey}`, `{first}`, `{last}`, `{lastHash}`, `{jobId}`,
   * `{attempt}`, `{stage}`, `{programId}`.
   */
  command: string[]
  /** The program the host proves. */
  program: {
    /** Path of the guest ELF (range or aggregation program); must exist. `{elf}` in `command`. */
    elf?: string
    /**
     * The program's verification key id (SP1: the vkey's bytes32 hash; RISC Zero: the image id),
     * hex. The host must report it (`output.vkey`) and it must match, or the result is
     * `invalid-output`: a proof is believed to be of this program only then.
     */
    vkey: string
  }
  /** The input file written for the host at `{input}`. */
  input?: {
    /**
     * `json`: an object built from `fields`; `proofline`: the process protocol's input document.
     * @default 'json'
     */
    format?: 'json' | 'proofline'
    /** File name in the attempt folder. @default 'input.json' */
    file?: string
    /**
     * Host field → selector into `{ job, inputs, program }` (e.g. `inputs[*].data.hash`). A
     * selector ending in `@file` must point at artifact refs: each is fetched from the artifact
     * store (sha256 checked) into the attempt folder and replaced by its path.
     */
    fields?: Record<string, string>
  }
  /** Where the host's results are, in `{outputDir}`. */
  output: {
    /** The host's output JSON, when any spec uses `field` or `fields` is set. @default 'output.json' */
    file?: string
    proof: ZkvmBytesSpec
    publicValues: ZkvmBytesSpec
    vkey: ZkvmBytesSpec
    /**
     * ABI signature of the public values (`abi.encode` of a struct), e.g.
     * `bytes32 l2PreRoot, bytes32 l2PostRoot, uint64 l2BlockNumber`; each named value becomes an
     * output field (uints as numbers when safe, else decimal strings; bytes as 0x hex).
     */
    publicValuesAbi?: string
    /** proofline output field → selector into the host's output JSON. */
    fields?: Record<string, string>
  }
  /** Host exit code → failure class, checked first on a non-zero exit (e.g. `{ "3": "too-big" }`). */
  exitCodes?: Record<string, FailureClass>
  /** stderr patterns (case-insensitive regular expressions), checked after `exitCodes` and before the `vm` presets. */
  errorPatterns?: ErrorPattern[]
  /** Where `@file` inputs are read from and where the proof is stored (`proofs/<sha256>`). */
  artifacts: ArtifactStore
}

const PLACEHOLDERS = new Set(['input', 'outputDir', 'attemptDir', 'elf', 'vkey', 'first', 'last', 'lastHash', 'jobId', 'attempt', 'stage', 'programId'])
const RESERVED_OUTPUT = new Set(['program', 'vm', 'vkey', 'publicValues'])
const FAILURE_CLASSES: ReadonlySet<string> = new Set(['transient', 'timeout', 'too-big', 'unprovable', 'invalid-output', 'lease-expired'])

/** `0x`-prefixed lowercase hex when `s` is hex, else `s` trimmed. */
function normalizeId(s: string): string {
  const t = s.trim()
  const bare = t.startsWith('0x') || t.startsWith('0X') ? t.slice(2) : t
  return /^[0-9a-fA-F]+$/.test(bare) && bare.length % 2 === 0 ? `0x${bare.toLowerCase()}` : t
}

/** Decoded ABI values as JSON: bigints as numbers when safe, else decimal strings. */
function jsonSafe(v: unknown): unknown {
  if (typeof v === 'bigint') return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v.toString()
  if (Array.isArray(v)) return v.map(jsonSafe)
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, jsonSafe(x)]))
  return v
}

/**
 * The SP1 / RISC Zero adapter (docs/zkvm.md): runs an unmodified zkVM host binary — range or
 * aggregation program — as a stage's executor, with config only. It maps proofline's job onto
 * the host's command line and input file, maps the host's exit (code, then stderr text: cycle
 * or session limit → `too-big` → split; a bad ELF or a failing guest → `unprovable`; a crash →
 * `transient`), and maps its files back: the proof bytes go into the artifact store, the public
 * values (optionally ABI-decoded) and the vkey into the output — and the vkey must be the
 * pinned one. Process handling is the process executor's (groups, deadlines, heartbeats).
 */
export function zkvmExecutor(opts: ZkvmExecutorOptions): Executor {
  const where = 'zkvm executor'
  const program = opts.command[0]
  if (program === undefined || program === '') throw new ConfigError(`${where}: command must name the host program`, { option: 'command' })
  for (const arg of opts.command) {
    for (const m of arg.matchAll(/\{([A-Za-z]+)\}/g)) {
      if (!PLACEHOLDERS.has(m[1] as string)) {
        throw new ConfigError(`${where}: unknown placeholder {${m[1] ?? ''}} in command (known: ${[...PLACEHOLDERS].map((p) => `{${p}}`).join(', ')})`, { option: 'command' })
      }
    }
  }
  const elf = opts.program.elf === undefined ? undefined : resolve(opts.program.elf)
  if (elf !== undefined && !existsSync(elf)) throw new ConfigError(`${where}: program.elf ${elf} does not exist`, { option: 'program.elf' })
  if (opts.command.some((a) => a.includes('{elf}')) && elf === undefined) throw new ConfigError(`${where}: command uses {elf} but program.elf is not set`, { option: 'program.elf' })
  if (typeof opts.program.vkey !== 'string' || opts.program.vkey.trim() === '') {
    throw new ConfigError(`${where}: program.vkey is required: a proof is believed to be of the program only when its vkey matches`, { option: 'program.vkey' })
  }
  const vkey = normalizeId(opts.program.vkey)

  const format = opts.input?.format ?? 'json'
  const inputFile = opts.input?.file ?? 'input.json'
  const outputFile = opts.output.file ?? 'output.json'
  for (const f of [inputFile, outputFile, opts.output.proof.file, opts.output.publicValues.file, opts.output.vkey.file]) {
    if (f !== undefined && (isAbsolute(f) || normalize(f).startsWith('..'))) throw new ConfigError(`${where}: file ${f} must be relative and stay inside its folder`, { file: f })
  }
  if (format === 'json' && (opts.input?.fields === undefined || Object.keys(opts.input.fields).length === 0)) {
    throw new ConfigError(`${where}: input.fields is required with input.format json (or use format proofline)`, { option: 'input.fields' })
  }
  const inputFields: [string, Selector, boolean][] = Object.entries(opts.input?.fields ?? {}).map(([name, text]) => {
    const asFile = text.endsWith('@file')
    const sel = parseSelector(asFile ? text.slice(0, -5) : text, `${where}: input.fields.${name}`)
    const root = sel.steps[0]
    if (root === undefined || !('key' in root) || !['job', 'inputs', 'program'].includes(root.key)) {
      throw new ConfigError(`${where}: input.fields.${name}: a selector starts with job, inputs or program (got ${JSON.stringify(text)})`, { selector: text })
    }
    return [name, sel, asFile]
  })
  const specs = { proof: opts.output.proof, publicValues: opts.output.publicValues, vkey: opts.output.vkey }
  const specSelectors: Partial<Record<keyof typeof specs, Selector>> = {}
  for (const [name, spec] of Object.entries(specs) as [keyof typeof specs, ZkvmBytesSpec][]) {
    if ((spec.file === undefined) === (spec.field === undefined)) throw new ConfigError(`${where}: output.${name} needs exactly one of file, field`, { option: `output.${name}` })
    if (spec.field !== undefined) specSelectors[name] = parseSelector(spec.field, `${where}: output.${name}.field`)
  }
  const outputFields: [string, Selector][] = Object.entries(opts.output.fields ?? {}).map(([name, text]) => [name, parseSelector(text, `${where}: output.fields.${name}`)])
  let abi: readonly AbiParameter[] | undefined
  if (opts.output.publicValuesAbi !== undefined) {
    try {
      abi = parseAbiParameters(opts.output.publicValuesAbi)
    } catch (err) {
      throw new ConfigError(`${where}: output.publicValuesAbi ${JSON.stringify(opts.output.publicValuesAbi)} is not an ABI parameter list: ${errorMessage(err)}`, { option: 'output.publicValuesAbi' })
    }
    if (abi.some((p) => p.name === undefined || p.name === '')) throw new ConfigError(`${where}: every parameter of output.publicValuesAbi needs a name`, { option: 'output.publicValuesAbi' })
  }
  const produced = [...outputFields.map(([n]) => n), ...(abi ?? []).map((p) => p.name as string)]
  const clash = produced.find((n) => RESERVED_OUTPUT.has(n))
  if (clash !== undefined) throw new ConfigError(`${where}: output field ${clash} is set by the adapter itself (${[...RESERVED_OUTPUT].join(', ')})`, { option: 'output.fields' })
  const needsJson = outputFields.length > 0 || Object.keys(specSelectors).length > 0
  const exitCodes = new Map<number, FailureClass>()
  for (const [code, cls] of Object.entries(opts.exitCodes ?? {})) {
    const n = Number(code)
    if (!Number.isInteger(n) || n < 1 || n > 255) throw new ConfigError(`${where}: exitCodes key ${code} must be an exit code 1–255`, { option: 'exitCodes' })
    if (!FAILURE_CLASSES.has(cls)) throw new ConfigError(`${where}: exitCodes.${code}: unknown failure class ${String(cls)}`, { option: 'exitCodes' })
    exitCodes.set(n, cls)
  }
  const patterns = [...(opts.errorPatterns ?? []), ...VM_ERROR_PATTERNS[opts.vm]].map((p) => {
    try {
      return { ...p, re: new RegExp(p.match, 'i') }
    } catch (err) {
      throw new ConfigError(`${where}: errorPatterns ${JSON.stringify(p.match)} is not a regular expression: ${errorMessage(err)}`, { option: 'errorPatterns' })
    }
  })
  const maxOutputBytes = opts.maxOutputBytes ?? 64 * 1024 * 1024

  async function materialize(req: ExecuteRequest, dir: string, value: unknown, name: string): Promise<unknown> {
    if (Array.isArray(value)) return Promise.all(value.map((v) => materialize(req, dir, v, name)))
    if (value === undefined || value === null) return value
    const { key, sha256, size } = value as Partial<ArtifactRef>
    if (typeof key !== 'string' || typeof sha256 !== 'string' || typeof size !== 'number') {
      throw new ExecutorError('unprovable', `zkvm input.fields.${name}: @file needs artifact refs { key, sha256, size }, got ${JSON.stringify(value).slice(0, 100)}`, { jobId: req.job.id })
    }
    const bytes = await opts.artifacts.get({ key, sha256, size })
    await mkdir(join(dir, 'artifacts'), { recursive: true })
    const path = join(dir, 'artifacts', sha256)
    await writeFile(path, bytes)
    return path
  }

  async function readHostFile(dir: string, file: string, what: string, details: Record<string, unknown>): Promise<Buffer> {
    const path = join(dir, file)
    try {
      const st = await stat(path)
      if (st.size > maxOutputBytes) throw new ExecutorError('invalid-output', `host wrote ${what} ${file} of ${st.size} bytes, more than ${maxOutputBytes}`, details)
      return await readFile(path)
    } catch (err) {
      if (err instanceof ExecutorError) throw err
      throw new ExecutorError('invalid-output', `host exited 0 but wrote no ${what} (${file} in its output folder)`, { ...details, reason: `missing ${what}` }, err)
    }
  }

  function decodeField(value: unknown, encoding: 'hex' | 'base64', what: string, details: Record<string, unknown>): Buffer {
    const bad = (why: string): ExecutorError => new ExecutorError('invalid-output', `host output ${what} ${why}`, { ...details, reason: `bad ${what}` })
    if (Array.isArray(value)) {
      if (!value.every((b) => Number.isInteger(b) && (b as number) >= 0 && (b as number) <= 255)) throw bad('is an array but not of byte values')
      return Buffer.from(value as number[])
    }
    if (typeof value !== 'string') throw bad(value === undefined ? 'is missing' : 'is not a string')
    if (encoding === 'base64') {
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(value) || value.length % 4 !== 0) throw bad('is not padded base64')
      return Buffer.from(value, 'base64')
    }
    const bare = value.startsWith('0x') ? value.slice(2) : value
    if (!/^[0-9a-fA-F]*$/.test(bare) || bare.length % 2 !== 0) throw bad('is not hex')
    return Buffer.from(bare, 'hex')
  }

  const dialect: ProcessDialect = {
    async prepare(req, attemptDir) {
      const outputDir = join(attemptDir, 'out')
      await mkdir(outputDir)
      const inputPath = join(attemptDir, inputFile)
      const programView = { elf, vkey, id: req.job.programId, vm: opts.vm }
      if (format === 'proofline') {
        await writeFile(inputPath, serializeInputDocument(inputDocument(req)))
      } else {
        const doc = { job: req.job, inputs: req.inputs, program: programView }
        const out: Record<string, unknown> = {}
        for (const [name, sel, asFile] of inputFields) {
          const v = select(doc, sel)
          out[name] = asFile ? await materialize(req, attemptDir, v, name) : v
        }
        await writeFile(inputPath, JSON.stringify(out, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)))
      }
      const values: Record<string, string> = {
        input: inputPath,
        outputDir,
        attemptDir,
        elf: elf ?? '',
        vkey,
        first: String(req.job.first),
        last: String(req.job.last),
        lastHash: req.job.lastHash,
        jobId: req.job.id,
        attempt: String(req.job.attempt),
        stage: req.job.stage,
        programId: req.job.programId,
      }
      return { args: opts.command.slice(1).map((a) => a.replace(/\{([A-Za-z]+)\}/g, (_m, k: string) => values[k] ?? '')) }
    },

    classifyExit({ code, signal, stderrTail }) {
      if (signal !== null || code === null) return undefined
      const byCode = exitCodes.get(code)
      if (byCode !== undefined) return { failureClass: byCode, reason: `host exited with code ${code}, mapped to ${byCode} by exitCodes` }
      for (const p of patterns) {
        if (p.re.test(stderrTail)) {
          const what = p.class === 'too-big' ? 'the job is too big for one proof: split it' : p.class === 'unprovable' ? 'the input cannot be proven by this program' : p.class
          return { failureClass: p.class, reason: `host exited with code ${code}: ${what} (stderr matches /${p.match}/i)` }
        }
      }
      return undefined
    },

    async readResult(req, attempt) {
      const { details } = attempt
      const outputDir = join(attempt.dir, 'out')
      let json: unknown
      if (needsJson) {
        const text = (await readHostFile(outputDir, outputFile, 'output JSON', details)).toString('utf8')
        try {
          json = JSON.parse(text)
        } catch (err) {
          throw new ExecutorError('invalid-output', `host output ${outputFile} is not JSON`, { ...details, reason: 'output not JSON' }, err)
        }
      }
      const bytes = async (name: keyof typeof specs): Promise<Buffer> => {
        const spec = specs[name]
        const sel = specSelectors[name]
        if (sel !== undefined) return decodeField(select(json, sel), spec.encoding ?? 'hex', name, details)
        return readHostFile(outputDir, spec.file as string, name, details)
      }
      const proof = await bytes('proof')
      if (proof.length === 0) throw new ExecutorError('invalid-output', 'host wrote an empty proof', { ...details, reason: 'empty proof' })
      const publicValues = await bytes('publicValues')
      const vkSel = specSelectors.vkey
      const reported = vkSel === undefined ? (await bytes('vkey')).toString('utf8') : select(json, vkSel)
      if (typeof reported !== 'string') throw new ExecutorError('invalid-output', 'host output vkey is missing or not a string', { ...details, reason: 'bad vkey' })
      if (normalizeId(reported) !== vkey) {
        throw new ExecutorError('invalid-output', `host proved program ${normalizeId(reported)}, but program.vkey pins ${vkey}: not believed`, { ...details, reason: 'vkey mismatch', reported: normalizeId(reported) })
      }
      const out: Record<string, unknown> = {}
      if (abi !== undefined) {
        let decoded: readonly unknown[]
        try {
          decoded = decodeAbiParameters(abi, toHex(publicValues))
        } catch (err) {
          throw new ExecutorError('invalid-output', `host public values do not decode as (${opts.output.publicValuesAbi ?? ''}): ${errorMessage(err)}`, { ...details, reason: 'public values do not decode' }, err)
        }
        abi.forEach((p, i) => {
          out[p.name as string] = jsonSafe(decoded[i])
        })
      }
      for (const [name, sel] of outputFields) {
        const v = select(json, sel)
        if (v === undefined) throw new ExecutorError('invalid-output', `host output has no ${sel.text} (output.fields.${name})`, { ...details, reason: `missing ${name}` })
        out[name] = v
      }
      let ref: ArtifactRef
      try {
        ref = await opts.artifacts.put(proof, { prefix: 'proofs' })
      } catch (err) {
        throw new ExecutorError('transient', `could not store the host's proof: ${errorMessage(err)}`, details, err)
      }
      return { output: { ...out, program: req.job.programId, vm: opts.vm, vkey, publicValues: toHex(publicValues) }, proof: ref }
    },
  }

  const inner = processExecutor({
    command: [program],
    timeoutMs: opts.timeoutMs,
    workDir: opts.workDir,
    ownerTag: opts.ownerTag,
    dialect,
    ...(opts.killGraceMs === undefined ? {} : { killGraceMs: opts.killGraceMs }),
    ...(opts.env === undefined ? {} : { env: opts.env }),
    ...(opts.inheritEnv === undefined ? {} : { inheritEnv: opts.inheritEnv }),
    ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }),
    ...(opts.stderrTailBytes === undefined ? {} : { stderrTailBytes: opts.stderrTailBytes }),
    ...(opts.heartbeatMs === undefined ? {} : { heartbeatMs: opts.heartbeatMs }),
    maxOutputBytes,
  })
  return { kind: 'zkvm', execute: (req) => inner.execute(req), close: () => inner.close() }
}
