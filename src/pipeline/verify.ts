import { mockCommitment } from '../backends/mock/mock-proof.js'
import type { ArtifactRef, Job } from '../core/types.js'

/** Why a result was not believed, or null when it checks out. */
export type VerifyOutcome = { ok: true } | { ok: false; reason: string }

/**
 * Checks an executor's output (and its proof artifact, when it has one) against what the
 * orchestrator expected for the job.
 */
export type ResultVerifier = (job: Job, output: Record<string, unknown>, proof?: ArtifactRef) => VerifyOutcome | Promise<VerifyOutcome>

/** The commitment inputs of the mock statement: block hashes, or inner results' commitments. */
export function mockStatementInputs(job: Pick<Job, 'inputs'>): string[] {
  return job.inputs.map((input) => {
    const data = input.data as { hash?: unknown; output?: { commitment?: unknown } }
    if (typeof data.hash === 'string') return data.hash
    const c = data.output?.commitment
    return typeof c === 'string' ? c : ''
  })
}

/**
 * The mock verifier: recomputes the mock commitment from the job the orchestrator built and
 * compares. It catches a prover that saw the wrong inputs or lied about them; it proves
 * nothing cryptographic (dev only, like the mock backend).
 */
export const mockVerifier: ResultVerifier = (job, output) => {
  if (output.first !== job.first || output.last !== job.last) {
    return { ok: false, reason: `output covers ${String(output.first)}-${String(output.last)}, job is ${job.first}-${job.last}` }
  }
  if (output.program !== job.programId) {
    return { ok: false, reason: `output is for program ${JSON.stringify(output.program)}, job expects ${job.programId}` }
  }
  const expected = mockCommitment({
    program: job.programId,
    stage: job.stage,
    first: job.first,
    last: job.last,
    lastHash: job.lastHash,
    inputs: mockStatementInputs(job),
  })
  // A zkVM's public values carry the commitment as bytes32, 0x-prefixed (docs/zkvm.md).
  const commitment = typeof output.commitment === 'string' ? output.commitment.replace(/^0x/, '') : output.commitment
  if (commitment !== expected) {
    return { ok: false, reason: `commitment ${String(output.commitment)} does not match the statement (expected ${expected})` }
  }
  return { ok: true }
}

/**
 * The verifier for a stage's `verify` setting. `builtin` needs `builtin` (made by the caller,
 * see src/pipeline/verify-builtin.ts), so this module does not load the proving backend.
 */
export function verifierFor(kind: 'mock' | 'builtin', builtin?: () => ResultVerifier): ResultVerifier {
  switch (kind) {
    case 'mock':
      return mockVerifier
    case 'builtin':
      if (!builtin) throw new TypeError('verify: builtin needs the built-in verifier')
      return builtin()
  }
}
