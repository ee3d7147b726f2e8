/**
 * The watcher's proving-cost estimate for one block.
 *
 * A zkVM's proving time for an EVM block is close to linear in the work the block did: the
 * gas it used (execution), its transactions (signature checks, receipts, per-tx overhead)
 * and the size of the witness the prover has to read (trace bytes). The model is
 *
 *     cost = base + perGas·gasUsed + perTx·txCount + perTraceByte·traceBytes
 *
 * rounded to an integer. The unit is whatever the range stage's collector `capacity` is
 * written in; the defaults (`perGas: 1`, everything else 0) make the unit "gas", matching the
 * synthetic source's cost model and its config keys (`source.cost.base/perGas/perTx`).
 * Calibrate by proving a sample of blocks and fitting the coefficients to measured time.
 */
import { ConfigError } from '../core/errors.js'

/** Coefficients of the linear cost model. */
export interface CostModel {
  /**
   * Fixed cost of any block (setup, header hashing, commitments).
   * @default 0
   */
  base: number
  /**
   * Cost per unit of gas used.
   * @default 1
   */
  perGas: number
  /**
   * Cost per transaction.
   * @default 0
   */
  perTx: number
  /**
   * Cost per byte of the block's trace artifact (its witness size).
   * @default 0
   */
  perTraceByte?: number
}

/** What a block contributes to its cost. */
export interface CostInput {
  gasUsed: number
  txCount: number
  /** Size of the stored trace artifact in bytes; 0 when no trace is stored. */
  traceBytes: number
}

/** The default model: cost is the block's gas used. */
export const DEFAULT_COST_MODEL: Readonly<Required<CostModel>> = Object.freeze({ base: 0, perGas: 1, perTx: 0, perTraceByte: 0 })

/**
 * Checks that every coefficient is a finite, non-negative number. Throws a non-retryable
 * `ConfigError` naming the bad key, so a typo in the config is reported at startup rather than
 * as a `NaN` cost in the collector.
 */
export function checkCostModel(model: CostModel): CostModel {
  const keys = ['base', 'perGas', 'perTx', 'perTraceByte'] as const
  for (const key of keys) {
    const v = model[key]
    if (v === undefined && key === 'perTraceByte') continue
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
      throw new ConfigError(`cost model key '${key}' must be a finite number >= 0 (got ${String(v)}); fix it under the watcher's 'cost' section`, {
        key,
        value: v,
      })
    }
  }
  return model
}

/**
 * The estimated proving cost of one block: `base + perGas·gasUsed + perTx·txCount +
 * perTraceByte·traceBytes`, rounded to the nearest integer, never negative. Inputs must be
 * non-negative safe integers.
 */
export function estimateCost(model: CostModel, input: CostInput): number {
  for (const key of ['gasUsed', 'txCount', 'traceBytes'] as const) {
    const v = input[key]
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`estimateCost: ${key} must be a non-negative safe integer (got ${String(v)})`)
  }
  const perTraceByte = model.perTraceByte ?? 0
  const raw = model.base + model.perGas * input.gasUsed + model.perTx * input.txCount + perTraceByte * input.traceBytes
  return Math.max(0, Math.round(raw))
}
