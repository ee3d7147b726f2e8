import type { Hex } from 'viem'

/** A BN254 G2 point in affine coordinates; each coordinate is (c0, c1), 32-byte big-endian. */
export interface G2Point {
  x: [Hex, Hex]
  y: [Hex, Hex]
}

/**
 * Which powers-of-tau a proof is made over.
 * - `dev`: generated on this machine (random tau, known while it was generated): anyone who
 *   had it can forge proofs, so it is refused on every chain id that is not a dev chain.
 * - `ignition`: Aztec's Ignition ceremony output (production).
 */
export type CrsKind = 'dev' | 'ignition'

/** A CRS ready for `bb`: a folder holding `bn254_g1.dat`, and what it is. */
export interface ResolvedCrs {
  kind: CrsKind
  /** The folder given to `bb -c`; it holds `bn254_g1.dat` (64 bytes per point). */
  dir: string
  /** G1 points in the file. */
  points: number
  /** sha256 of `bn254_g1.dat`: every prover of one pipeline must use the same bytes. */
  g1Sha256: string
  /**
   * [tau]·G2: the Solidity verifier's pairing check needs the CRS's own. Null when it is
   * unknown here: a worker that fetched the CRS from the artifact store only proves with it.
   */
  g2: G2Point | null
}

/** Ignition's [tau]·G2 (what bb and its generated verifiers hard-code), as (c0, c1) coordinates. */
export const IGNITION_G2: G2Point = {
  x: ['0x0118c4d5b837bcc2bc89b5b398b5974e9f5944073b32078b7e231fec938883b0', '0x260e01b251f6f1c7e7ff4e580791dee8ea51d87a358e038b4efe30fac09383c1'],
  y: ['0x22febda3c0c0632a56475b4214e5615e11e6dd3f96e6cea2854a87d4dacc5e55', '0x04fc6369f7110fe3d25156c1bb9a72859cf2a04641f99ba4ee413c80da6a5fe4'],
}

/** Ignition's [tau]·G1 (the second point of its G1 file), x and y. */
export const IGNITION_G1_TAU: [Hex, Hex] = [
  '0x2d360628289ff943ff6bd1a87bbe4e62abe7fb61ba83effd266f22bdcf31e6f9',
  '0x26b92a79e563c3f48252cce7feeca2f0f8d33dcb4ef7b0643bf07bd405700aaa',
]

/** The four 32-byte words of a G2 point in the EVM pairing precompile's order: x.c1, x.c0, y.c1, y.c0. */
export function g2EvmWords(p: G2Point): [Hex, Hex, Hex, Hex] {
  return [p.x[1], p.x[0], p.y[1], p.y[0]]
}
