import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmod, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { createPublicClient, createWalletClient, http, keccak256, stringToHex, type Hex } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { afterAll, describe, expect, it } from 'vitest'
import { privateNatsServer } from '../../src/bus/nats/nats-server.fixture.js'
import { startAnvil } from '../../src/chain/anvil.js'
import { deployMockVerifier, deployOracle } from '../../src/chain/deploy.js'
import { ANVIL_DEV_KEYS, installMessagePasser, startLoad } from '../../src/chain/load.js'
import { analyzeCoverage, canonicalOutputRoot, readProposals } from '../chaos/checker.js'
import { BIN, ROOT } from '../support/cli.js'
import { startS3Server } from '../support/s3-server.js'

/**
 * Untrusted provers. Two `proofline worker` processes are given only what reaches the bus and
 * the artifact store — a pipeline file without a `state` section (no database URL), a
 * synthetic source (no L2 node), no proposer, and an environment with nothing but the S3
 * credentials. One of them is hostile (test/support/lying-prover.mjs): for every job it
 * returns a proof for the wrong range or an invalid proof. The orchestrator must record each
 * lie, retry the job on the other worker, and propose only honest work to L1.
 */

const PG_URL = process.env.PROOFLINE_TEST_PG_URL ?? 'postgres://root@127.0.0.1:5432/test'
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const cleanups: (() => Promise<unknown>)[] = []
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined)
})

describe('untrusted workers', () => {
  it('behavior: workers with only bus and artifact-store credentials prove the jobs; a liar\'s wrong-range and invalid proofs are recorded, retried on the honest worker and never proposed', { timeout: 300_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pl-untrusted-'))
    await chmod(dir, 0o755)
    cleanups.push(() => rm(dir, { recursive: true, force: true }))
    const nats = await privateNatsServer()
    cleanups.push(() => nats.dispose())
    await nats.start()
    const s3 = await startS3Server()
    cleanups.push(() => s3.close())
    const l1 = await startAnvil({ chainId: 900 })
    const l2 = await startAnvil({ chainId: 901 })
    cleanups.push(() => l1.stop(), () => l2.stop())
    const l2c = createPublicClient({ transport: http(l2.rpcUrl), cacheTime: 0 })
    await installMessagePasser(l2c)
    const abort = new AbortController()
    const load = await startLoad({ rpcUrl: l2.rpcUrl, privateKeys: ANVIL_DEV_KEYS.slice(1, 3), txPerBlock: 2, blockIntervalMs: 250, seed: 3, signal: abort.signal })
    cleanups.push(async () => {
      abort.abort()
      await load.done
    })
    while ((await l2c.getBlockNumber()) < 1n) await sleep(100)
    const anchor = await canonicalOutputRoot(l2c, 1)
    const l1c = createPublicClient({ transport: http(l1.rpcUrl), cacheTime: 0 })
    const wallet = createWalletClient({ account: privateKeyToAccount(ANVIL_DEV_KEYS[0] as Hex), transport: http(l1.rpcUrl) })
    const verifier = await deployMockVerifier(wallet, l1c)
    const oracle = await deployOracle(wallet, l1c, {
      anchorRoot: anchor.outputRoot, anchorBlock: 1n, intervalBlocks: 1n, verifier: verifier.address,
      programId: keccak256(stringToHex('mock-v1')), chainConfigHash: keccak256(stringToHex('untrusted')), proposer: wallet.account.address,
    })
    const schema = `untr_${randomBytes(4).toString('hex')}`
    const db = new pg.Client({ connectionString: PG_URL })
    await db.connect()
    cleanups.push(async () => {
      await db.query(`drop schema if exists ${schema} cascade`)
      await db.end()
    })

    // What orchestrator and workers share: the bus and the artifact store.
    const shared = `
bus: { type: nats, servers: "${nats.url}", stream: UNTR${randomBytes(3).toString('hex').toUpperCase()}, subjectPrefix: untr }
artifacts: { type: s3, bucket: proofs, endpoint: "${s3.endpoint}", forcePathStyle: true, createBucket: true }
log: { level: warn }`
    const rangeStage = (command: string[]): string => `
  - name: range
    input: blocks
    collector: { strategy: sequential, maxCount: 4, timeoutMs: 1000 }
    executor: { type: process, command: ${JSON.stringify(command)}, timeoutMs: 20000, heartbeatMs: 500 }
    dispatch: { inProcess: false, ackWaitMs: 5000 }
    retry: { maxAttempts: 12, backoffMs: 50, maxBackoffMs: 200, avoidFailedWorkerAttempts: 12 }
    leaseMs: 20000`
    const honestProver = ['node', `${ROOT}examples/mock-prover.mjs`, '--latency-ms', '50:150']
    const orchestratorFile = join(dir, 'orchestrator.yaml')
    await writeFile(
      orchestratorFile,
      `version: 1
dataDir: ${dir}/orchestrator
state: { type: postgres, url: "${PG_URL}", schema: ${schema} }
source: { type: l2, rpcUrl: "${l2.rpcUrl}", startBlock: 2, safety: { kind: latest, confirmations: 1 }, pollIntervalMs: 200, traces: none }
proposer: { l1RpcUrls: ["${l1.rpcUrl}"], oracle: "${oracle.address}", intervalMs: 500, confirmations: 1 }
api: { enabled: false }
stages:${rangeStage(honestProver)}
  - { name: aggregate, input: proofs.range, collector: { strategy: sequential, maxCount: 2, timeoutMs: 1000 }, executor: { type: mock } }
${shared}`,
    )
    // A worker's whole configuration: no state, no L2 node, no proposer.
    const workerFile = async (name: string, command: string[]): Promise<string> => {
      const file = join(dir, `${name}.yaml`)
      await writeFile(file, `version: 1\ndataDir: ${dir}/${name}\nsource: { type: synthetic }\nstages:${rangeStage(command)}\n${shared}\n`)
      return file
    }
    const liarFile = await workerFile('liar', ['node', `${ROOT}test/support/lying-prover.mjs`])
    const honestFile = await workerFile('honest', honestProver)
    // Nothing but the artifact store's credentials (and what node needs to run).
    const workerEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', AWS_ACCESS_KEY_ID: s3.credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey }

    const outputs = new Map<string, string>()
    const start = (name: string, args: string[], env: Record<string, string>): ChildProcess => {
      const c = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
      outputs.set(name, '')
      const keep = (d: Buffer): void => void outputs.set(name, `${outputs.get(name) ?? ''}${d.toString()}`.slice(-20_000))
      c.stdout?.on('data', keep)
      c.stderr?.on('data', keep)
      const closed = new Promise<void>((r) => c.on('close', () => r()))
      cleanups.push(async () => {
        if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
        await closed
      })
      return c
    }
    const orchestrator = start('orchestrator', ['run', '--config', orchestratorFile], { ...(process.env as Record<string, string>), PROPOSER_PRIVATE_KEY: ANVIL_DEV_KEYS[0] as string, AWS_ACCESS_KEY_ID: s3.credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey })
    const workers = [
      start('liar', ['worker', '--config', liarFile, '--stage', 'range', '--worker-id', 'liar', '--concurrency', '2'], workerEnv),
      start('honest', ['worker', '--config', honestFile, '--stage', 'range', '--worker-id', 'honest', '--concurrency', '1'], workerEnv),
    ]

    // Run until L1 has 4 proposals past the anchor, or 3 minutes.
    const latestIndex = async (): Promise<number> => Number(await l1c.readContract({ address: oracle.address, abi: [{ type: 'function', name: 'latestOutputIndex', inputs: [], outputs: [{ type: 'uint256' }], stateMutability: 'view' }], functionName: 'latestOutputIndex' }))
    for (let i = 0; i < 1800 && (await latestIndex()) < 4; i++) {
      await sleep(100)
      for (const [name, c] of [['orchestrator', orchestrator], ['liar', workers[0]], ['honest', workers[1]]] as const) {
        expect(c?.exitCode, `${name} exited:\n${outputs.get(name) ?? ''}`).toBeNull()
      }
    }
    for (const c of [...workers, orchestrator]) c?.kill('SIGTERM')
    expect(await latestIndex(), outputs.get('orchestrator')).toBeGreaterThanOrEqual(4)

    // The lies were recorded, both kinds, each naming the liar.
    const rejected = await db.query<{ message: string; worker: string }>(`select message, details->>'worker' as worker from ${schema}.state_events where kind = 'rejected-output'`)
    expect(rejected.rows.length).toBeGreaterThan(0)
    expect(new Set(rejected.rows.map((r) => r.worker))).toEqual(new Set(['liar']))
    expect(rejected.rows.some((r) => /^output covers \d+-\d+, job is \d+-\d+/.test(r.message)), 'a wrong-range proof was rejected').toBe(true)
    expect(rejected.rows.some((r) => r.message.startsWith('commitment ')), 'an invalid proof was rejected').toBe(true)
    // Every range job finished on the honest worker, never on the liar; the liar's attempts all failed.
    const attempts = await db.query<{ worker_id: string; outcome: string; n: number }>(
      `select a.worker_id, a.outcome, count(*)::int as n from ${schema}.state_attempts a join ${schema}.state_jobs j on j.id = a.job_id where j.stage = 'range' group by 1, 2`,
    )
    const count = (worker: string, outcome?: string): number => attempts.rows.filter((r) => r.worker_id === worker && (outcome === undefined || r.outcome === outcome)).reduce((n, r) => n + r.n, 0)
    expect(count('honest', 'succeeded')).toBeGreaterThan(0)
    expect(count('liar')).toBeGreaterThan(0)
    expect(count('liar', 'succeeded')).toBe(0)
    const succeededJobs = await db.query<{ n: number }>(`select count(*)::int as n from ${schema}.state_jobs where stage = 'range' and state = 'succeeded'`)
    expect(count('honest', 'succeeded')).toBe(succeededJobs.rows[0]?.n)

    // L1: contiguous proposals, each committing to the canonical L2 output root.
    const proposals = await readProposals(l1c, oracle.address)
    const last = Math.max(...proposals.map((p) => p.last))
    expect(analyzeCoverage({ start: 2, target: last, proposals })).toMatchObject({ lost: 0, gaps: 0, duplicates: 0, discontinuities: 0 })
    for (const p of proposals) expect(p.outputRoot.toLowerCase()).toBe((await canonicalOutputRoot(l2c, p.last)).outputRoot.toLowerCase())

    // The workers never opened a state store: nothing but their executor scratch in their data folders.
    for (const name of ['liar', 'honest']) {
      const entries = await readdir(join(dir, name)).catch(() => [] as string[])
      expect(entries.filter((e) => e !== 'workers'), `${name}'s data folder`).toEqual([])
    }
  })
})
