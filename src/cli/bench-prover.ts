import { resolve } from 'node:path'
import { ConfigError } from '../core/errors.js'
import { defaultCacheDir, resolveCrs } from '../backends/crs/resolve.js'
import { runProverBench, type ProgramBench, type ProverBenchReport } from '../prover-bench/run.js'

/** Options of `proofline bench prover` (strings, as commander passes them). */
export interface BenchProverOptions {
  json?: boolean
  blocksPerRange?: string
  aggregateK?: string
  runs?: string
  threads?: string
  cacheDir?: string
  crsPoints?: string
  /** `--no-l1` sets it false. */
  l1?: boolean
}

function positiveInt(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback
  const n = Number(value)
  if (!Number.isSafeInteger(n) || n < 1) throw new ConfigError(`--${name} must be a positive integer (got ${value})`)
  return n
}

/** CRS points for an aggregate of K range proofs (the K=2 aggregate is 2^21 gates; K=1 fits 2^20). */
export function benchCrsPoints(k: number): number {
  return 2 ** (k <= 1 ? 20 : k === 2 ? 21 : 22) + 1
}

/** `proofline bench prover`: runs the prover benchmark and prints the report (JSON with --json). */
export async function benchProverCommand(opts: BenchProverOptions): Promise<number> {
  const blocksPerRange = positiveInt(opts.blocksPerRange, 'blocks-per-range', 2)
  const aggregateK = positiveInt(opts.aggregateK, 'aggregate-k', 2)
  const runs = positiveInt(opts.runs, 'runs', 3)
  const threads = opts.threads === undefined ? undefined : positiveInt(opts.threads, 'threads', 1)
  const points = positiveInt(opts.crsPoints, 'crs-points', benchCrsPoints(aggregateK))
  const cacheDir = opts.cacheDir === undefined ? defaultCacheDir() : resolve(opts.cacheDir)
  const say = (m: string): void => {
    process.stderr.write(`bench: ${m}\n`)
  }
  const crs = await resolveCrs({ kind: 'dev', points, cacheDir, onProgress: say })
  const report = await runProverBench({
    crs,
    cacheDir,
    blocksPerRange,
    aggregateK,
    runs,
    ...(threads !== undefined ? { threads } : {}),
    l1: opts.l1 !== false,
    onProgress: say,
  })
  process.stdout.write(opts.json === true ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report))
  return 0
}

const s = (ms: number): string => `${(ms / 1000).toFixed(2)} s`
const mb = (b: number): string => `${Math.round(b / 2 ** 20)} MiB`

function line(p: ProgramBench): string[] {
  return [
    `${p.program} (${p.capacity} ${p.program === 'range' ? 'blocks' : 'range proofs'} per proof): ${p.gates} gates (2^${p.log2Size})`,
    `  prove      proofline ${s(p.prove.proofline.median)} (witness ${s(p.prove.prooflineWitness.median)}, bb ${s(p.prove.prooflineBb.median)}) | bb direct ${s(p.prove.bbDirect.median)}`,
    `  overhead   ${p.prove.overheadPct}% all-in, ${p.prove.overheadExWitnessPct}% without witness execution (medians of ${p.prove.proofline.samples.length} interleaved runs)`,
    `  verify     ${s(p.verify.ms.median)} (${p.verify.method}; ${p.verify.strength})`,
    `  proof      ${p.proofBytes} bytes; EVM gas ${p.evmGas ? `${p.evmGas.verifyCall} (verify call)${p.evmGas.proposeTx !== null ? `, ${p.evmGas.proposeTx} (proposeL2Output tx)` : ''}` : 'n/a (verified inside the aggregate)'}`,
    `  peak mem   bb ${mb(p.peakRssBytes.proofline)} (direct ${mb(p.peakRssBytes.bbDirect)})`,
    `  native     ${p.native.ms.toFixed(3)} ms (${p.native.what}): proving is ${p.native.slowdown}× slower`,
  ]
}

/** The report as text. */
export function formatReport(r: ProverBenchReport): string {
  return `${[
    `proofline bench prover — ${r.machine.cores} cores (${r.machine.cpu}), ${mb(r.machine.memoryBytes)}, load ${r.machine.loadavg.before.map((x) => x.toFixed(1)).join('/')} → ${r.machine.loadavg.after.map((x) => x.toFixed(1)).join('/')}`,
    `CRS ${r.crs.kind} ${r.crs.sha256.slice(0, 12)}… (${r.crs.points} points); setup ${s(r.setupMs)}`,
    ...line(r.programs.range),
    ...line(r.programs.aggregate),
    `end to end (${r.endToEnd.blocks} blocks: ${r.config.aggregateK} range proofs + 1 aggregate): ${s(r.endToEnd.provingMs)} vs native ${r.endToEnd.nativeMs.toFixed(3)} ms = ${r.endToEnd.slowdown}× slower`,
    `total ${s(r.totalMs)}`,
  ].join('\n')}\n`
}
