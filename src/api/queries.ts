import type { ResolvedConfig } from '../config/load.js'
import type { ArtifactRef, JobState } from '../core/types.js'
import type { InFlightProposal, ProposalRecord, ProposalStore } from '../proposer/proposals.js'
import type { BlockRecord, StateStore } from '../state/types.js'

/** Where one block is: what `GET /blocks/:n` and `proofline inspect block N` show. */
export interface BlockStatus {
  number: number
  /** `unseen`, `seen`, `<stage>:<state>` of the furthest stage reached in order, or `proposed`. */
  status: string
  block: BlockRecord | null
  stages: {
    stage: string
    /** Every job of the stage covering the block, most recently updated first (old attempts at the range included: invalidated, split, cancelled). */
    jobs: { id: string; state: JobState; first: number; last: number; attempt: number; failureClass: string | null; lastError: string | null; proof: ArtifactRef | null; output: Record<string, unknown> | null; updatedAt: number }[]
  }[]
  proposal: ProposalRecord | null
  inFlightProposal: InFlightProposal | null
}

/** Reads where block `n` is; undefined when it was never seen and no job covers it. */
export async function blockStatus(src: { config: ResolvedConfig; state: StateStore; proposals?: ProposalStore | undefined }, n: number): Promise<BlockStatus | undefined> {
  const [block] = await src.state.listBlocks({ from: n, to: n })
  const stages: BlockStatus['stages'] = []
  let reached = block ? 'seen' : 'unseen'
  let chain = true
  for (const s of src.config.stages) {
    const jobs = (await src.state.listJobs({ stage: s.name, coversBlock: n })).sort((a, b) => b.updatedAt - a.updatedAt)
    const done = jobs.find((j) => j.state === 'succeeded')
    if (chain && done) reached = `${s.name}:succeeded`
    else if (chain) {
      const open = jobs.find((j) => j.state !== 'invalidated' && j.state !== 'split')
      if (open) reached = `${s.name}:${open.state}`
      chain = false
    }
    stages.push({
      stage: s.name,
      jobs: jobs.map((j) => ({
        id: j.id,
        state: j.state,
        first: j.first,
        last: j.last,
        attempt: j.attempt,
        failureClass: j.failureClass,
        lastError: j.lastError,
        proof: j.result?.proof ?? null,
        output: j.result?.output ?? null,
        updatedAt: j.updatedAt,
      })),
    })
  }
  let proposal: ProposalRecord | null = null
  let inFlight: InFlightProposal | null = null
  if (src.proposals) {
    proposal = (await src.proposals.list()).find((x) => x.first <= n && x.l2Block >= n) ?? null
    if (proposal) {
      if (chain) reached = 'proposed'
    } else inFlight = (await src.proposals.listInFlight()).find((x) => x.first <= n && x.l2Block >= n) ?? null
  }
  if (!block && stages.every((s) => s.jobs.length === 0)) return undefined
  return { number: n, status: reached, block: block ?? null, stages, proposal, inFlightProposal: inFlight }
}
