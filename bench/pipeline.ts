/**
 * Runs the real orchestrator (`node bin/proofline.js run`) as a child process in distributed
 * mode: NATS JetStream (a private nats-server) and Postgres (a fresh schema), synthetic blocks,
 * mock provers in-process or nowhere (jobs stay queued). The built CLI is used, as in production.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { benchSchema, dropSchema } from './lib.js'

export const ROOT = fileURLToPath(new URL('../', import.meta.url))
export const BIN = `${ROOT}bin/proofline.js`

export interface PipelineSpec {
  pgUrl: string
  natsUrl: string
  /** Synthetic source rate; 0 = as fast as backpressure allows. */
  blocksPerSecond: number
  startBlock?: number
  seed: number
  range: { latencyMs: { min: number; max: number }; concurrency: number; inProcess: boolean; timeoutMs: number }
  aggregate: { latencyMs: { min: number; max: number }; concurrency: number; inProcess: boolean; timeoutMs: number }
  /** Use this schema (already prepared) instead of a fresh one. */
  schema?: string
}

export interface PreparedPipeline {
  file: string
  dir: string
  schema: string
  stream: string
  cleanup(): Promise<void>
}

/** Writes the pipeline file; the schema is dropped by `cleanup`. */
export async function preparePipeline(spec: PipelineSpec, name: string): Promise<PreparedPipeline> {
  const dir = await mkdtemp(join(tmpdir(), `pl-bench-${name}-`))
  const schema = spec.schema ?? benchSchema(name)
  const tag = `${name}${Date.now().toString(36)}`
  const stream = `BENCH_${tag.toUpperCase().replace(/[^A-Z0-9_]/g, '_')}`
  const text = `
version: 1
name: bench-${name}
dataDir: ${dir}/data
state: { type: postgres, url: "${spec.pgUrl}", schema: ${schema}, poolSize: 10 }
bus: { type: nats, servers: "${spec.natsUrl}", stream: ${stream}, subjectPrefix: b${tag.replace(/[^a-z0-9]/g, '')} }
artifacts: { type: fs }
source:
  type: synthetic
  startBlock: ${spec.startBlock ?? 1}
  blocksPerSecond: ${spec.blocksPerSecond}
  seed: ${spec.seed}
  gas: { medianGas: 2000000, sigma: 1.1, gasLimit: 30000000, fullBlockRate: 0.02 }
  cost: { perGas: 1 }
stages:
  - name: range
    input: blocks
    collector: { strategy: sequential, capacity: 400000000, maxCount: 256, timeoutMs: ${spec.range.timeoutMs} }
    executor: { type: mock, latencyMs: { min: ${spec.range.latencyMs.min}, max: ${spec.range.latencyMs.max} }, seed: ${spec.seed} }
    dispatch: { concurrency: ${spec.range.concurrency}, inProcess: ${spec.range.inProcess} }
  - name: aggregate
    input: proofs.range
    collector: { strategy: sequential, maxCount: 2, timeoutMs: ${spec.aggregate.timeoutMs} }
    executor: { type: mock, latencyMs: { min: ${spec.aggregate.latencyMs.min}, max: ${spec.aggregate.latencyMs.max} }, seed: ${spec.seed + 1} }
    dispatch: { concurrency: ${spec.aggregate.concurrency}, inProcess: ${spec.aggregate.inProcess} }
log: { level: warn }
`
  const file = join(dir, 'pipeline.yaml')
  await writeFile(file, text)
  return {
    file,
    dir,
    schema,
    stream,
    cleanup: async () => {
      await dropSchema(spec.pgUrl, schema)
      await rm(dir, { recursive: true, force: true })
    },
  }
}

/** `proofline run --until-blocks n`: resolves with the printed summary (throws on a non-zero exit or timeout). */
export function runUntil(p: PreparedPipeline, blocks: number, timeoutMs: number): Promise<{ summary: Record<string, unknown>; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'run', '--config', p.file, '--until-blocks', String(blocks)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-20_000)))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      if (code !== 0) {
        reject(new Error(`proofline run exited with ${code ?? signal}${signal === 'SIGKILL' ? ` (timed out after ${timeoutMs} ms)` : ''}: ${stderr.slice(-2000)}`))
        return
      }
      try {
        resolve({ summary: JSON.parse(stdout) as Record<string, unknown>, stderr })
      } catch {
        reject(new Error(`proofline run printed no summary: ${stdout.slice(0, 500)} ${stderr.slice(-1000)}`))
      }
    })
  })
}

/** `proofline run` without a limit, for a process to observe; `stop` sends SIGTERM (SIGKILL after 15 s). `nodeArgs` go to node (e.g. a heap limit). */
export function startRun(p: PreparedPipeline, nodeArgs: string[] = []): { child: ChildProcess; stderr: () => string; stop: () => Promise<void> } {
  const child = spawn(process.execPath, [...nodeArgs, BIN, 'run', '--config', p.file], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-20_000)))
  return {
    child,
    stderr: () => stderr,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = new Promise<void>((r) => child.once('exit', () => r()))
      child.kill('SIGTERM')
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000)
      await exited
      clearTimeout(t)
    },
  }
}
