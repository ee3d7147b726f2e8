import { Command, CommanderError } from 'commander'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { OperatorApi } from '../api/start.js'
import { loadConfig, type ResolvedConfig } from '../config/load.js'
import { ConfigError, errorMessage, ProoflineError, redactUrls } from '../core/errors.js'
import type { Executor } from '../executors/types.js'
import type { RunningProposer } from '../proposer/start.js'
import { startOrchestrator, type Orchestrator, type RunSummary } from '../pipeline/orchestrator.js'
import { tryProcessLock, type ProcessLock } from '../state/sql/process-lock.js'
import { leaderElection, type LeaderElection } from '../state/sql/leader.js'
import type { StateStore } from '../state/types.js'
import { createExecutor, createLogger, instanceId, openDatabase, randomToken, reapPredecessorOrphans, wireOrchestrator } from '../wiring.js'
import { printStatus } from './status.js'
import type { WorkerCommandOptions } from './worker.js'
import type { UpOptions } from './up.js'
import { readApiFile } from './api-file.js'
import { bar, progressLine, watchProgress } from './progress.js'
import type { JobsOptions } from './admin.js'
import type { BenchProverOptions } from './bench-prover.js'

// Commands and optional parts are imported when used: `up` (anvil, viem, the proving backend),
// the proposer (viem) and `bench prover` would otherwise be loaded by every command — about
// 90 MB of resident memory in an orchestrator that uses none of them (docs/benchmarks.md).

/** Exit codes of the CLI. */
export const EXIT = { ok: 0, failed: 1, usage: 2, config: 3, locked: 4, fenced: 5 } as const

async function runCommand(opts: { config: string; untilBlocks?: string; export?: string }): Promise<number> {
  const config = await loadConfig(opts.config, { env: process.env })
  const untilBlocks = opts.untilBlocks === undefined ? undefined : Number(opts.untilBlocks)
  if (untilBlocks !== undefined && (!Number.isSafeInteger(untilBlocks) || untilBlocks <= 0)) {
    throw new ConfigError(`--until-blocks must be a positive integer (got ${opts.untilBlocks})`)
  }
  const log = createLogger(config.log.level)
  if (config.envOverrides.length > 0) log.info({ overrides: config.envOverrides }, 'env overrides applied')
  // One orchestrator acts at a time. On a shared Postgres: a leader lease with fencing (a
  // paused ex-leader's writes are refused). Embedded: a session lock (one machine, one process).
  const database = await openDatabase(config)
  let election: LeaderElection | undefined
  let lock: ProcessLock | undefined
  if (config.state.type === 'postgres') {
    election = leaderElection(database, { holderId: `${instanceId()}:${randomToken().slice(0, 8)}`, leaseMs: config.leader.leaseMs, log: log.child({ part: 'leader' }) })
    const waiting = new AbortController()
    const cancel = (): void => waiting.abort()
    process.once('SIGINT', cancel)
    process.once('SIGTERM', cancel)
    try {
      const fence = await election.campaign({ signal: waiting.signal })
      log.info({ epoch: fence.epoch }, 'leader: this orchestrator acts')
    } catch (err) {
      await database.close()
      if (waiting.signal.aborted) return EXIT.ok
      throw err
    } finally {
      process.off('SIGINT', cancel)
      process.off('SIGTERM', cancel)
    }
  } else {
    lock = await tryProcessLock(database, 'orchestrator')
    if (!lock) {
      const api = await readApiFile(config)
      await database.close()
      process.stderr.write(
        `another proofline orchestrator is running on this state store${api ? ` (pid ${api.pid}, API ${api.url})` : ''}; use \`proofline status --config ${opts.config}\` to see it\n`,
      )
      return EXIT.locked
    }
  }
  // Only now, as the one acting orchestrator, may it kill a predecessor's leftover provers.
  await reapPredecessorOrphans(config, log)
  const e = election
  const wired = await wireOrchestrator(config, log, { database, ...(e ? { fence: () => e.fence } : {}) })
  let lost: string | undefined
  election?.onLost(({ reason }) => {
    lost = reason
    log.fatal({ reason }, 'leadership lost: stopping; another orchestrator has taken over')
    void orchestrator?.stop()
  })
  const executors = new Map<string, Executor>()
  for (const stage of config.stages) if (stage.dispatch.inProcess) executors.set(stage.name, createExecutor(config, stage))

  let orchestrator: Orchestrator | undefined
  let proposer: RunningProposer | undefined
  let api: OperatorApi | undefined
  if (config.api.enabled) {
    const { startOperatorApi } = await import('../api/start.js')
    api = await startOperatorApi({ config, ctx: wired.ctx, orchestrator: () => orchestrator, proposer: () => proposer, token: config.api.token ?? randomToken(), log })
    process.stderr.write(`proofline: dashboard ${api.server.dashboardUrl} (API ${api.server.url}, metrics ${api.server.url}/metrics)\n`)
  }

  let summary: RunSummary
  let stopProgress: (() => void) | undefined
  try {
    // The proposer first: a bad proposer config fails before any work starts.
    // Only a config with a proposer section needs the proposer's modules (viem, the signer).
    if (config.proposer !== undefined) proposer = await (await import('../proposer/start.js')).startProposer(config, { state: wired.ctx.state, database: wired.database, log, env: process.env, artifacts: wired.ctx.artifacts })
    if (proposer) log.info({ oracle: proposer.oracle, l1ChainId: proposer.l1ChainId }, 'proposer started')
    orchestrator = await startOrchestrator(wired.ctx, { executors, workerId: instanceId(), ...(untilBlocks !== undefined ? { untilBlocks } : {}), ...(api ? { observer: api.observer } : {}) })
    const o = orchestrator
    const onSignal = (sig: string): void => {
      log.info({ signal: sig }, 'stopping (draining in-flight work)')
      void o.stop()
    }
    process.once('SIGINT', onSignal)
    process.once('SIGTERM', onSignal)
    // A backfill (`--until-blocks`) on a terminal: a live progress line per stage on stderr.
    const line = progressLine()
    const target = untilBlocks
    stopProgress =
      target !== undefined && line.live
        ? watchProgress(
            line,
            async () => {
              const s = await o.summary()
              const least = Math.min(...s.stages.map((st) => st.blocksCovered))
              return `${bar(least / target)} seen ${s.blocks.seen}/${target} | ${s.stages.map((st) => `${st.stage} ${st.blocksCovered}`).join(' | ')} | retries ${s.retries} | dead ${s.deadLetters}`
            },
            1000,
          )
        : undefined
    summary = await orchestrator.done
    if (proposer) summary = { ...summary, proposals: (await proposer.service.list()).length }
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    if (opts.export) await exportJobs(wired.ctx.state, config, opts.export)
  } finally {
    stopProgress?.()
    await proposer?.stop()
    await api?.close()
    if (lock) await lock.release()
    if (election && lost === undefined) await election.resign()
    await wired.close()
  }
  process.stdout.write(`${JSON.stringify(lost === undefined ? summary : { ...summary, ok: false, leadershipLost: lost }, null, 2)}\n`)
  if (lost !== undefined) return EXIT.fenced
  return summary.ok ? EXIT.ok : EXIT.failed
}

/** Writes every succeeded job as one JSON line, for independent checking. */
async function exportJobs(state: StateStore, config: ResolvedConfig, file: string): Promise<void> {
  const lines: string[] = []
  for (const stage of config.stages) {
    for (const job of await state.listJobs({ stage: stage.name, states: ['succeeded'] })) {
      lines.push(JSON.stringify({ stage: job.stage, first: job.first, last: job.last, id: job.id, attempts: job.attempt, lastHash: job.lastHash, cost: job.cost, capacity: job.capacity }))
    }
  }
  await mkdir(join(file, '..'), { recursive: true })
  await writeFile(file, lines.length > 0 ? `${lines.join('\n')}\n` : '')
}

/** Runs the CLI with `argv` (without node and script); resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  const program = new Command()
    .name('proofline')
    .description('A modular proving pipeline for ZK rollups')
    .exitOverride()
    .showHelpAfterError()
  let result: Promise<number> = Promise.resolve(EXIT.ok)
  program
    .command('up')
    .description('everything in one process: dev L1 + L2 chains (anvil), contracts, L2 load, watcher, range + aggregate stages, proposer')
    .option('--exit-after-proposals <n>', 'exit 0 after this many confirmed proposals and print the summary')
    .option('--l1-rpc <url>', 'use this L1 instead of starting one (must be a dev chain: proofs are over a development CRS, or mock)')
    .option('--l2-rpc <url>', 'use this L2 instead of starting one')
    .option('--data-dir <dir>', 'state folder (wiped at start: the chains are new)', '.proofline/up')
    .option('--propose-every-ms <ms>', 'proposer interval', '3000')
    .option('--block-time-ms <ms>', 'L2 block time of the load generator (default 4000 with real proofs, 1000 with --mock)')
    .option('--blocks-per-range <n>', 'blocks per range proof (default 2; the range circuit is compiled for it)')
    .option('--mock', 'use the mock backend (sha256 commitments, MockVerifier; dev chains only) instead of real UltraHonk proofs')
    .option('--api-port <port>', 'port of the API and dashboard (0: a free one; the URL is printed)', '0')
    .action((opts: UpOptions) => {
      result = import('./up.js').then((m) => m.upCommand(opts))
    })
  program
    .command('run')
    .description('run the orchestrator (source, collectors, dispatchers, recorders) until stopped')
    .requiredOption('-c, --config <file>', 'pipeline file (YAML)')
    .option('--until-blocks <n>', 'stop once every stage covers this many blocks, and print the summary')
    .option('--export <file>', 'also write every succeeded job as a JSON line')
    .action((opts: { config: string; untilBlocks?: string; export?: string }) => {
      result = runCommand(opts)
    })
  program
    .command('status')
    .description('print where every stage stands (asks the running orchestrator, or reads the state store)')
    .requiredOption('-c, --config <file>', 'pipeline file (YAML)')
    .option('--json', 'print JSON')
    .action((opts: { config: string; json?: boolean }) => {
      result = printStatus(opts)
    })
  program
    .command('worker')
    .description('run a dispatcher for one stage on this machine (needs a shared bus and artifact store, no database)')
    .requiredOption('-c, --config <file>', 'pipeline file (YAML)')
    .requiredOption('-s, --stage <name>', 'stage to take jobs of')
    .option('--worker-id <id>', 'identity in attempts and routing (default: host:pid)')
    .option('--concurrency <n>', 'jobs at once (default: the stage\'s dispatch.concurrency)')
    .option('--pool <name>', 'pool served (default: the stage\'s first pool)')
    .option('--labels <list>', 'capability labels, comma-separated (e.g. gpu,a100)')
    .option('--max-cost <n>', 'largest job cost this worker takes')
    .option('--programs <list>', 'program ids this worker can prove, comma-separated (default: any)')
    .action((opts: WorkerCommandOptions) => {
      result = import('./worker.js').then((m) => m.workerCommand(opts))
    })
  const inspect = program.command('inspect').description('look at one block or job (through the running orchestrator\'s API)')
  inspect
    .command('block')
    .description('where a block is: the jobs of every stage covering it, their proofs, its proposal')
    .argument('<n>', 'L2 block number')
    .requiredOption('-c, --config <file>', 'pipeline file (YAML)')
    .option('--json', 'print the API\'s JSON')
    .action((n: string, opts: { config: string; json?: boolean }) => {
      result = import('./admin.js').then((m) => m.inspectBlockCommand(n, opts))
    })
  inspect
    .command('job')
    .description('a job with its attempts (worker, outcome, error), events and stderr tail')
    .argument('<id>', 'job id')
    .requiredOption('-c, --config <file>', 'pipeline file (YAML)')
    .option('--json', 'print the API\'s JSON')
    .action((id: string, opts: { config: string; json?: boolean }) => {
      result = import('./admin.js').then((m) => m.inspectJobCommand(id, opts))
    })
  program
    .command('jobs')
    .description('list jobs, most recently updated first (through the running orchestrator\'s API)')
    .requiredOption('-c, --config <file>', 'pipeline file (YAML)')
    .option('--failed', 'only jobs in trouble: failed, retrying or dead')
    .option('--stage <name>', 'only this stage')
    .option('--state <list>', 'only these states, comma-separated')
    .option('--limit <n>', 'at most this many (default 100)')
    .option('--json', 'print the API\'s JSON')
    .action((opts: JobsOptions) => {
      result = import('./admin.js').then((m) => m.jobsCommand(opts))
    })
  const admin = (name: string, kind: 'jobs' | 'stages' | 'workers', arg: string, description: string): void => {
    program
      .command(name)
      .description(description)
      .argument(`<${arg}>`, `${arg} ${kind === 'jobs' ? 'id' : kind === 'stages' ? 'name' : 'id'}`)
      .requiredOption('-c, --config <file>', 'pipeline file (YAML)')
      .option('--json', 'print the API\'s JSON')
      .action((id: string, opts: { config: string; json?: boolean }) => {
        result = import('./admin.js').then((m) => m.adminCommand(kind, id, name, opts))
      })
  }
  admin('requeue', 'jobs', 'job', 'give a dead or cancelled job another attempt (through the running orchestrator)')
  admin('cancel', 'jobs', 'job', 'cancel a job: a running attempt is stopped, the job is not retried')
  admin('pause', 'stages', 'stage', 'stop publishing a stage\'s jobs (queued attempts are taken back; running ones finish)')
  admin('resume', 'stages', 'stage', 'publish a paused stage\'s jobs again')
  admin('drain', 'workers', 'worker', 'a worker stops taking jobs, finishes its running ones, and reports drained')
  admin('undrain', 'workers', 'worker', 'a drained worker takes jobs again')
  const bench = program.command('bench').description('measure a part of proofline on this machine')
  bench
    .command('prover')
    .description('the built-in prover: gates, prove/verify time, proof size, EVM gas, peak memory, overhead over the bb CLI, slowdown vs native (heavy: run it alone)')
    .option('--json', 'print the report as JSON')
    .option('--blocks-per-range <n>', 'blocks per range proof', '2')
    .option('--aggregate-k <n>', 'range proofs per aggregate', '2')
    .option('--runs <n>', 'interleaved proofline / bb-direct runs per program (medians)', '3')
    .option('--threads <n>', 'threads bb may use (default: all cores)')
    .option('--cache-dir <dir>', 'CRS, circuits, keys, dev blocks (default: $PROOFLINE_CACHE_DIR or ~/.cache/proofline)')
    .option('--crs-points <n>', 'development CRS size (default: enough for the aggregate)')
    .option('--no-l1', 'skip the proposeL2Output transaction on an anvil L1')
    .action((opts: BenchProverOptions) => {
      result = import('./bench-prover.js').then((m) => m.benchProverCommand(opts))
    })
  try {
    await program.parseAsync(argv, { from: 'user' })
    return await result
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.ok : EXIT.usage
    if (err instanceof ConfigError) {
      process.stderr.write(`error: ${redactUrls(err.message)}\n`)
      return EXIT.config
    }
    if (err instanceof ProoflineError) {
      process.stderr.write(`error [${err.code}]: ${redactUrls(err.message)}\n`)
      return EXIT.failed
    }
    process.stderr.write(`error: ${errorMessage(err)}\n`)
    return EXIT.failed
  }
}
