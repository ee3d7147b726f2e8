import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { createPublicClient, createWalletClient, http, keccak256, stringToHex, type Hex } from 'viem'
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts'
import { afterAll, describe, expect, it } from 'vitest'
import { startAnvil } from '../../src/chain/anvil.js'
import { deployMockVerifier, deployOracle } from '../../src/chain/deploy.js'
import { ANVIL_DEV_KEYS, installMessagePasser, startLoad } from '../../src/chain/load.js'
import { outputRootAt } from '../../src/chain/output-root.js'
import { outputOracleAbi } from '../../src/contracts/abis.js'
import { BIN } from '../support/cli.js'

/**
 * Security edge: the proposer's private key, the admin API token, an RPC provider's API key in
 * an L1 URL and the database password never appear in what proofline prints. A real
 * orchestrator (`proofline run` with its proposer) runs at log level `debug` with known
 * secrets, through the happy path and the failing ones — a dead L1 RPC endpoint, admin calls
 * with a wrong token, and a proposer key the oracle does not accept (every proposal reverts) —
 * and everything it wrote to stdout and stderr is scanned.
 */

const PG_URL = process.env.PROOFLINE_TEST_PG_URL ?? 'postgres://root@127.0.0.1:5432/test'
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const cleanups: (() => Promise<unknown>)[] = []
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined)
})

/** The strings that must never be printed, and the forms they could be printed in. */
function forms(secret: string): string[] {
  const bare = secret.replace(/^0x/, '')
  const out = [secret, bare, bare.toUpperCase(), Buffer.from(bare, 'utf8').toString('base64')]
  // A hex key also as base64 of its bytes and split in its halves (a key cut by a log line limit).
  if (/^[0-9a-f]{64}$/i.test(bare)) out.push(Buffer.from(bare, 'hex').toString('base64'), bare.slice(0, 32), bare.slice(32))
  return out
}
function leaks(text: string, secrets: Record<string, string>): string[] {
  const lower = text.toLowerCase()
  return Object.entries(secrets).flatMap(([name, s]) => (forms(s).some((f) => lower.includes(f.toLowerCase())) ? [name] : []))
}

describe('secrets never reach the logs', () => {
  it('behavior: a proposer key, the admin token, an RPC API key and the database password appear nowhere in a debug-level run, its failures included', { timeout: 240_000 }, async () => {
    // --- chains: a dev L1 with an oracle that accepts ANVIL_DEV_KEYS[0] as proposer, a dev L2 with load.
    const l1 = await startAnvil({ chainId: 900 })
    const l2 = await startAnvil({ chainId: 901 })
    cleanups.push(() => l1.stop(), () => l2.stop())
    const dir = await mkdtemp(join(tmpdir(), 'pl-secrets-'))
    await chmod(dir, 0o755)
    cleanups.push(() => rm(dir, { recursive: true, force: true }))
    const l2c = createPublicClient({ transport: http(l2.rpcUrl), cacheTime: 0 })
    await installMessagePasser(l2c)
    const abort = new AbortController()
    const load = await startLoad({ rpcUrl: l2.rpcUrl, privateKeys: ANVIL_DEV_KEYS.slice(1, 3), txPerBlock: 2, blockIntervalMs: 300, seed: 9, signal: abort.signal })
    cleanups.push(async () => {
      abort.abort()
      await load.done
    })
    while ((await l2c.getBlockNumber()) < 1n) await sleep(100)
    const anchor = await outputRootAt(l2c, 1n)
    const l1c = createPublicClient({ transport: http(l1.rpcUrl), cacheTime: 0 })
    // A fresh proposer key (a well-known dev key could appear in a log for innocent reasons), funded on L1.
    const proposerKey = generatePrivateKey()
    const proposer = privateKeyToAccount(proposerKey)
    const funder = createWalletClient({ account: privateKeyToAccount(ANVIL_DEV_KEYS[0] as Hex), transport: http(l1.rpcUrl) })
    await l1c.waitForTransactionReceipt({ hash: await funder.sendTransaction({ to: proposer.address, value: 10n ** 20n, chain: null }) })
    const verifier = await deployMockVerifier(funder, l1c)
    const oracle = await deployOracle(funder, l1c, {
      anchorRoot: anchor.outputRoot, anchorBlock: 1n, intervalBlocks: 1n, verifier: verifier.address,
      programId: keccak256(stringToHex('mock-v1')), chainConfigHash: keccak256(stringToHex('secrets')), proposer: proposer.address,
    })
    // A second key the oracle does not accept: its every proposal reverts (the failing tx path).
    const strangerKey = generatePrivateKey()
    await l1c.waitForTransactionReceipt({ hash: await funder.sendTransaction({ to: privateKeyToAccount(strangerKey).address, value: 10n ** 20n, chain: null }) })

    const secrets = {
      proposerKey,
      strangerKey,
      adminToken: `adm-${randomBytes(16).toString('hex')}`,
      rpcApiKey: `rpc${randomBytes(12).toString('hex')}`,
      pgPassword: `pgpw${randomBytes(8).toString('hex')}`,
    }
    const schema = `sec_${randomBytes(4).toString('hex')}`
    const db = new pg.Client({ connectionString: PG_URL })
    await db.connect()
    cleanups.push(async () => {
      await db.query(`drop schema if exists ${schema} cascade`)
      await db.end()
    })
    const pgUrl = new URL(PG_URL)
    pgUrl.password = secrets.pgPassword // the test server trusts local connections: the password is carried, not checked
    const pipelineFile = (l1RpcUrls: string[]): string => `
version: 1
dataDir: ${dir}/data
state: { type: postgres, url: "${pgUrl.toString()}", schema: ${schema} }
source: { type: l2, rpcUrl: "${l2.rpcUrl}", startBlock: 2, safety: { kind: latest, confirmations: 1 }, pollIntervalMs: 200 }
stages:
  - { name: range, input: blocks, collector: { strategy: sequential, maxCount: 3, timeoutMs: 1000 }, executor: { type: mock } }
  - { name: aggregate, input: proofs.range, collector: { strategy: sequential, maxCount: 2, timeoutMs: 1000 }, executor: { type: mock } }
proposer: { l1RpcUrls: ${JSON.stringify(l1RpcUrls)}, oracle: "${oracle.address}", intervalMs: 500, confirmations: 1 }
api: { host: 127.0.0.1, port: 0, token: ${secrets.adminToken} }
log: { level: debug }
`
    const deadL1 = `http://127.0.0.1:1/v3/${secrets.rpcApiKey}`
    const file = join(dir, 'pipeline.yaml')
    await writeFile(file, pipelineFile([deadL1, l1.rpcUrl]))
    const deadFile = join(dir, 'dead-l1.yaml')
    await writeFile(deadFile, pipelineFile([deadL1]))

    /** Runs the orchestrator with `key` until `until` holds on what it printed or L1 shows; returns everything it printed. */
    const run = async (key: Hex, until: (printed: string) => Promise<boolean>, opts: { config?: string; admin?: boolean } = {}): Promise<string> => {
      const child = spawn(process.execPath, [BIN, 'run', '--config', opts.config ?? file], { env: { ...process.env, PROPOSER_PRIVATE_KEY: key }, stdio: ['ignore', 'pipe', 'pipe'] })
      let printed = ''
      child.stdout.on('data', (d: Buffer) => (printed += d.toString()))
      child.stderr.on('data', (d: Buffer) => (printed += d.toString()))
      const exited = new Promise<number | null>((r) => child.on('close', (c) => r(c)))
      cleanups.push(async () => {
        if (child.exitCode === null) child.kill('SIGKILL')
        await exited
      })
      // The admin API (first run only): wrong token, no token, then the right one (pause and resume a stage).
      let apiDone = opts.admin !== true
      for (let i = 0; i < 1200; i++) {
        await sleep(100)
        if (child.exitCode !== null) break
        const api = /API (http:\/\/127\.0\.0\.1:\d+)/.exec(printed)?.[1]
        if (api !== undefined && !apiDone) {
          apiDone = true
          const post = (path: string, token?: string): Promise<number> =>
            fetch(`${api}${path}`, { method: 'POST', headers: token === undefined ? {} : { authorization: `Bearer ${token}` } }).then((r) => r.status)
          expect(await post('/stages/range/pause', `${secrets.adminToken}x`)).toBe(401)
          expect(await post('/stages/range/pause')).toBe(401)
          // 503 until the orchestrator has started.
          let status = 503
          for (let j = 0; j < 300 && status === 503; j++) {
            status = await post('/stages/range/pause', secrets.adminToken)
            if (status === 503) await sleep(100)
          }
          expect(status).toBeLessThan(300)
          expect(await post('/stages/range/resume', secrets.adminToken)).toBeLessThan(300)
        }
        if (apiDone && (await until(printed))) break
      }
      child.kill('SIGTERM')
      await exited
      return printed
    }

    // 1. The accepted key: proposals reach L1 (a dead RPC endpoint is in front of the live one).
    const latestIndex = (): Promise<bigint> => l1c.readContract({ address: oracle.address, abi: outputOracleAbi, functionName: 'latestOutputIndex' })
    const happy = await run(proposerKey, async () => (await latestIndex()) >= 2n, { admin: true })
    expect(await latestIndex()).toBeGreaterThanOrEqual(2n)
    // 2. A key the oracle refuses: the proposer's transactions revert, and it says so.
    const rejected = await run(strangerKey, (printed) => Promise.resolve(printed.includes('PROPOSAL_REJECTED')))
    expect(rejected).toContain('NotProposer')
    // 3. No L1 endpoint answers (the only one is dead): the RPC failure is reported.
    const unreachable = await run(proposerKey, (printed) => Promise.resolve(/"level":50/.test(printed)), { config: deadFile })
    expect(unreachable).toMatch(/"level":50|error/)

    const printed = `${happy}\n${rejected}\n${unreachable}`
    // The run logged at debug level and its failures are in there: the scan has something to scan.
    expect(printed).toMatch(/"level":20/)
    if (process.env.SECRETS_DUMP !== undefined) await writeFile(process.env.SECRETS_DUMP, printed)
    expect(leaks(printed, secrets), printed.slice(-4000)).toEqual([])
  })
})
