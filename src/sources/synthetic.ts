import { keccak256, toHex, type Hex } from 'viem'
import type { SourceConfig } from '../config/schema.js'
import type { BlockMessage } from '../core/types.js'
import { mulberry32 } from '../core/random.js'

type SyntheticConfig = Extract<SourceConfig, { type: 'synthetic' }>


/** Standard normal via Box–Muller. */
function gaussian(rand: () => number): number {
  const u = Math.max(rand(), Number.EPSILON)
  const v = rand()
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v)
}

/**
 * Deterministic synthetic L2 blocks: block n is a pure function of (seed, n), so a restarted
 * source re-creates exactly the blocks it published before. Gas follows a log-normal body
 * (median `medianGas`, shape `sigma`) plus a share of full blocks, capped at the gas limit —
 * the heavy-tailed shape of real L2 traffic. Hashes chain: block n's parentHash is block
 * n-1's hash.
 */
export function syntheticBlock(cfg: SyntheticConfig, n: number): BlockMessage {
  const rand = mulberry32(hashSeed(cfg.seed, n))
  const g = cfg.gas
  let gasUsed: number
  if (rand() < g.fullBlockRate) {
    gasUsed = Math.round(g.gasLimit * (0.9 + 0.1 * rand()))
  } else {
    gasUsed = Math.round(g.medianGas * Math.exp(g.sigma * gaussian(rand)))
  }
  gasUsed = Math.max(21_000, Math.min(g.gasLimit, gasUsed))
  const txCount = Math.max(1, Math.round(gasUsed / g.gasPerTx))
  const cost = Math.round(cfg.cost.base + cfg.cost.perGas * gasUsed + cfg.cost.perTx * txCount)
  return {
    number: n,
    hash: syntheticHash(cfg.seed, n),
    parentHash: syntheticHash(cfg.seed, n - 1),
    timestamp: 1_700_000_000 + n * 2,
    gasUsed,
    cost,
    txCount,
  }
}

/** The hash of synthetic block n. */
export function syntheticHash(seed: number, n: number): Hex {
  return keccak256(toHex(`proofline-synthetic:${seed}:${n}`))
}

function hashSeed(seed: number, n: number): number {
  // Mix seed and block number into 32 bits (FNV-1a over their decimal text).
  let h = 0x811c9dc5
  for (const ch of `${seed}:${n}`) {
    h ^= ch.charCodeAt(0)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}
