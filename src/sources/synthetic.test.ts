import { describe, expect, it } from 'vitest'
import { parseConfig } from '../config/load.js'
import type { SourceConfig } from '../config/schema.js'
import { syntheticBlock } from './synthetic.js'

const cfg = parseConfig(
  `
version: 1
source: { type: synthetic, seed: 5 }
stages:
  - { name: range, input: blocks, collector: { strategy: sequential, maxCount: 2 }, executor: { type: mock } }
`,
  '/x/p.yaml',
).source as Extract<SourceConfig, { type: 'synthetic' }>

describe('synthetic source', () => {
  it('behavior: block n is a pure function of (seed, n) and hashes chain', () => {
    expect(syntheticBlock(cfg, 42)).toEqual(syntheticBlock(cfg, 42))
    for (let n = 2; n < 50; n++) expect(syntheticBlock(cfg, n).parentHash).toBe(syntheticBlock(cfg, n - 1).hash)
    expect(syntheticBlock({ ...cfg, seed: 6 }, 42).hash).not.toBe(syntheticBlock(cfg, 42).hash)
  })

  it('behavior: gas is heavy-tailed around the median, within the gas limit, and cost follows the model', () => {
    const gas = Array.from({ length: 20_000 }, (_, i) => syntheticBlock(cfg, i + 1).gasUsed).sort((a, b) => a - b)
    const median = gas[gas.length >> 1] as number
    const mean = gas.reduce((a, b) => a + b, 0) / gas.length
    expect(median).toBeGreaterThan(1_600_000)
    expect(median).toBeLessThan(2_500_000)
    // A heavy tail: the mean sits well above the median, and some blocks are nearly full.
    expect(mean / median).toBeGreaterThan(1.4)
    expect(gas.filter((g) => g >= 27_000_000).length / gas.length).toBeGreaterThan(0.015)
    expect(Math.max(...gas)).toBeLessThanOrEqual(30_000_000)
    const b = syntheticBlock({ ...cfg, cost: { base: 10, perGas: 2, perTx: 100 } }, 7)
    expect(b.cost).toBe(10 + 2 * b.gasUsed + 100 * b.txCount)
  })
})
