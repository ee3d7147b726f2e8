import { Command, CommanderError } from 'commander'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { startOperatorApi, type OperatorApi } from '../api/start.js'
import { loadConfig, type ResolvedConfig } from '../config/load.js'
import { ConfigError, errorMessage, ProoflineError, redactUrls } from '../core/errors.js'
import type { Executor } from '../executors/types.js'
import { startProposer, type RunningProposer } from '../proposer/start.js'
import { startOrchestrator, type Orchestrator, type RunSummary } from '../pipeline/orchestrator.js'
import { tryProcessLock, type ProcessLock } from '../state/sql/process-lock.js'
import { leaderElection, type LeaderElection } from '../state/sql/leader.js'
import type { StateStore } from '../state/types.js'
import { createExecutor, createLogger, instanceId, openDatabase, randomToken, reapPredecessorOrphans, wireOrchestrator } from '../wiring.js'
import { printStatus } from './status.js'
import { workerCommand, type WorkerCommandOptions } from './worker.js'
import { upCommand, type UpOptions } from './up.js'
import { apiFilePath, readApiFile, type ApiFile } from './api-file.js'

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
    api = await startOperatorApi({ config, ctx: wired.ctx, orchestrator: () => orchestrator, proposer: () => proposer, token: config.api.token ?? randomToken(), log })
    process.stderr.write(`proofline: dashboard ${api.server.dashboardUrl} (API ${api.server.url}, metrics ${api.server.url}/metrics)\n`)
  }

  let summary: RunSummary
  try {
    // The proposer first: a bad proposer config fails before any work starts.
    proposer = await startProposer(config, { state: wired.ctx.state, database: wired.database, log, env: process.env })
    if (proposer) log.info({ oracle: proposer.oracle, l1ChainId: proposer.l1ChainId }, 'proposer started')
    orchestrator = await startOrchestrator(wired.ctx, { executors, workerId: instanceId(), ...(untilBlocks !== undefined ? { untilBlocks } : {}), ...(api ? { observer: api.observer } : {}) })
    const o = orchestrator
    const onSignal = (sig: string): void => {
      log.info({ signal: sig }, 'stopping (draining in-flight work)')
      void o.stop()
    }
    process.once('SIGINT', onSignal)
    process.once('SIGTERM', onSignal)
    summary = await orchestrator.done
    if (proposer) summary = { ...summary, proposals: (await proposer.service.list()).length }
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    if (opts.export) await exportJobs(wired.ctx.state, config, opts.export)
  } finally {
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

async function requeueCommand(jobIdArg: string, opts: { config: string }): Promise<number> {
  const config = await loadConfig(opts.config, { env: process.env })
  const api = await readApiFile(config)
  if (!api) {
    process.stderr.write(`no running orchestrator found for ${config.file} (no ${apiFilePath(config)}); start it with \`proofline run --config ${opts.config}\`\n`)
    return EXIT.failed
  }
  const res = await fetch(`${api.url}/jobs/${encodeURIComponent(jobIdArg)}/requeue`, { method: 'POST', headers: { authorization: `Bearer ${api.token}` } })
  process.stdout.write(`${await res.text()}\n`)
  return res.ok ? EXIT.ok : EXIT.failed
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
    .option('--l1-rpc <url>', 'use this L1 instead of starting one (must be a dev chain: the verifier is a mock)')
    .option('--l2-rpc <url>', 'use this L2 instead of starting one')
    .option('--data-dir <dir>', 'state folder (wiped at start: the chains are new)', '.proofline/up')
    .option('--propose-every-ms <ms>', 'proposer interval', '3000')
    .option('--block-time-ms <ms>', 'L2 block time of the load generator', '1000')
    .action((opts: UpOptions) => {
      result = upCommand(opts)
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
      result = workerCommand(opts)
    })
  program
    .command('requeue')
    .description('give a dead or cancelled job another attempt (through the running orchestrator)')
    .argument('<job>', 'job id')
    .requiredOption('-c, --config <file>', 'pipeline file (YAML)')
    .action((job: string, opts: { config: string }) => {
      result = requeueCommand(job, opts)
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
