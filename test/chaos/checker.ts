/**
 * The chaos run's checker. It is independent of the code under test on purpose: it imports
 * nothing from proofline's src/ and reads only what the outside world can see — the L1 oracle's
 * `OutputProposed` events and stored outputs, the L2 chain, and (for stuck jobs) the state
 * tables with its own SQL. Its own OP v0 output-root code is a dozen lines, below.
 */
import pg from 'pg'
import { concatHex, createPublicClient, http, keccak256, parseAbi, parseAbiItem, type Address, type Hex, type PublicClient } from 'viem'

/** One accepted proposal, as L1 records it: it covers L2 blocks `first..last`. */
export interface ProposalRange {
  /** `l2OutputIndex` of the event (the anchor is 0). */
  index: number
  /** The block after the previous stored output (the oracle binds the proof to that transition). */
  first: number
  /** `l2BlockNumber` of the event. */
  last: number
  outputRoot: Hex
  txHash?: Hex
}

/** Coverage of the L2 blocks `start..target` by the proposals. */
export interface CoverageReport {
  /** Blocks in `start..target` that no proposal covers. */
  lost: number
  /** Holes: maximal runs of uncovered blocks between `start` and the highest covered block. */
  gaps: number
  /** Extra coverings: a block covered by k proposals adds k − 1; a proposal event repeated (same index) adds its size. */
  duplicates: number
  /** Proposals whose `first` is not the previous proposal's `last + 1` (in index order). */
  discontinuities: number
  /** The highest block covered, or `start − 1`. */
  coveredTo: number
  /** Human-readable findings (the first 20). */
  findings: string[]
}

/**
 * Checks that the proposals tile `start..target`: every block in exactly one proposal, the
 * proposals contiguous in index order. Pure; the unit test feeds it gaps and overlaps.
 */
export function analyzeCoverage(args: { start: number; target: number; proposals: readonly ProposalRange[] }): CoverageReport {
  const { start, target } = args
  const findings: string[] = []
  const note = (s: string): void => {
    if (findings.length < 20) findings.push(s)
  }
  let duplicates = 0
  // Repeated events of one index: the same output reported twice.
  const byIndex = new Map<number, ProposalRange>()
  const unique: ProposalRange[] = []
  for (const p of args.proposals) {
    if (byIndex.has(p.index)) {
      duplicates += p.last - p.first + 1
      note(`output index ${p.index} proposed more than once`)
      continue
    }
    byIndex.set(p.index, p)
    unique.push(p)
  }
  // Contiguity in L1 order.
  const ordered = [...unique].sort((a, b) => a.index - b.index)
  let discontinuities = 0
  let expectedIndex = ordered[0]?.index ?? 1
  let expectedFirst = start
  for (const p of ordered) {
    if (p.index !== expectedIndex) {
      discontinuities++
      note(`output index ${p.index} follows ${expectedIndex - 1}: index(es) ${expectedIndex}..${p.index - 1} missing`)
    } else if (p.first !== expectedFirst) {
      discontinuities++
      note(`output ${p.index} covers ${p.first}-${p.last}, expected to start at ${expectedFirst}`)
    }
    expectedIndex = p.index + 1
    expectedFirst = p.last + 1
  }
  // Coverage by block: sweep the ranges sorted by first block.
  const ranges = unique.map((p) => [Math.max(p.first, start), p.last] as const).filter(([a, b]) => a <= b).sort((x, y) => x[0] - y[0] || x[1] - y[1])
  let next = start
  let gaps = 0
  let lost = 0
  for (const [a, b] of ranges) {
    if (a > next) {
      gaps++
      lost += Math.max(0, Math.min(a - 1, target) - next + 1)
      note(`blocks ${next}-${a - 1} are in no proposal`)
    }
    if (a < next) {
      const dup = Math.min(b, next - 1) - a + 1
      duplicates += dup
      note(`blocks ${a}-${Math.min(b, next - 1)} are in more than one proposal`)
    }
    next = Math.max(next, b + 1)
  }
  const coveredTo = next - 1
  if (coveredTo < target) {
    lost += target - coveredTo
    note(`blocks ${coveredTo + 1}-${target} were never proposed`)
  }
  return { lost, gaps, duplicates, discontinuities, coveredTo, findings }
}

const OUTPUT_PROPOSED = parseAbiItem('event OutputProposed(bytes32 indexed outputRoot, uint256 indexed l2OutputIndex, uint256 indexed l2BlockNumber, uint256 l1Timestamp)')
const ORACLE_READS = parseAbi([
  'function getL2Output(uint256 index) view returns ((bytes32 outputRoot, uint128 timestamp, uint128 l2BlockNumber))',
  'function latestBlockNumber() view returns (uint256)',
  'function startingBlockNumber() view returns (uint256)',
])
const MESSAGE_PASSER: Address = '0x4200000000000000000000000000000000000016'
const ZERO32: Hex = `0x${'00'.repeat(32)}`

/** The oracle's proposals from its events; each one's first block from the output stored before it. */
export async function readProposals(l1: PublicClient, oracle: Address): Promise<ProposalRange[]> {
  const logs = await l1.getLogs({ address: oracle, event: OUTPUT_PROPOSED, fromBlock: 0n, toBlock: 'latest' })
  const out: ProposalRange[] = []
  for (const l of logs) {
    const index = Number(l.args.l2OutputIndex)
    const prev = await l1.readContract({ address: oracle, abi: ORACLE_READS, functionName: 'getL2Output', args: [BigInt(index - 1)] })
    out.push({ index, first: Number(prev.l2BlockNumber) + 1, last: Number(l.args.l2BlockNumber), outputRoot: l.args.outputRoot as Hex, txHash: l.transactionHash })
  }
  return out
}

/** The L1 oracle's latest proposed L2 block. */
export async function oracleLatest(l1: PublicClient, oracle: Address): Promise<number> {
  return Number(await l1.readContract({ address: oracle, abi: ORACLE_READS, functionName: 'latestBlockNumber' }))
}

/** OP v0 output root of canonical L2 block `n`, from the node: keccak(0 ‖ stateRoot ‖ message passer storage root ‖ hash). */
export async function canonicalOutputRoot(l2: PublicClient, n: number): Promise<{ hash: Hex; outputRoot: Hex }> {
  const block = (await l2.request({ method: 'eth_getBlockByNumber', params: [`0x${n.toString(16)}`, false] })) as { hash: Hex; stateRoot: Hex } | null
  if (block === null) throw new Error(`L2 block ${n} does not exist`)
  const proof = (await l2.request({ method: 'eth_getProof', params: [MESSAGE_PASSER, [], { blockHash: block.hash } as unknown as `0x${string}`] })) as { storageHash: Hex }
  return { hash: block.hash, outputRoot: keccak256(concatHex([ZERO32, block.stateRoot, proof.storageHash, block.hash])) }
}

/** A block a reorg replaced, as the harness recorded it before the reorg. */
export interface OrphanedBlock {
  number: number
  hash: Hex
}

/** What the checker found on the chains. */
export interface ChainReport extends CoverageReport {
  proposals: number
  /** The oracle's latest proposed block. */
  proposedTo: number
  /** Proposals whose output root is not the canonical chain's at their block: they commit to an orphaned block. */
  nonCanonicalProposals: number
  /**
   * Orphaned blocks inside proposals: for every non-canonical proposal, the recorded orphaned
   * blocks in its range (at least 1: its own last block is not canonical).
   */
  orphanedInProposals: number
  /** Recorded orphaned blocks that are really no longer canonical (a sanity check of the injection). */
  orphanedConfirmed: number
}

/**
 * Reads the oracle and the L2 chain directly and checks `start..target`: coverage (lost, gaps,
 * duplicates, contiguity) and that every proposal commits to the canonical chain.
 */
export async function checkChains(args: { l1RpcUrl: string; l2RpcUrl: string; oracle: Address; start: number; target: number; orphaned: readonly OrphanedBlock[] }): Promise<ChainReport> {
  const l1 = createPublicClient({ transport: http(args.l1RpcUrl, { timeout: 60_000 }), cacheTime: 0 })
  const l2 = createPublicClient({ transport: http(args.l2RpcUrl, { timeout: 60_000 }), cacheTime: 0 })
  const proposals = await readProposals(l1, args.oracle)
  const coverage = analyzeCoverage({ start: args.start, target: args.target, proposals })
  let nonCanonical = 0
  let orphanedIn = 0
  for (const p of proposals) {
    const canon = await canonicalOutputRoot(l2, p.last)
    if (canon.outputRoot.toLowerCase() === p.outputRoot.toLowerCase()) continue
    nonCanonical++
    const inRange = args.orphaned.filter((o) => o.number >= p.first && o.number <= p.last).length
    orphanedIn += Math.max(1, inRange)
    if (coverage.findings.length < 20) coverage.findings.push(`output ${p.index} (${p.first}-${p.last}) commits to ${p.outputRoot}, the canonical root is ${canon.outputRoot}`)
  }
  let confirmed = 0
  const seen = new Set<string>()
  for (const o of args.orphaned) {
    if (seen.has(o.hash)) continue
    seen.add(o.hash)
    const b = (await l2.request({ method: 'eth_getBlockByNumber', params: [`0x${o.number.toString(16)}`, false] })) as { hash: Hex } | null
    if (b === null || b.hash.toLowerCase() !== o.hash.toLowerCase()) confirmed++
  }
  return {
    ...coverage,
    proposals: proposals.length,
    proposedTo: await oracleLatest(l1, args.oracle),
    nonCanonicalProposals: nonCanonical,
    orphanedInProposals: orphanedIn,
    orphanedConfirmed: confirmed,
  }
}

/** Jobs that did not finish, read from the state tables with plain SQL. */
export interface JobsReport {
  /** Jobs in an open state (pending, running, retrying, failed) or dead, after the pipeline drained. */
  stuck: number
  byState: Record<string, number>
  /** The first stuck jobs: id, state, attempt. */
  examples: { id: string; state: string; attempt: number }[]
  /** Attempts still marked running on a finished job (bookkeeping only). */
  attemptsLeftRunning: number
}

/** Reads `state_jobs` / `state_attempts` of `schema` directly. */
export async function checkJobs(pgUrl: string, schema: string): Promise<JobsReport> {
  if (!/^[a-z_][a-z0-9_]*$/.test(schema)) throw new Error(`bad schema name ${schema}`)
  const c = new pg.Client({ connectionString: pgUrl })
  await c.connect()
  try {
    const states = await c.query<{ state: string; n: number }>(`select state, count(*)::int as n from ${schema}.state_jobs group by state`)
    const stuckRows = await c.query<{ id: string; state: string; attempt: number }>(
      `select id, state, attempt from ${schema}.state_jobs where state in ('pending', 'running', 'retrying', 'failed', 'dead') order by first limit 20`,
    )
    const stuck = await c.query<{ n: number }>(`select count(*)::int as n from ${schema}.state_jobs where state in ('pending', 'running', 'retrying', 'failed', 'dead')`)
    const left = await c.query<{ n: number }>(
      `select count(*)::int as n from ${schema}.state_attempts a join ${schema}.state_jobs j on j.id = a.job_id where a.outcome = 'running' and j.state in ('succeeded', 'invalidated', 'split', 'cancelled')`,
    )
    return {
      stuck: stuck.rows[0]?.n ?? 0,
      byState: Object.fromEntries(states.rows.map((r) => [r.state, r.n])),
      examples: stuckRows.rows,
      attemptsLeftRunning: left.rows[0]?.n ?? 0,
    }
  } finally {
    await c.end()
  }
}
