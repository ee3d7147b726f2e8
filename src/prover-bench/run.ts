import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { cpus, loadavg, totalmem } from 'node:os'
import { join } from 'node:path'
import { bytesToBigInt, bytesToHex, concatBytes, createPublicClient, createWalletClient, defineChain, fromRlp, hexToBytes, http, keccak256, type Hex } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { waitForTransactionReceipt, writeContract } from 'viem/actions'
import { builtinBackend, type BuiltinBackend, type BuiltinSetup } from '../backends/builtin/backend.js'
import { oraclePublicInputs, prepareAggregate } from '../backends/builtin/aggregate-program.js'
import { splitWords } from '../backends/builtin/fields.js'
import { prepareRange } from '../backends/builtin/range-program.js'
import type { ResolvedCrs } from '../backends/crs/types.js'
import { defaultBbPath } from '../backends/noir/bb.js'
import { executeNoir } from '../backends/noir/execute.js'
import type { Proof } from '../backends/types.js'
import { DEV_L1_CHAIN_ID, startAnvil } from '../chain/anvil.js'
import { deployHonkStack } from '../chain/deploy-honk.js'
import { deployOracle } from '../chain/deploy.js'
import { checkedHeaderRlp } from '../chain/header.js'
import { outputOracleAbi } from '../contracts/abis.js'
import { outputRootV0 } from '../chain/output-root.js'
import { outputRootInputs } from '../chain/traces.js'
import { devBlocks, type DevBlocks } from './dev-blocks.js'

/**
 * `proofline bench prover`: what the built-in backend costs on this machine, per program.
 *
 * For each of the range and aggregate programs, `runs` interleaved pairs (the order alternates:
 * proofline first, then bb first, …) of
 *   - proofline: the backend's `prove` / `aggregate` from the pipeline's input (host
 *     preparation, witness execution with noir_js, `bb prove`, reading the proof back, the
 *     statement check), and
 *   - bb direct: the same `bb prove` command line, spawned plainly, on the same witness,
 * and their medians; proofline's overhead is reported with and without witness generation
 * (which the bb CLI cannot do: it is given the witness). Then verification (the backend's
 * verify), proof size, EVM gas (aggregate: the adapter + generated verifier in the in-process
 * EVM, and a real `proposeL2Output` on an anvil L1), bb's peak memory (VmHWM), and the slowdown
 * against computing the same statement natively in JS (the a16z measure).
 */

/** Options of {@link runProverBench}. */
export interface ProverBenchOptions {
  crs: ResolvedCrs
  cacheDir: string
  /** @default 2 (the config default) */
  blocksPerRange?: number
  /** @default 2 (the config default) */
  aggregateK?: number
  /** Interleaved pairs per program. @default 3 */
  runs?: number
  /** Threads bb may use. @default all cores */
  threads?: number
  /** Also propose on an anvil L1 for the transaction's gas. @default true */
  l1?: boolean
  bbPath?: string
  onProgress?: (message: string) => void
}

/** Medians and the raw samples (milliseconds). */
export interface Samples {
  median: number
  samples: number[]
}

/** One program's figures. */
export interface ProgramBench {
  program: 'range' | 'aggregate'
  gates: number
  log2Size: number
  /** Blocks per range / range proofs per aggregate. */
  capacity: number
  prove: {
    /** proofline's prove/aggregate call, end to end. */
    proofline: Samples
    /** Of which witness execution (noir_js). */
    prooflineWitness: Samples
    /** Of which the `bb prove` child process, as proofline's runner timed it. */
    prooflineBb: Samples
    /** The same `bb prove` command line spawned directly, same witness. */
    bbDirect: Samples
    /** (proofline − bb direct) / bb direct, medians, %. */
    overheadPct: number
    /** (proofline − its witness time − bb direct) / bb direct, medians, %: what proofline adds around bb. */
    overheadExWitnessPct: number
  }
  verify: { method: string; strength: string; ms: Samples }
  proofBytes: number
  /** Aggregate only: gas of the adapter + verifier call (execution) and of a `proposeL2Output` transaction. */
  evmGas: { verifyCall: number; proposeTx: number | null } | null
  /** bb's peak resident memory, bytes: under proofline (max over runs) and direct. */
  peakRssBytes: { proofline: number; bbDirect: number }
  /** The same statement computed natively in JS, and proving time / native time. */
  native: { what: string; ms: number; slowdown: number }
}

/** The whole report. */
export interface ProverBenchReport {
  format: 'proofline/bench-prover@1'
  startedAt: string
  /** `loadavg` before and after: other processes on the machine slow proving down. */
  machine: { cores: number; cpu: string; memoryBytes: number; node: string; platform: string; loadavg: { before: number[]; after: number[] } }
  config: { blocksPerRange: number; aggregateK: number; runs: number; threads: number | null }
  crs: { kind: string; points: number; sha256: string }
  setupMs: number
  programs: { range: ProgramBench; aggregate: ProgramBench }
  /** The aggregate's whole statement (K·n blocks): K range proofs + 1 aggregate vs native JS over all its headers. */
  endToEnd: { blocks: number; provingMs: number; nativeMs: number; slowdown: number }
  totalMs: number
  notes: string[]
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2
}

function samples(xs: number[]): Samples {
  return { median: median(xs), samples: xs }
}

function pct(a: number, b: number): number {
  return Math.round((1000 * (a - b)) / b) / 10
}

/** Runs `bb args` plainly (no proofline wrapper); wall time and peak memory (VmHWM, polled). */
export function runBbDirect(bbPath: string, args: readonly string[], threads?: number): Promise<{ ms: number; peakRssBytes: number }> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, ...(threads !== undefined ? { HARDWARE_CONCURRENCY: String(threads) } : {}) }
    const started = performance.now()
    const child = spawn(bbPath, args, { stdio: ['ignore', 'ignore', 'pipe'], env })
    let tail = ''
    child.stderr.on('data', (d: Buffer) => (tail = (tail + d.toString()).slice(-2000)))
    let peak = 0
    const timer = setInterval(() => {
      readFile(`/proc/${child.pid}/status`, 'utf8')
        .then((s) => {
          const m = /VmHWM:\s+(\d+) kB/.exec(s)
          if (m) peak = Math.max(peak, Number(m[1]) * 1024)
        })
        .catch(() => undefined)
    }, 100)
    child.on('error', (err) => {
      clearInterval(timer)
      reject(err)
    })
    child.on('close', (code) => {
      const ms = Math.round(performance.now() - started)
      clearInterval(timer)
      if (code !== 0) reject(new Error(`bb ${args[0] ?? ''} exited ${String(code)}: ${tail.trim().split('\n').slice(-3).join(' | ')}`))
      else resolve({ ms, peakRssBytes: peak })
    })
  })
}

/** Milliseconds per call of `fn`, timed over at least `minMs` of repeated calls. */
export function timeNative(fn: () => void, minMs = 300): number {
  fn()
  let n = 0
  const started = performance.now()
  let elapsed = 0
  do {
    fn()
    n++
    elapsed = performance.now() - started
  } while (elapsed < minMs)
  return elapsed / n
}

const ZERO32 = new Uint8Array(32)

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/**
 * The range statement computed natively: keccak of each header, its parentHash and number
 * chained from the previous output's block, the previous and new output roots. Returns the new
 * output root (checked against the proof's, so the native run does the same work).
 */
export function nativeRangeStatement(rlps: readonly Uint8Array[], prev: { stateRoot: Uint8Array; storageRoot: Uint8Array; blockHash: Uint8Array }, storageRoot: Uint8Array, first: number): { previousOutputRoot: Hex; outputRoot: Hex } {
  const previousOutputRoot = keccak256(concatBytes([ZERO32, prev.stateRoot, prev.storageRoot, prev.blockHash]))
  let parent: Uint8Array = prev.blockHash
  let number = BigInt(first - 1)
  let state: Uint8Array = ZERO32
  for (const rlp of rlps) {
    const fields = fromRlp(rlp, 'bytes') as Uint8Array[]
    const hash = keccak256(rlp, 'bytes')
    if (!sameBytes(fields[0] as Uint8Array, parent)) throw new Error('native: broken header chain')
    const n = bytesToBigInt(fields[8] as Uint8Array)
    if (n !== number + 1n) throw new Error('native: block numbers not consecutive')
    number = n
    parent = hash
    state = fields[3] as Uint8Array
  }
  return { previousOutputRoot, outputRoot: keccak256(concatBytes([ZERO32, state, storageRoot, parent])) }
}

function nativeRangeFn(blocks: DevBlocks, from: number, count: number): { fn: () => void; expected: Hex } {
  const slice = blocks.blocks.slice(from, from + count)
  const first = slice[0]
  const last = slice[slice.length - 1]
  if (!first?.parentOutput || !last) throw new Error('native: blocks missing')
  const rlps = slice.map((b) => checkedHeaderRlp(b.block))
  const p = first.parentOutput
  const prev = { stateRoot: hexToBytes(p.stateRoot), storageRoot: hexToBytes(p.messagePasserStorageRoot), blockHash: hexToBytes(p.blockHash) }
  const storage = hexToBytes(last.messagePasser.storageHash)
  const expected = outputRootV0(outputRootInputs(last))
  return {
    expected,
    fn: () => {
      const r = nativeRangeStatement(rlps, prev, storage, first.number)
      if (r.outputRoot !== expected) throw new Error(`native: output root ${r.outputRoot} is not ${expected}`)
    },
  }
}

/** Runs the benchmark (heavy: run it alone, e.g. under `flock`). */
export async function runProverBench(opts: ProverBenchOptions): Promise<ProverBenchReport> {
  const t0 = performance.now()
  const loadBefore = loadavg()
  const n = opts.blocksPerRange ?? 2
  const k = opts.aggregateK ?? 2
  const runs = opts.runs ?? 3
  if (!Number.isSafeInteger(runs) || runs < 1) throw new RangeError(`runs must be a positive integer (got ${runs})`)
  const say = opts.onProgress ?? (() => {})
  const bbPath = opts.bbPath ?? defaultBbPath()
  const backend: BuiltinBackend = builtinBackend({ crs: opts.crs, cacheDir: opts.cacheDir, blocksPerRange: n, aggregateK: k, bbPath, ...(opts.threads !== undefined ? { threads: opts.threads } : {}) })
  const setupStarted = performance.now()
  const setup: BuiltinSetup = await backend.ready({ onProgress: say })
  const setupMs = Math.round(performance.now() - setupStarted)
  const blocks = await devBlocks(opts.cacheDir, k * n)
  const input = (i: number): { blocks: DevBlocks['blocks']; chainConfigHash: Hex } => ({ blocks: blocks.blocks.slice(i * n, (i + 1) * n), chainConfigHash: blocks.chainConfigHash })
  const workRoot = join(opts.cacheDir, 'work', `bench-${randomUUID()}`)
  await mkdir(workRoot, { recursive: true })
  try {
    // The witnesses bb direct proves from: the same inputs proofline prepares.
    const rangeProgram = await readFile(setup.range.programPath, 'utf8')
    const rangeWitness = await executeNoir(rangeProgram, prepareRange(n, input(0)).inputs, { what: 'range' })
    const rangeWitnessPath = join(workRoot, 'range-witness.gz')
    await writeFile(rangeWitnessPath, rangeWitness.bytes)

    type Pair = { proofline: number; witness: number; bb: number; peak: number; direct: number; directPeak: number }
    async function measure(which: 'range' | 'aggregate', provePl: () => Promise<Proof>, directArgs: (outDir: string) => string[]): Promise<{ pairs: Pair[]; proof: Proof }> {
      const pairs: Pair[] = []
      let proof: Proof | undefined
      for (let i = 0; i < runs; i++) {
        const pl = async (): Promise<Omit<Pair, 'direct' | 'directPeak'>> => {
          say(`${which}: proofline run ${i + 1}/${runs}…`)
          const started = performance.now()
          proof = await provePl()
          const ms = performance.now() - started
          const last = backend.lastRun[which]
          if (!last) throw new Error(`${which}: the backend recorded no bb run`)
          return { proofline: Math.round(ms), witness: last.witnessMs, bb: last.bb.durationMs, peak: last.bb.peakRssBytes }
        }
        const direct = async (): Promise<{ direct: number; directPeak: number }> => {
          say(`${which}: bb direct run ${i + 1}/${runs}…`)
          const out = join(workRoot, `${which}-direct-${i}`)
          await mkdir(out, { recursive: true })
          const r = await runBbDirect(bbPath, directArgs(out), opts.threads)
          await rm(out, { recursive: true, force: true })
          return { direct: r.ms, directPeak: r.peakRssBytes }
        }
        // Interleaved, alternating which goes first, so drift (thermal, other load) hits both.
        if (i % 2 === 0) {
          const a = await pl()
          pairs.push({ ...a, ...(await direct()) })
        } else {
          const b = await direct()
          pairs.push({ ...(await pl()), ...b })
        }
      }
      if (!proof) throw new Error('no proof')
      return { pairs, proof }
    }

    function program(which: 'range' | 'aggregate', pairs: Pair[], proof: Proof, verify: ProgramBench['verify'], evmGas: ProgramBench['evmGas'], native: ProgramBench['native']): ProgramBench {
      const info = which === 'range' ? setup.range : setup.aggregate
      const pl = pairs.map((p) => p.proofline)
      const direct = pairs.map((p) => p.direct)
      const exWitness = pairs.map((p) => p.proofline - p.witness)
      return {
        program: which,
        gates: info.gates,
        log2Size: info.log2Size,
        capacity: info.capacity,
        prove: {
          proofline: samples(pl),
          prooflineWitness: samples(pairs.map((p) => p.witness)),
          prooflineBb: samples(pairs.map((p) => p.bb)),
          bbDirect: samples(direct),
          overheadPct: pct(median(pl), median(direct)),
          overheadExWitnessPct: pct(median(exWitness), median(direct)),
        },
        verify,
        proofBytes: proof.bytes.length,
        evmGas,
        peakRssBytes: { proofline: Math.max(...pairs.map((p) => p.peak)), bbDirect: Math.max(...pairs.map((p) => p.directPeak)) },
        native,
      }
    }

    async function verifyRuns(proof: Proof): Promise<ProgramBench['verify']> {
      const ms: number[] = []
      let method = ''
      let strength = ''
      for (let i = 0; i < runs; i++) {
        const started = performance.now()
        const v = await backend.verify(proof)
        ms.push(Math.round(performance.now() - started))
        method = v.method
        // Recorded, not thrown: a benchmark that stops here would lose every figure before it.
        strength = v.ok ? v.strength : `REJECTED: ${v.reason}`
      }
      return { method, strength, ms: samples(ms) }
    }

    // Range.
    const range = await measure('range', () => backend.prove(input(0)), (out) => ['prove', '-b', setup.range.programPath, '-w', rangeWitnessPath, '-k', setup.range.vkPath, '-o', out, '-c', opts.crs.dir, '-t', 'noir-recursive'])
    const rangeVerify = await verifyRuns(range.proof)
    const nativeRange = nativeRangeFn(blocks, 0, n)
    if (nativeRange.expected !== range.proof.publicValues.outputRoot) throw new Error('native and proven output roots differ')
    const rangeNativeMs = timeNative(nativeRange.fn)
    const rangeBench = program('range', range.pairs, range.proof, rangeVerify, null, {
      what: `keccak256 of ${n} header(s) + RLP parse + chain checks + 2 output roots, in JS (viem/noble)`,
      ms: rangeNativeMs,
      slowdown: Math.round(median(range.pairs.map((p) => p.proofline)) / rangeNativeMs),
    })
    say(`range done: ${JSON.stringify(rangeBench)}`)

    // The other K-1 ranges the aggregate takes (proven once; not measured).
    const inner: Proof[] = [range.proof]
    const innerMs: number[] = [rangeBench.prove.proofline.median]
    for (let i = 1; i < k; i++) {
      say(`aggregate input: range ${i + 1}/${k}…`)
      const started = performance.now()
      inner.push(await backend.prove(input(i)))
      innerMs.push(Math.round(performance.now() - started))
    }
    const aggProgram = await readFile(setup.aggregate.programPath, 'utf8')
    const prepared = prepareAggregate({ k, vkLength: setup.range.vk.length, proofLength: splitWords(range.proof.bytes).length, rangeVkHash: setup.range.vkHash }, setup.range.vk, inner)
    const aggWitness = await executeNoir(aggProgram, prepared.inputs, { what: 'aggregate' })
    const aggWitnessPath = join(workRoot, 'aggregate-witness.gz')
    await writeFile(aggWitnessPath, aggWitness.bytes)
    const agg = await measure('aggregate', () => backend.aggregate(inner), (out) => ['prove', '-b', setup.aggregate.programPath, '-w', aggWitnessPath, '-k', setup.aggregate.vkPath, '-o', out, '-c', opts.crs.dir, '-t', 'evm'])
    const aggVerify = await verifyRuns(agg.proof)
    const evm = await backend.evm()
    const call = await evm.verify(agg.proof.bytes, oraclePublicInputs(agg.proof.publicValues, setup.programId))
    if (!call.ok) throw new Error(`aggregate: the in-process EVM rejects the proof (${call.revert ?? 'false'})`)
    const notes: string[] = []
    let proposeTx: number | null = null
    if (opts.l1 !== false) {
      try {
        proposeTx = await proposeOnAnvil(setup, agg.proof, blocks.chainConfigHash, say)
      } catch (err) {
        notes.push(`the proposeL2Output transaction on anvil failed: ${(err as Error).message}`)
      }
    }
    // Natively, the aggregate's work is verifying K range proofs (bb's native verifier) and chaining them.
    const aggNativeMs = k * rangeVerify.ms.median
    const aggBench = program('aggregate', agg.pairs, agg.proof, aggVerify, { verifyCall: Number(call.gasUsed), proposeTx }, {
      what: `${k} × native verification of a range proof (bb verify, the range verify time above)`,
      ms: aggNativeMs,
      slowdown: Math.round(median(agg.pairs.map((p) => p.proofline)) / aggNativeMs),
    })
    say(`aggregate done: ${JSON.stringify(aggBench)}`)

    const all = nativeRangeFn(blocks, 0, k * n)
    const allNativeMs = timeNative(all.fn)
    const provingMs = innerMs.reduce((a, b) => a + b, 0) + aggBench.prove.proofline.median
    return {
      format: 'proofline/bench-prover@1',
      startedAt: new Date(Date.now() - (performance.now() - t0)).toISOString(),
      machine: { cores: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', memoryBytes: totalmem(), node: process.version, platform: `${process.platform}-${process.arch}`, loadavg: { before: loadBefore, after: loadavg() } },
      config: { blocksPerRange: n, aggregateK: k, runs, threads: opts.threads ?? null },
      crs: { kind: opts.crs.kind, points: opts.crs.points, sha256: opts.crs.g1Sha256 },
      setupMs,
      programs: { range: rangeBench, aggregate: aggBench },
      endToEnd: { blocks: k * n, provingMs, nativeMs: allNativeMs, slowdown: Math.round(provingMs / allNativeMs) },
      totalMs: Math.round(performance.now() - t0),
      notes: [
        ...notes,
        'prove.overheadPct includes witness execution (noir_js), which the bb CLI does not do (it is given the witness); overheadExWitnessPct is what proofline adds around the bb process.',
        `range proofs use the poseidon2 transcript for recursion (-t noir-recursive) and are verified inside the aggregate, not on the EVM: no gas figure. Under a ${opts.crs.kind} CRS their verify is ${rangeVerify.strength}.`,
        'evmGas.verifyCall is execution gas of UltraHonkAdapter.verify (→ generated HonkVerifier) in the in-process EVM; proposeTx is the whole proposeL2Output transaction on anvil (intrinsic + calldata + oracle + verifier).',
        'peak memory is VmHWM of the bb process, sampled every 100 ms.',
      ],
    }
  } finally {
    await rm(workRoot, { recursive: true, force: true })
  }
}

/** Deploys verifier, adapter and oracle on a fresh anvil L1 and proposes `proof`; returns the transaction's gas. */
async function proposeOnAnvil(setup: BuiltinSetup, proof: Proof, chainConfigHash: Hex, say: (m: string) => void): Promise<number> {
  say('aggregate: proposing on an anvil L1 for the gas figure…')
  const anvil = await startAnvil({ chainId: DEV_L1_CHAIN_ID })
  try {
    const chain = defineChain({ id: DEV_L1_CHAIN_ID, name: 'dev-l1', nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 }, rpcUrls: { default: { http: [anvil.rpcUrl] } } })
    const publicClient = createPublicClient({ chain, transport: http(anvil.rpcUrl), pollingInterval: 50 })
    // anvil's first well-known dev key (dev chains only).
    const account = privateKeyToAccount('0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80')
    const wallet = createWalletClient({ chain, transport: http(anvil.rpcUrl), account })
    const stack = await deployHonkStack(wallet, publicClient, setup.verifier, setup.programId)
    const oracle = await deployOracle(wallet, publicClient, {
      anchorRoot: proof.publicValues.previousOutputRoot,
      anchorBlock: BigInt(proof.publicValues.firstBlock - 1),
      intervalBlocks: 1n,
      verifier: stack.adapter.address,
      programId: setup.programId,
      chainConfigHash,
      proposer: account.address,
    })
    const hash = await writeContract(wallet, { address: oracle.address, abi: outputOracleAbi, functionName: 'proposeL2Output', args: [proof.publicValues.outputRoot, BigInt(proof.publicValues.lastBlock), bytesToHex(proof.bytes)], account, chain })
    const receipt = await waitForTransactionReceipt(publicClient, { hash })
    if (receipt.status !== 'success') throw new Error(`proposeL2Output with a valid aggregate reverted on anvil (${hash})`)
    return Number(receipt.gasUsed)
  } finally {
    await anvil.stop()
  }
}
