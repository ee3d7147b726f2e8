import { describe, expect, it } from 'vitest'
import type { StoredJob } from '../state/types.js'
import { stageCoverage } from './summary.js'

function job(first: number, last: number, state: StoredJob['state'] = 'succeeded', attempt = 1): StoredJob {
  return {
    id: `r:${first}-${last}:${state}:${attempt}`, stage: 'range', first, last, lastHash: '0x', programId: 'p', state, attempt, maxAttempts: 5,
    inputs: [], cost: 90, capacity: 100, overCapacity: false, parentId: null, result: null, failureClass: null, lastError: null,
    leaseExpiresAt: null, heartbeatAt: null, notBefore: null, createdAt: 0, updatedAt: 0, dispatchedAttempt: 1, resultPublished: true,
  }
}

describe('continuity check', () => {
  it('behavior: contiguous jobs cover the range with no gaps, overlaps or duplicates', () => {
    const c = stageCoverage('range', [job(1, 10), job(11, 20, 'succeeded', 3), job(21, 30)], 1, 30)
    expect(c).toMatchObject({ blocksCovered: 30, gaps: [], overlaps: [], duplicates: 0, retries: 2, retriedJobsRecovered: 1, lastCovered: 30 })
    expect(c.meanFill).toBeCloseTo(0.9)
  })
  it('behavior: gaps, overlaps and duplicates are each detected', () => {
    const c = stageCoverage('range', [job(1, 10), job(1, 10), job(8, 15), job(20, 25)], 1, 30)
    expect(c.duplicates).toBe(1)
    expect(c.overlaps).toEqual([{ first: 1, last: 10 }, { first: 8, last: 10 }])
    expect(c.gaps).toEqual([{ first: 16, last: 19 }, { first: 26, last: 30 }])
    expect(c.internalGaps).toBe(1)
    expect(c.blocksCovered).toBe(21)
  })
  it('behavior: only succeeded jobs count; split parents and dead jobs do not cover', () => {
    const c = stageCoverage('range', [job(1, 20, 'split'), job(1, 10), job(11, 20), job(21, 30, 'dead')], 1, 30)
    expect(c.blocksCovered).toBe(20)
    expect(c.deadLetters).toBe(1)
    expect(c.gaps).toEqual([{ first: 21, last: 30 }])
  })
})
