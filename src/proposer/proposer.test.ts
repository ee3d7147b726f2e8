import { randomBytes } from 'node:crypto'
import { sql } from 'kysely'
import { createPublicClient, createWalletClient, http, keccak256, stringToHex, type Address, type Hex, type PublicClient } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { getBlock, waitForTransactionReceipt, writeContract } from 'viem/actions'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { startAnvil, type AnvilInstance } from '../chain/anvil.js'
import { deployMockVerifier, deployOracle, encodePublicInputs, installDevMessagePasser, mockCommitmentProof, type MockVerifierMode } from '../chain/deploy.js'
import { L2_TO_L1_MESSAGE_PASSER, outputRootAt } from '../chain/output-root.js'
import { l2ToL1MessagePasserAbi } from '../contracts/abis.js'
import type { JobState } from '../core/types.js'
import { openPostgres, type SqlDatabase } from '../state/sql/database.js'
import { sqlStateStore } from '../state/sql/sql-state.js'
import type { StateStore } from '../state/types.js'
import type { TxJournal } from './journal.js'
import { oracleClient, type OracleClient } from './oracle-client.js'
import { proposerService, ProposerError, type ProofContext, type ProposerLogger, type ProposerOptions, type ProposerService } from './proposer.js'
import { sqlProposalStore, type ProposalStore } from './proposals.js'
import { sqlTxJournal } from './sql-journal.js'
import { ANVIL_KEYS, rpcCall, until } from './test-chain.js'
import { txManager, type TxManager } from './tx-manager.js'

const PG_URL = process.env.PROOFLINE_TEST_PG_URL ?? 'postgres://root@127.0.0.1:5432/test'
const L1_CHAIN_ID = 900
const L2_CHAIN_ID = 901
const ANCHOR_BLOCK = 1n
const PROGRAM_ID = keccak256(stringToHex('mock-v1'))
const CHAIN_CONFIG_HASH = keccak256(stringToHex('proofline-dev-l2:901'))

let l1: AnvilInstance
let l2: AnvilInstance
let l1Client: PublicClient
let l2Client: PublicClient

const key = (i: number): Hex => {
  const k = ANVIL_KEYS[i]
  if (k === undefined) throw new Error(`no anvil key ${i}`)
  return k
}

beforeAll(async () => {
  ;[l1, l2] = await Promise.all([startAnvil({ chainId: L1_CHAIN_ID }), startAnvil({ chainId: L2_CHAIN_ID })])
  l1Client = createPublicClient({ transport: http(l1.rpcUrl), pollingInterval: 50 })
  l2Client = createPublicClient({ transport: http(l2.rpcUrl), pollingInterval: 50 })
  // L2: the message passer with withdrawals in blocks 1 and 6, so output roots commit to a
  // non-empty storage root that changes along the chain; 12 blocks in all.
  await installDevMessagePasser(l2Client)
  const l2Wallet = createWalletClient({ account: privateKeyToAccount(key(0)), transport: http(l2.rpcUrl) })
  const withdraw = async (): Promise<void> => {
    const hash = await writeContract(l2Wallet, {
      address: L2_TO_L1_MESSAGE_PASSER,
      abi: l2ToL1MessagePasserAbi,
      functionName: 'initiateWithdrawal',
      args: ['0x00000000000000000000000000000000000000aa', 100_000n, '0x1234'],
      value: 1000n,
      chain: null,
    })
    await waitForTransactionReceipt(l2Client, { hash })
  }
  await withdraw()
  await rpcCall(l2.rpcUrl, 'anvil_mine', ['0x4'])
  await withdraw()
  await rpcCall(l2.rpcUrl, 'anvil_mine', ['0x6'])
  expect(await l2Client.getBlockNumber({ cacheTime: 0 })).toBe(12n)
})

afterAll(async () => {
  await Promise.all([l1?.stop(), l2?.stop()])
})

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
  await rpcCall(l1.rpcUrl, 'evm_setAutomine', [true])
})

/** A logger that keeps every line. */
function recordingLog(): ProposerLogger & { lines: Array<{ level: string; msg: string; obj: Record<string, unknown> }> } {
  const lines: Array<{ level: string; msg: string; obj: Record<string, unknown> }> = []
  const at = (level: string) => (obj: Record<string, unknown>, msg: string) => void lines.push({ level, msg, obj })
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }
}

interface Env {
  database: SqlDatabase
  state: StateStore
  journal: TxJournal
  proposals: ProposalStore
  oracle: OracleClient
  proposerKey: Hex
  proposer: Address
}

/** A fresh schema (state store, journal, proposals) and a fresh oracle whose PROPOSER is dev key `keyIndex`. */
async function env(keyIndex: number, opts: { interval?: bigint; mode?: MockVerifierMode } = {}): Promise<Env> {
  const database = await openPostgres(PG_URL, `t_proposer_${randomBytes(6).toString('hex')}`, 4)
  cleanups.push(async () => {
    await sql`drop schema if exists ${sql.id(database.schema)} cascade`.execute(database.db)
    await database.close()
  })
  const state = await sqlStateStore(database)
  const journal = await sqlTxJournal(database)
  const proposals = await sqlProposalStore(database)
  const deployer = createWalletClient({ account: privateKeyToAccount(key(0)), transport: http(l1.rpcUrl) })
  const proposerKey = key(keyIndex)
  const proposer = privateKeyToAccount(proposerKey).address
  const verifier = await deployMockVerifier(deployer, l1Client, { mode: opts.mode ?? 'public-inputs-commitment' })
  const anchor = await outputRootAt(l2Client, ANCHOR_BLOCK)
  const deployed = await deployOracle(deployer, l1Client, {
    anchorRoot: anchor.outputRoot,
    anchorBlock: ANCHOR_BLOCK,
    intervalBlocks: opts.interval ?? 1n,
    verifier: verifier.address,
    programId: PROGRAM_ID,
    chainConfigHash: CHAIN_CONFIG_HASH,
    proposer,
  })
  return { database, state, journal, proposals, oracle: oracleClient({ client: l1Client, address: deployed.address }), proposerKey, proposer }
}

/** The proof a MockVerifier in public-inputs-commitment mode accepts for the transition in `ctx`. */
const commitmentProof = (_job: unknown, ctx: ProofContext): Promise<Hex> =>
  Promise.resolve(
    mockCommitmentProof(
      encodePublicInputs({
        previousOutputRoot: ctx.previousOutputRoot,
        newOutputRoot: ctx.outputRoot,
        previousL2Block: ctx.previousL2Block,
        newL2Block: ctx.l2Block,
        programId: PROGRAM_ID,
        chainConfigHash: CHAIN_CONFIG_HASH,
      }),
    ),
  )

/** A tx manager and a proposer service on `e`'s journal and stores. */
function service(e: Env, over: Partial<ProposerOptions> = {}): { svc: ProposerService; tx: TxManager; log: ReturnType<typeof recordingLog> } {
  const tx = txManager({ rpcUrls: [l1.rpcUrl], chainId: L1_CHAIN_ID, account: privateKeyToAccount(e.proposerKey), journal: e.journal, confirmations: 1, pollIntervalMs: 50, log: { info() {}, warn() {} } })
  const log = recordingLog()
  const svc = proposerService({
    state: e.state,
    stage: 'aggregate',
    l2: l2Client,
    oracle: e.oracle,
    tx,
    proposals: e.proposals,
    proofFor: commitmentProof,
    verifierLabel: 'MockVerifier',
    log,
    ...over,
  })
  cleanups.push(async () => {
    await svc.stop()
    await tx.close()
  })
  return { svc, tx, log }
}

/** Inserts a job of stage `aggregate` and moves it to `state` (default succeeded) with a mock-like result. */
async function addJob(e: Env, id: string, first: number, last: number, opts: { lastHash?: string; output?: Record<string, unknown>; state?: JobState; stage?: string } = {}): Promise<void> {
  const lastHash = opts.lastHash ?? (await getBlock(l2Client, { blockNumber: BigInt(last) })).hash
  const stage = opts.stage ?? 'aggregate'
  await e.state.createJobs([
    { id, stage, first, last, lastHash, programId: 'mock-v1', maxAttempts: 1, inputs: [], cost: 0, capacity: null, overCapacity: false, parentId: null },
  ])
  const updated = await e.state.updateJob(id, { states: ['pending'] }, {
    state: opts.state ?? 'succeeded',
    result: { jobId: id, stage, first, last, lastHash, output: { first, last, lastHash, program: 'mock-v1', ...opts.output }, cost: 0 },
  })
  if (updated === undefined) throw new Error(`job ${id} not updated`)
}

const nonceOf = async (a: Address): Promise<number> => Number(BigInt(await rpcCall<Hex>(l1.rpcUrl, 'eth_getTransactionCount', [a, 'latest'])))

describe('proposerService on anvil L1 (900) and L2 (901) with Postgres', () => {
  it('behavior: proposes the contiguous job with the L2 node\'s output root, then the next contiguous job', async () => {
    const e = await env(1)
    const { svc } = service(e)
    await addJob(e, 'agg-2-3', 2, 3) // also starts at 2, but shorter: the longest is proposed
    await addJob(e, 'agg-2-4', 2, 4)
    await addJob(e, 'agg-5-7', 5, 7)
    const nonce = await nonceOf(e.proposer)

    const first = await svc.tick()
    const root4 = (await outputRootAt(l2Client, 4n)).outputRoot
    expect(first).toMatchObject({ l2Block: 4, first: 2, outputRoot: root4, jobId: 'agg-2-4', verifier: 'MockVerifier', proofBytes: 32 })
    expect(first?.gasUsed).toBeGreaterThan(0n)
    expect(first?.effectiveGasPrice).toBeGreaterThan(0n)
    let events = await e.oracle.outputProposed()
    expect(events).toHaveLength(1)
    expect(events[0]).toMatchObject({ l2BlockNumber: 4n, l2OutputIndex: 1n, outputRoot: root4, txHash: first?.txHash, l1Block: first?.l1Block })
    expect(await e.oracle.latestBlockNumber()).toBe(4n)

    const second = await svc.tick()
    const root7 = (await outputRootAt(l2Client, 7n)).outputRoot
    expect(second).toMatchObject({ l2Block: 7, first: 5, outputRoot: root7, jobId: 'agg-5-7' })
    expect(root7).not.toBe(root4)
    events = await e.oracle.outputProposed()
    expect(events.map((ev) => [ev.l2BlockNumber, ev.outputRoot])).toEqual([
      [4n, root4],
      [7n, root7],
    ])
    expect((await e.oracle.getL2Output(2n)).outputRoot).toBe(root7)
    expect(await e.oracle.latestOutputIndex()).toBe(2n)
    expect(await e.oracle.latestOutput()).toMatchObject({ index: 2n, l2BlockNumber: 7n, outputRoot: root7 })
    expect([await e.oracle.programId(), await e.oracle.chainConfigHash(), await e.oracle.submissionInterval()]).toEqual([PROGRAM_ID, CHAIN_CONFIG_HASH, 1n])
    expect(await rpcCall<Hex>(l1.rpcUrl, 'eth_getCode', [await e.oracle.verifier(), 'latest'])).not.toBe('0x')
    // Events can be read for an L1 block range (the `up` summary reads them this way).
    expect((await e.oracle.outputProposed({ fromBlock: second?.l1Block ?? 0n, toBlock: second?.l1Block ?? 0n })).map((ev) => ev.l2BlockNumber)).toEqual([7n])

    // Nothing extends block 7: the round does nothing and sends nothing.
    expect(await svc.tick()).toBeUndefined()
    expect(await nonceOf(e.proposer)).toBe(nonce + 2)
    expect((await svc.list()).map((p) => p.l2Block)).toEqual([4, 7])
    expect(await e.proposals.listInFlight()).toEqual([])
  })

  it('behavior: a job with a gap after the latest output, one overlapping it, an invalidated job and another stage\'s job are never proposed', async () => {
    const e = await env(2)
    const { svc, log } = service(e)
    await addJob(e, 'gap-3-5', 3, 5) // block 2 missing
    await addJob(e, 'overlap-1-6', 1, 6) // covers block 2 but also the anchor block 1
    await addJob(e, 'invalid-2-5', 2, 5, { state: 'invalidated' })
    await addJob(e, 'range-2-5', 2, 5, { stage: 'range' })
    const nonce = await nonceOf(e.proposer)
    expect(await svc.tick()).toBeUndefined()
    expect(await svc.tick()).toBeUndefined()
    expect(await e.oracle.outputProposed()).toEqual([])
    expect(await nonceOf(e.proposer)).toBe(nonce)
    expect(await e.proposals.listRefusals()).toEqual([])
    expect(log.lines.some((l) => l.level === 'debug' && /no succeeded aggregate job starts at L2 block 2/.test(l.msg))).toBe(true)
    // Once the gap is filled, the contiguous job goes first and the other one follows.
    await addJob(e, 'fill-2-2', 2, 2)
    expect((await svc.tick())?.l2Block).toBe(2)
    expect((await svc.tick())?.l2Block).toBe(5)
  })

  it('behavior: a job whose last block was reorged out of L2 is refused, recorded, and nothing is sent', async () => {
    const e = await env(3)
    const { svc, log } = service(e)
    // A real L2 reorg: block 13 as the job saw it, then replaced by another block 13.
    const snapshot = await rpcCall<Hex>(l2.rpcUrl, 'evm_snapshot')
    await rpcCall(l2.rpcUrl, 'evm_mine')
    const orphan = await getBlock(l2Client, { blockNumber: 13n })
    await rpcCall(l2.rpcUrl, 'evm_revert', [snapshot])
    await rpcCall(l2.rpcUrl, 'evm_setNextBlockTimestamp', [Number(orphan.timestamp) + 100])
    await rpcCall(l2.rpcUrl, 'evm_mine')
    const canonical = await getBlock(l2Client, { blockNumber: 13n })
    expect(canonical.hash).not.toBe(orphan.hash)

    await addJob(e, 'orphaned-2-13', 2, 13, { lastHash: orphan.hash })
    const nonce = await nonceOf(e.proposer)
    expect(await svc.tick()).toBeUndefined()
    let refusals = await e.proposals.listRefusals()
    expect(refusals).toHaveLength(1)
    expect(refusals[0]).toMatchObject({ kind: 'refused', l2Block: 13, first: 2, jobId: 'orphaned-2-13' })
    expect(refusals[0]?.reason).toMatch(/no longer canonical/)
    expect(log.lines.some((l) => l.level === 'error' && l.msg.startsWith('refusing to propose'))).toBe(true)

    // Refused again each round while the job stands: still nothing sent.
    expect(await svc.tick()).toBeUndefined()
    refusals = await e.proposals.listRefusals()
    expect(refusals).toHaveLength(2)
    expect(await e.oracle.outputProposed()).toEqual([])
    expect(await nonceOf(e.proposer)).toBe(nonce)
    expect(await e.proposals.listInFlight()).toEqual([])
  })

  it('behavior: when a reorg deeper than the L2 confirmations orphans the oracle\'s latest output, the proposer raises an alert and sends nothing', async () => {
    const e = await env(5)
    let clock = Date.now()
    const { svc, log } = service(e, { now: () => clock })
    const snapshot = await rpcCall<Hex>(l2.rpcUrl, 'evm_snapshot')
    await rpcCall(l2.rpcUrl, 'evm_mine')
    const n = Number(await l2Client.getBlockNumber({ cacheTime: 0 }))
    const orphan = await getBlock(l2Client, { blockNumber: BigInt(n) })
    await addJob(e, `agg-2-${n}`, 2, n)
    expect((await svc.tick())?.l2Block).toBe(n)
    const alerts = (): number => log.lines.filter((l) => l.level === 'error' && l.msg.startsWith("ALERT: the oracle's latest output")).length
    expect(await svc.tick()).toBeUndefined()
    expect(alerts()).toBe(0)
    // The proposed block is replaced on L2.
    await rpcCall(l2.rpcUrl, 'evm_revert', [snapshot])
    await rpcCall(l2.rpcUrl, 'evm_setNextBlockTimestamp', [Number(orphan.timestamp) + 100])
    await rpcCall(l2.rpcUrl, 'evm_mine')
    expect((await getBlock(l2Client, { blockNumber: BigInt(n) })).hash).not.toBe(orphan.hash)
    const nonce = await nonceOf(e.proposer)
    // The same latest output is re-checked at most once a minute.
    expect(await svc.tick()).toBeUndefined()
    expect(alerts()).toBe(0)
    clock += 61_000
    expect(await svc.tick()).toBeUndefined()
    expect(alerts()).toBe(1)
    expect(log.lines.find((l) => l.msg.startsWith('ALERT'))?.obj).toMatchObject({ alert: true, l2Block: n, outputIndex: 1 })
    expect(await nonceOf(e.proposer)).toBe(nonce)
  })

  it('behavior: a proof output claiming another output root is refused', async () => {
    const e = await env(3)
    const { svc } = service(e)
    await addJob(e, 'lying-2-12', 2, 12, { output: { outputRoot: keccak256(stringToHex('not the root')) } })
    const nonce = await nonceOf(e.proposer)
    expect(await svc.tick()).toBeUndefined()
    const [refusal] = await e.proposals.listRefusals()
    expect(refusal).toMatchObject({ kind: 'refused', l2Block: 12, jobId: 'lying-2-12' })
    expect(refusal?.reason).toMatch(/claims output root 0x[0-9a-f]{64}, the L2 node gives/)
    expect(await nonceOf(e.proposer)).toBe(nonce)
  })

  it('behavior: restarted after the tx was sent but before it was mined, a new proposer confirms that tx and never sends a second one', async () => {
    const e = await env(4)
    await addJob(e, 'agg-2-4', 2, 4)
    await addJob(e, 'agg-5-7', 5, 7)
    const nonce = await nonceOf(e.proposer)
    const root4 = (await outputRootAt(l2Client, 4n)).outputRoot
    const intentKey = `propose:4:${root4}`

    await rpcCall(l1.rpcUrl, 'evm_setAutomine', [false])
    const a = service(e)
    const ticking = a.svc.tick()
    const outcome = ticking.then(
      () => 'resolved',
      (err: unknown) => err,
    )
    await until('the proposal tx is journaled and in the L1 pool', async () => {
      const hash = (await e.journal.get(intentKey))?.attempts[0]?.hash
      return hash !== undefined && (await rpcCall(l1.rpcUrl, 'eth_getTransactionByHash', [hash])) !== null
    })
    expect((await e.proposals.listInFlight()).map((p) => p.key)).toEqual([intentKey])
    const sentHash = (await e.journal.get(intentKey))?.attempts[0]?.hash
    // "Crash": the first proposer stops waiting; its tx stays in the pool and in the journal.
    await a.svc.stop()
    await a.tx.close()
    expect(await outcome).not.toBe('resolved')
    await rpcCall(l1.rpcUrl, 'evm_mine')
    await rpcCall(l1.rpcUrl, 'evm_setAutomine', [true])

    const b = service(e)
    const record = await b.svc.tick()
    // The restarted proposer recorded the first proposal from the journal, then proposed the next job.
    expect(record?.l2Block).toBe(7)
    const list = await b.svc.list()
    expect(list.map((p) => p.l2Block)).toEqual([4, 7])
    expect(list[0]?.txHash).toBe(sentHash)
    const events = await e.oracle.outputProposed()
    expect(events.map((ev) => ev.l2BlockNumber)).toEqual([4n, 7n])
    expect(await nonceOf(e.proposer)).toBe(nonce + 2)
    expect(await b.svc.tick()).toBeUndefined()
    expect(await nonceOf(e.proposer)).toBe(nonce + 2)
  })

  it('behavior: restarted after the tx was confirmed but before it was recorded, a new proposer records it without resending', async () => {
    const e = await env(5)
    await addJob(e, 'agg-2-4', 2, 4)
    const nonce = await nonceOf(e.proposer)
    // The first proposer "crashes" right when it would record the confirmed proposal.
    const crashing: ProposalStore = { ...e.proposals, complete: () => Promise.reject(new Error('killed before recording')) }
    const a = service(e, { proposals: crashing })
    await expect(a.svc.tick()).rejects.toThrow('killed before recording')
    await a.svc.stop()
    await a.tx.close()
    expect(await nonceOf(e.proposer)).toBe(nonce + 1)
    expect(await e.proposals.list()).toEqual([])

    const b = service(e)
    const record = await b.svc.tick()
    expect(record).toMatchObject({ l2Block: 4, first: 2, jobId: 'agg-2-4' })
    const events = await e.oracle.outputProposed()
    expect(events).toHaveLength(1)
    expect(events[0]?.txHash).toBe(record?.txHash)
    expect(await nonceOf(e.proposer)).toBe(nonce + 1)
    expect(await e.proposals.listInFlight()).toEqual([])
  })

  it('behavior: a job that does not reach the oracle\'s submission interval waits (nothing sent); a longer one is proposed', async () => {
    const e = await env(1, { interval: 4n })
    const { svc, log } = service(e)
    await addJob(e, 'short-2-4', 2, 4) // needs >= 1 + 4
    const nonce = await nonceOf(e.proposer)
    expect(await svc.tick()).toBeUndefined()
    expect(await nonceOf(e.proposer)).toBe(nonce)
    expect(await e.proposals.listRefusals()).toEqual([])
    expect(log.lines.some((l) => l.msg.startsWith('waiting: job short-2-4 ends at 4, the oracle needs an L2 block >= 5'))).toBe(true)
    await addJob(e, 'long-2-6', 2, 6)
    expect((await svc.tick())?.l2Block).toBe(6)
    expect(await nonceOf(e.proposer)).toBe(nonce + 1)
  })

  it('behavior: a proven block shallower than the L2 confirmations waits (nothing sent); once deep enough it is proposed', async () => {
    // A proposal is final on L1: with confirmations above the deepest expected L2 reorg, a
    // reorg can never orphan a proposed block (found by the chaos run, docs/reliability.md).
    const e = await env(4)
    const head = Number(await l2Client.getBlockNumber({ cacheTime: 0 }))
    await addJob(e, 'agg-2-4', 2, 4)
    const nonce = await nonceOf(e.proposer)
    const shallow = service(e, { confirmations: head - 4 + 2 })
    expect(await shallow.svc.tick()).toBeUndefined()
    expect(await nonceOf(e.proposer)).toBe(nonce)
    expect(shallow.log.lines.some((l) => l.msg === 'waiting: the proven L2 block is not deep enough yet')).toBe(true)
    await shallow.svc.stop()
    const deep = service(e, { confirmations: head - 4 + 1 })
    expect((await deep.svc.tick())?.l2Block).toBe(4)
    expect(await nonceOf(e.proposer)).toBe(nonce + 1)
  })

  it('behavior: a proposal the oracle rejects (invalid proof) fails the round with PROPOSAL_REJECTED naming the contract error, and sends nothing', async () => {
    const e = await env(2)
    const { svc } = service(e, { proofFor: () => Promise.resolve('0x1234') })
    await addJob(e, 'agg-2-4', 2, 4)
    const nonce = await nonceOf(e.proposer)
    const err = await svc.tick().catch((x: unknown) => x)
    expect(err).toBeInstanceOf(ProposerError)
    expect(err).toMatchObject({ code: 'PROPOSAL_REJECTED', retryable: false })
    expect((err as Error).message).toMatch(/rejects the proposal of L2 block 4: InvalidProof\(\) — the verifier rejected the proof/)
    const [refusal] = await e.proposals.listRefusals()
    expect(refusal).toMatchObject({ kind: 'rejected', l2Block: 4, jobId: 'agg-2-4', details: { errorName: 'InvalidProof', txCode: 'TX_WOULD_REVERT' } })
    expect(await e.proposals.listInFlight()).toEqual([])
    expect(await nonceOf(e.proposer)).toBe(nonce)
    expect(await e.oracle.outputProposed()).toEqual([])
  })

  it('behavior: stop with a grace lets a proposal already sent confirm and be recorded, and starts no new round', async () => {
    const e = await env(6)
    await addJob(e, 'agg-2-4', 2, 4)
    const root4 = (await outputRootAt(l2Client, 4n)).outputRoot
    await rpcCall(l1.rpcUrl, 'evm_setAutomine', [false])
    const { svc } = service(e, { intervalMs: 60_000 })
    svc.start()
    await until('the proposal tx is journaled', async () => (await e.journal.get(`propose:4:${root4}`))?.attempts[0]?.hash !== undefined)
    await addJob(e, 'agg-5-7', 5, 7) // would be the next round's: the stop must not start it
    const stopping = svc.stop({ graceMs: 30_000 })
    expect(svc.state).toBe('stopping')
    await rpcCall(l1.rpcUrl, 'evm_mine')
    await stopping
    expect(svc.state).toBe('stopped')
    expect((await svc.list()).map((p) => [p.first, p.l2Block])).toEqual([[2, 4]])
    expect((await e.oracle.outputProposed()).map((ev) => ev.l2BlockNumber)).toEqual([4n])
    expect(await e.proposals.listInFlight()).toEqual([])
  })

  it('behavior: started, the loop proposes right away and catches up without waiting an interval; stop ends it', async () => {
    const e = await env(3)
    const { svc } = service(e, { intervalMs: 60_000 })
    await addJob(e, 'agg-2-4', 2, 4)
    await addJob(e, 'agg-5-9', 5, 9)
    expect(svc.state).toBe('idle')
    svc.start()
    expect(svc.state).toBe('running')
    await until('both proposals are recorded', async () => (await svc.list()).length === 2, 20_000)
    await svc.stop()
    expect(svc.state).toBe('stopped')
    expect((await svc.list()).map((p) => [p.first, p.l2Block])).toEqual([
      [2, 4],
      [5, 9],
    ])
    await expect(svc.tick()).rejects.toMatchObject({ code: 'PROPOSER_STOPPED' })
  })
})
