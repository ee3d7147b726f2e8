import { mockCommitment } from '../../src/backends/mock/mock-proof.js'
import type { BlockMessage } from '../../src/core/types.js'
import { mockStatementInputs } from '../../src/pipeline/verify.js'
import type { NewJob } from '../../src/state/types.js'

/** A 32-byte hex word of `x` (a block hash in tests). */
export const word = (x: number): `0x${string}` => `0x${x.toString(16).padStart(64, '0')}`

/** Block message `n` of a test chain: hash `word(n)`, parent `word(n - 1)`, 100 gas and cost. */
export function testBlock(n: number): BlockMessage {
  return { number: n, hash: word(n), parentHash: word(n - 1), timestamp: n, gasUsed: 100, cost: 100, txCount: 1 }
}

/** The output an honest mock prover returns for a job (`extra` fields ride along, e.g. to tell two proofs apart). */
export function honestMockOutput(job: Pick<NewJob, 'programId' | 'stage' | 'first' | 'last' | 'lastHash' | 'inputs'>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const commitment = mockCommitment({ program: job.programId, stage: job.stage, first: job.first, last: job.last, lastHash: job.lastHash, inputs: mockStatementInputs(job) })
  return { commitment, first: job.first, last: job.last, lastHash: job.lastHash, program: job.programId, ...extra }
}
