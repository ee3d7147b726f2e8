import { describe, expect, it } from 'vitest'
import { ConfigError } from '../core/errors.js'
import { checkCostModel, DEFAULT_COST_MODEL, estimateCost } from './cost.js'

describe('estimateCost', () => {
  it('behavior: the default model is the gas used', () => {
    expect(estimateCost(DEFAULT_COST_MODEL, { gasUsed: 123_456, txCount: 7, traceBytes: 9_999 })).toBe(123_456)
  })

  it('behavior: every coefficient contributes linearly', () => {
    const model = { base: 1_000, perGas: 2, perTx: 300, perTraceByte: 0.5 }
    expect(estimateCost(model, { gasUsed: 0, txCount: 0, traceBytes: 0 })).toBe(1_000)
    expect(estimateCost(model, { gasUsed: 10, txCount: 0, traceBytes: 0 })).toBe(1_020)
    expect(estimateCost(model, { gasUsed: 0, txCount: 3, traceBytes: 0 })).toBe(1_900)
    expect(estimateCost(model, { gasUsed: 0, txCount: 0, traceBytes: 10 })).toBe(1_005)
    expect(estimateCost(model, { gasUsed: 10, txCount: 3, traceBytes: 10 })).toBe(1_000 + 20 + 900 + 5)
  })

  it('behavior: perTraceByte is optional and the result is rounded to an integer', () => {
    expect(estimateCost({ base: 0.4, perGas: 0.5, perTx: 0 }, { gasUsed: 3, txCount: 1, traceBytes: 1_000_000 })).toBe(2)
  })

  it('behavior: negative or non-integer inputs are refused', () => {
    expect(() => estimateCost(DEFAULT_COST_MODEL, { gasUsed: -1, txCount: 0, traceBytes: 0 })).toThrow(RangeError)
    expect(() => estimateCost(DEFAULT_COST_MODEL, { gasUsed: 1.5, txCount: 0, traceBytes: 0 })).toThrow(/gasUsed/)
    expect(() => estimateCost(DEFAULT_COST_MODEL, { gasUsed: 1, txCount: Number.NaN, traceBytes: 0 })).toThrow(/txCount/)
  })
})

describe('checkCostModel', () => {
  it('behavior: a negative, infinite or missing coefficient is a ConfigError naming the key', () => {
    expect(() => checkCostModel({ base: -1, perGas: 1, perTx: 0 })).toThrow(ConfigError)
    expect(() => checkCostModel({ base: 0, perGas: Number.POSITIVE_INFINITY, perTx: 0 })).toThrow(/perGas/)
    expect(() => checkCostModel({ base: 0, perGas: 1 } as never)).toThrow(/perTx/)
    expect(() => checkCostModel({ base: 0, perGas: 1, perTx: 0, perTraceByte: Number.NaN })).toThrow(/perTraceByte/)
  })

  it('behavior: a valid model is returned unchanged', () => {
    const m = { base: 5, perGas: 1, perTx: 2 }
    expect(checkCostModel(m)).toBe(m)
  })
})
