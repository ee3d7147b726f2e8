/**
 * `npm run demo:distributed` — proofline on real distributed infrastructure, on one machine:
 * an orchestrator (watcher, collectors, proposer) and three worker processes over NATS
 * JetStream (a private nats-server), Postgres (127.0.0.1:5432, a fresh schema) and S3 (s3rver
 * from npm), following a dev L2 chain (anvil, with transaction load) and proposing to an
 * output oracle on a dev L1 (anvil). It proves 2,000 L2 blocks through range → aggregate with
 * process provers that fail at random, SIGKILLs one worker in the middle of a job (and
 * restarts it), restarts NATS once, and prints a JSON summary checked independently from the
 * export, the database and the L1 oracle's events.
 *
 * Environment: PROOFLINE_DEMO_PG (default postgres://root@127.0.0.1:5432/test), PROOFLINE_DEMO_BLOCKS (2000).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { createPublicClient, createWalletClient, http, keccak256, parseAbiItem, stringToHex, type Hex } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { privateNatsServer } from '../src/bus/nats/nats-server.fixture.js'
import { DEV_L1_CHAIN_ID, DEV_L2_CHAIN_ID, startAnvil } from '../src/chain/anvil.js'
import { deployMockVerifier, deployOracle } from '../src/chain/deploy.js'
import { ANVIL_DEV_KEYS, installMessagePasser, startLoad } from '../src/chain/load.js'
import { outputRootAt } from '../src/chain/output-root.js'
import { BIN, ROOT } from '../test/support/cli.js'
import { checkExport, type ExportedJob } from '../test/support/pipeline-config.js'
import { startS3Server } from '../test/support/s3-server.js'

const PG = process.env.PROOFLINE_DEMO_PG ?? 'postgres://root@127.0.0.1:5432/test'
const BLOCKS = Number(process.env.PROOFLINE_DEMO_BLOCKS ?? 2000)
const log = (msg: string): void => void process.stderr.write(`[demo] ${msg}\n`)
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

async function main(): Promise<number> {
  const dir = await mkdtemp(join(tmpdir(), 'pl-demo-'))
  await chmod(dir, 0o755)
  const schema = `demo_${Date.now().toString(36)}`
  const nats = await privateNatsServer()
  await nats.start()
  const s3 = await startS3Server()
  // Dev chains: an L2 with load (transfers, calls, withdrawals) and an L1 with the oracle.
  const l1 = await startAnvil({ chainId: DEV_L1_CHAIN_ID })
  const l2 = await startAnvil({ chainId: DEV_L2_CHAIN_ID })
  const l2c = createPublicClient({ transport: http(l2.rpcUrl), cacheTime: 0 })
  await installMessagePasser(l2c)
  const loadAbort = new AbortController()
  // Not faster than a block per 50 ms: anvil ≥ 1.1 can deadlock when evm_mine arrives while it
  // serves state lookups (traces, proofs) for the watcher (foundry-rs/foundry#10452); a hung L2
  // node shows up here as OUTPUT_BLOCK_NOT_FOUND and a stalled run.
  const load = await startLoad({ rpcUrl: l2.rpcUrl, privateKeys: ANVIL_DEV_KEYS.slice(1, 4), txPerBlock: 2, blockIntervalMs: 50, seed: 5, signal: loadAbort.signal })
  while ((await l2c.getBlockNumber()) < 1n) await sleep(50)
  // The run needs blocks up to BLOCKS + 1 (+ confirmations); a chain racing far ahead of a slow
  // (loaded) machine only costs anvil memory and disk, so the load stops a little past that.
  const enough = setInterval(() => {
    void l2c.getBlockNumber().then((n) => {
      if (n > BigInt(BLOCKS + 20)) loadAbort.abort()
    }, () => undefined)
  }, 500)
  const anchor = await outputRootAt(l2c, 1n)
  const l1c = createPublicClient({ transport: http(l1.rpcUrl), cacheTime: 0 })
  const wallet = createWalletClient({ account: privateKeyToAccount(ANVIL_DEV_KEYS[0] as Hex), transport: http(l1.rpcUrl) })
  const verifier = await deployMockVerifier(wallet, l1c)
  const oracle = await deployOracle(wallet, l1c, {
    anchorRoot: anchor.outputRoot, anchorBlock: 1n, intervalBlocks: 1n, verifier: verifier.address,
    programId: keccak256(stringToHex('mock-v1')), chainConfigHash: keccak256(stringToHex('proofline-demo')), proposer: wallet.account.address,
  })
  log(`nats ${nats.url}, s3 ${s3.endpoint}, postgres ${PG} schema ${schema}, L1 ${l1.rpcUrl}, L2 ${l2.rpcUrl}, oracle ${oracle.address}, work dir ${dir}`)
  // The deployment's own pipeline file, pointed at the local servers through env overrides.
  const file = join(ROOT, 'deploy', 'pipeline.yaml')
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    PROOFLINE_DATA_DIR: join(dir, 'data'),
    PROOFLINE_STATE__URL: PG,
    PROOFLINE_STATE__SCHEMA: schema,
    PROOFLINE_BUS__SERVERS: nats.url,
    PROOFLINE_ARTIFACTS__ENDPOINT: s3.endpoint,
    PROOFLINE_API__HOST: '127.0.0.1',
    PROOFLINE_API__PORT: '0',
    PROOFLINE_SOURCE__RPC_URL: l2.rpcUrl,
    PROOFLINE_PROPOSER__L1_RPC_URLS: `[${l1.rpcUrl}]`,
    PROOFLINE_PROPOSER__ORACLE: oracle.address,
    PROPOSER_PRIVATE_KEY: ANVIL_DEV_KEYS[0] as string,
    AWS_ACCESS_KEY_ID: s3.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey,
  }
  const out = join(dir, 'export.jsonl')
  const children: ChildProcess[] = []
  // Stopped from outside (Ctrl-C, a test timing out): take every process and server down with it.
  const abandon = (signal: string): void => {
    log(`${signal}: stopping the orchestrator, workers, servers and chains`)
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL')
    void Promise.allSettled([nats.dispose(), s3.close(), l1.stop(), l2.stop()]).then(() => process.exit(1))
  }
  process.once('SIGTERM', abandon)
  process.once('SIGINT', abandon)
  const start = (args: string[], name: string): ChildProcess => {
    const c = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env })
    c.stderr?.on('data', (d: Buffer) => {
      for (const line of d.toString().split('\n')) if (line.includes('"level":5') || line.includes('"level":6') || (line.trim() && !line.startsWith('{'))) log(`${name}: ${line.slice(0, 300)}`)
    })
    children.push(c)
    return c
  }
  const worker = (id: string): ChildProcess => start(['worker', '--config', file, '--stage', 'range,aggregate', '--worker-id', id, '--concurrency', '2'], id)

  let summaryText = ''
  const orch = start(['run', '--config', file, '--until-blocks', String(BLOCKS), '--export', out], 'orchestrator')
  orch.stdout?.on('data', (d: Buffer) => (summaryText += d.toString()))
  const orchExit = new Promise<number | null>((r) => orch.on('close', (code) => r(code)))
  const workers = new Map<string, ChildProcess>([['w1', worker('w1')], ['w2', worker('w2')], ['w3', worker('w3')]])

  const db = new pg.Client({ connectionString: PG })
  await db.connect()
  const runningOn = async (w: string): Promise<boolean> => {
    try {
      const r = await db.query(`select count(*)::int n from ${schema}.state_attempts where worker_id = $1 and outcome = 'running'`, [w])
      return (r.rows[0] as { n: number }).n > 0
    } catch {
      return false
    }
  }
  // 1. SIGKILL a worker while it runs a job, then start it again.
  const events: string[] = []
  // Wait for w2 to hold a job (a loaded machine can take a while to start three workers); the
  // event says whether the kill really hit a job in flight.
  let orchDone = false
  void orchExit.then(() => (orchDone = true))
  let midJob = false
  for (let i = 0; i < 2400 && !orchDone && !(midJob = await runningOn('w2')); i++) await sleep(100)
  workers.get('w2')?.kill('SIGKILL')
  events.push(`SIGKILLed worker w2 ${midJob ? 'mid-job' : 'before it ran any job'} at ${new Date().toISOString()}`)
  log(events[events.length - 1] as string)
  await sleep(2000)
  workers.set('w2', worker('w2'))
  // 2. Restart NATS once.
  await sleep(3000)
  await nats.kill()
  events.push(`killed nats-server at ${new Date().toISOString()}`)
  log(events[events.length - 1] as string)
  await sleep(2000)
  await nats.start()
  events.push(`restarted nats-server at ${new Date().toISOString()}`)
  log(events[events.length - 1] as string)

  const code = await orchExit
  for (const w of workers.values()) w.kill('SIGTERM')
  loadAbort.abort()
  await load.done
  clearInterval(enough)
  await sleep(500)
  // What L1 says: every OutputProposed, contiguous from the anchor, each root the L2 node's.
  const proposedLogs = await l1c.getLogs({
    address: oracle.address,
    event: parseAbiItem('event OutputProposed(bytes32 indexed outputRoot, uint256 indexed l2OutputIndex, uint256 indexed l2BlockNumber, uint256 l1Timestamp)'),
    fromBlock: 0n,
  })
  let proposalsOk = proposedLogs.length > 0
  try {
    for (const l of proposedLogs) {
      const root = (await outputRootAt(l2c, l.args.l2BlockNumber as bigint)).outputRoot
      if (root !== l.args.outputRoot) proposalsOk = false
    }
  } catch (err) {
    // Say what state the L2 node is in (gone, hung, or answering) rather than only that it failed.
    let procState = 'gone'
    try {
      procState = (await readFile(`/proc/${l2.pid}/status`, 'utf8')).split('\n').find((l) => l.startsWith('State:')) ?? 'unknown'
    } catch {
      // no such process
    }
    const t = Date.now()
    const answer = await fetch(l2.rpcUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}', signal: AbortSignal.timeout(5000) })
      .then((r) => r.text())
      .catch((e: unknown) => `no answer: ${String(e)}`)
    log(`checking proposals against L2 failed: ${String(err)}; L2 anvil pid ${l2.pid} ${procState}; eth_blockNumber → ${answer.slice(0, 200)} in ${Date.now() - t} ms`)
    proposalsOk = false
  }

  const summary = JSON.parse(summaryText) as { ok: boolean; stages: { stage: string; blocksCovered: number; retries: number; gaps: unknown[] }[]; continuity: unknown; deadLetters: number; durationMs: number; reorgs: unknown }
  const lines = (await readFile(out, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as ExportedJob)
  const check = checkExport(lines, ['range', 'aggregate'], 2, BLOCKS + 1) // block 1 is the oracle's anchor
  const a = await db.query(`
    select j.id, j.state, j.attempt,
           count(a.*)::int as rows,
           count(distinct a.attempt)::int as numbered,
           count(*) filter (where a.outcome = 'succeeded')::int as succeeded_rows,
           count(*) filter (where a.outcome = 'running')::int as running_rows
      from ${schema}.state_jobs j left join ${schema}.state_attempts a on a.job_id = j.id
     group by j.id, j.state, j.attempt`)
  const jobs = a.rows as { id: string; state: string; attempt: number; rows: number; numbered: number; succeeded_rows: number; running_rows: number }[]
  // Accounted for: every attempt 1..n has a record, exactly one succeeded, none is left running.
  const unaccounted = jobs
    .filter((j) => j.state !== 'succeeded' || j.numbered !== j.attempt || j.succeeded_rows !== 1 || j.running_rows !== 0)
    .map((j) => j.id)
  const outcomes = await db.query(`select outcome, count(*)::int n from ${schema}.state_attempts group by outcome order by outcome`)
  const workersSeen = await db.query(`select worker_id, count(*)::int n from ${schema}.state_attempts group by worker_id order by worker_id`)
  await db.end()

  const result = {
    ok: code === 0 && summary.ok && check.gaps === 0 && check.overlaps === 0 && check.duplicates === 0 && unaccounted.length === 0 && proposalsOk,
    blocks: BLOCKS,
    lostBlocks: Object.values(check.covered).reduce((n, c) => n + Math.max(0, BLOCKS - c), 0),
    gaps: check.gaps,
    overlaps: check.overlaps,
    duplicateProofs: check.duplicates,
    jobs: jobs.length,
    jobsByStage: Object.fromEntries(['range', 'aggregate'].map((s) => [s, lines.filter((l) => l.stage === s).length])),
    attemptsByOutcome: Object.fromEntries((outcomes.rows as { outcome: string; n: number }[]).map((r) => [r.outcome, r.n])),
    attemptsByWorker: Object.fromEntries((workersSeen.rows as { worker_id: string; n: number }[]).map((r) => [r.worker_id ?? '(orchestrator)', r.n])),
    unaccountedJobs: unaccounted,
    retries: summary.stages.reduce((n, s) => n + s.retries, 0),
    deadLetters: summary.deadLetters,
    proposals: { onL1: proposedLogs.length, lastL2Block: Number(proposedLogs[proposedLogs.length - 1]?.args.l2BlockNumber ?? 1n), rootsMatchL2: proposalsOk, oracle: oracle.address },
    disruptions: events,
    // What the orchestrator itself reported, next to the independent check above.
    orchestrator: { ok: summary.ok, reorgs: summary.reorgs, coverage: summary.stages.map((s) => ({ stage: s.stage, blocksCovered: s.blocksCovered, gaps: s.gaps })) },
    durationMs: summary.durationMs,
    orchestratorExit: code,
  }
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`)
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL')
  await nats.dispose()
  await s3.close()
  await l1.stop()
  await l2.stop()
  if (!result.ok) {
    // Keep the evidence of a failed run: the database schema and the export.
    log(`not ok: kept schema ${schema} and work dir ${dir}`)
    return 1
  }
  const drop = new pg.Client({ connectionString: PG })
  await drop.connect()
  await drop.query(`drop schema if exists ${schema} cascade`)
  await drop.end()
  await rm(dir, { recursive: true, force: true })
  return 0
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`${String((err as Error).stack ?? err)}\n`)
    process.exit(1)
  },
)
