import { canonicalJson, sha256Hex } from '../../core/ids.js'

/**
 * The mock backend's "proof": a sha256 commitment to the statement a real proof would
 * prove. It is a development tool, labelled as such everywhere it appears: it shows that the
 * executor saw the right inputs in the right order, and nothing about their validity.
 *
 * statement = { program, stage, first, last, lastHash, inputs }
 *   - range stage: `inputs` are the block hashes, in block order;
 *   - later stages: `inputs` are the inner results' commitments, in range order.
 * commitment = sha256(canonicalJson(statement)), lowercase hex.
 *
 * `examples/mock-prover.mjs` computes the same value without importing this module; a test
 * checks the two agree.
 */
export interface MockStatement {
  program: string
  stage: string
  first: number
  last: number
  lastHash: string
  inputs: string[]
}

/** The mock proof commitment of a statement. */
export function mockCommitment(statement: MockStatement): string {
  return sha256Hex(canonicalJson(statement))
}

/** The program id the mock backend reports; refused on non-dev chains. */
export const MOCK_PROGRAM_ID = 'mock-v1'
