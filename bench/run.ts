/**
 * The benchmark harness: `npm run bench -- [--json] [--quick] [--only a,b] [--out FILE]`.
 * Runs each section against its baseline in the same run, on this machine, and prints one JSON
 * document (with --json) on stdout; a short table goes to stderr (or stdout without --json).
 * See docs/benchmarks.md.
 */
import { spawn } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { busBench } from './bus.js'
import type { BenchOptions } from './lib.js'
import { latencyBench } from './latency.js'
import { memoryBench } from './memory.js'
import { proverBench } from './prover.js'
import { scalingBench } from './scaling.js'
import { schedulingBench } from './scheduling.js'
import { summaryTable } from './table.js'
import { utilizationBench } from './utilization.js'

export const SECTIONS = ['utilization', 'prover', 'scheduling', 'bus', 'scaling', 'latency', 'memory'] as const
export type Section = (typeof SECTIONS)[number]

/** Sections that run the built CLI (bin/proofline.js → dist/). */
const CLI_SECTIONS: readonly Section[] = ['bus', 'latency', 'memory', 'prover']

/** `tsc -p tsconfig.build.json`, its output on stderr so stdout stays one JSON document. */
function buildCli(): Promise<void> {
  return new Promise((resolve, reject) => {
    const root = fileURLToPath(new URL('../', import.meta.url))
    const child = spawn(process.execPath, [`${root}node_modules/typescript/bin/tsc`, '-p', 'tsconfig.build.json'], { cwd: root, stdio: ['ignore', process.stderr, process.stderr] })
    child.once('error', reject)
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`the build failed (tsc exited with ${code}); fix it or run with --no-build`))))
  })
}

export interface BenchArgs {
  json: boolean
  quick: boolean
  only: Section[]
  out: string | undefined
  pgUrl: string
  seed: number
  sizes: Record<string, number>
  /** Build the CLI (dist/) first: the orchestrator sections run it as production does. */
  build: boolean
}

export function parseArgs(argv: string[]): BenchArgs {
  const args: BenchArgs = { json: false, quick: false, only: [...SECTIONS], out: undefined, pgUrl: process.env.PROOFLINE_BENCH_PG ?? 'postgres://root@127.0.0.1:5432/test', seed: 7, build: true, sizes: {} }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const value = (): string => {
      const v = argv[++i]
      if (v === undefined) throw new Error(`${a} needs a value`)
      return v
    }
    if (a === '--json') args.json = true
    else if (a === '--quick') args.quick = true
    else if (a === '--no-build') args.build = false
    else if (a === '--set') {
      const m = /^([a-z]+\.[a-z_]+)=([0-9.]+)$/.exec(value())
      if (!m) throw new Error('--set takes section.key=number, e.g. --set memory.blocks=200000')
      args.sizes[m[1]!] = Number(m[2])
    }
    else if (a === '--out') args.out = value()
    else if (a === '--pg') args.pgUrl = value()
    else if (a === '--seed') args.seed = Number(value())
    else if (a === '--only') {
      const names = value().split(',')
      for (const n of names) if (!(SECTIONS as readonly string[]).includes(n)) throw new Error(`--only: unknown section ${n}; sections: ${SECTIONS.join(', ')}`)
      args.only = names as Section[]
    } else throw new Error(`unknown argument ${a}; usage: npm run bench -- [--json] [--quick] [--only ${SECTIONS.join(',')}] [--out FILE] [--pg URL] [--seed N] [--set section.key=N] [--no-build]`)
  }
  return args
}

/** Runs the selected sections in order; a section that fails is reported as `{ error }` and the rest still run. */
export async function runBench(args: BenchArgs, log: (s: string) => void): Promise<Record<string, unknown>> {
  const opts: BenchOptions = { quick: args.quick, pgUrl: args.pgUrl, seed: args.seed, log, sizes: args.sizes }
  const fns: Record<Section, (o: BenchOptions) => Promise<unknown>> = {
    scheduling: schedulingBench,
    bus: busBench,
    utilization: utilizationBench,
    scaling: scalingBench,
    latency: latencyBench,
    memory: memoryBench,
    prover: proverBench,
  }
  const tb = Date.now()
  if (args.build && args.only.some((s) => CLI_SECTIONS.includes(s))) {
    log('building the CLI (npm run build; --no-build skips it) ...')
    await buildCli()
  }
  const buildSeconds = Math.round((Date.now() - tb) / 100) / 10
  const t0 = Date.now()
  const doc: Record<string, unknown> = {
    meta: {
      started_at: new Date(t0).toISOString(),
      quick: args.quick,
      node: process.version,
      cpus: (await import('node:os')).cpus().length,
      platform: `${process.platform}-${process.arch}`,
      build_seconds: buildSeconds,
      // The machine may be shared: its 1/5/15-minute load averages at the start and after each section.
      loadavg_start: loadavg().map((x) => Math.round(x * 100) / 100),
    },
  }
  for (const s of args.only) {
    const ts = Date.now()
    log(`== ${s}`)
    try {
      doc[s] = await fns[s](opts)
    } catch (err) {
      log(`${s} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`)
      doc[s] = { error: err instanceof Error ? err.message : String(err) }
    }
    ;(doc.meta as Record<string, unknown>)[`${s}_seconds`] = Math.round((Date.now() - ts) / 100) / 10
    ;(doc.meta as Record<string, unknown>)[`${s}_loadavg_after`] = loadavg().map((x) => Math.round(x * 100) / 100)
    // With --out, the sections done so far are on disk even if the run is stopped later.
    if (args.out !== undefined) await writeFile(args.out, `${JSON.stringify(doc, null, 2)}\n`)
  }
  ;(doc.meta as Record<string, unknown>).total_seconds = Math.round((Date.now() - tb) / 100) / 10
  return doc
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2))
  const log = (s: string): void => {
    process.stderr.write(`[bench] ${s}\n`)
  }
  const doc = await runBench(args, log)
  const table = summaryTable(doc)
  if (args.json) {
    process.stderr.write(`${table}\n`)
    process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`)
  } else {
    process.stdout.write(`${table}\n`)
  }
  if (args.out !== undefined) await writeFile(args.out, `${JSON.stringify(doc, null, 2)}\n`)
  const failed = args.only.filter((s) => typeof doc[s] === 'object' && doc[s] !== null && 'error' in (doc[s] as object))
  return failed.length === 0 ? 0 : 1
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err)
      process.exit(2)
    },
  )
}
