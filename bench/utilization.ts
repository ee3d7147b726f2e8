/**
 * Prover utilization: the shipped heavy-tailed block-gas trace (bench/fixtures/block-gas-trace.json)
 * replayed through proofline's capacity-aware sequential collector (a range closes when the next
 * block would not fit the prover's gas capacity, or at the circuit's block slots) and through
 * fixed-N-block ranges (OP Succinct's default style), for the same prover capacity.
 *
 * Fixed N must be chosen before the traffic is known; an operator sizes it so that no range
 * overflows the prover: `fixed_safe` uses the largest N with no overflowing range on this very
 * trace (an optimistic baseline: it knows the future). `fixed_mean` sizes N for the mean block
 * (capacity ÷ mean gas) and shows the overflows that choice causes.
 */
import { readFile } from 'node:fs/promises'
import { sequentialCollector } from '../src/pipeline/collectors/index.js'
import type { CollectorItem } from '../src/pipeline/collectors/index.js'
import { mean, percentile, r3, size, type BenchOptions } from './lib.js'

export const TRACE_FILE = new URL('./fixtures/block-gas-trace.json', import.meta.url)

interface Ranges {
  proofs: number
  capacity_fill: number
  p10_fill: number
  overflows: number
}

function stats(costs: number[], capacity: number, overflows: number): Ranges {
  const fills = costs.map((c) => c / capacity)
  return { proofs: costs.length, capacity_fill: r3(mean(fills)), p10_fill: r3(percentile(fills, 10)), overflows }
}

/** Capacity-aware ranges through the real collector; the trailing partial range (end of trace) is left out of the fill. */
export function capacityAware(gas: readonly number[], capacity: number, maxCount: number): Ranges & { closed_by: Record<string, number> } {
  const c = sequentialCollector({ startKey: 1, capacity, maxCount, timeoutMs: 1_000 })
  const costs: number[] = []
  let overflows = 0
  const closedBy: Record<string, number> = {}
  const take = (now: number, last: boolean): void => {
    for (const g of c.poll(now)) {
      if (last && g.reason === 'timeout') continue
      closedBy[g.reason] = (closedBy[g.reason] ?? 0) + 1
      if (g.overCapacity) overflows++
      costs.push(g.cost)
    }
  }
  gas.forEach((cost, i) => {
    const n = i + 1
    const item: CollectorItem = { id: `b${n}`, start: n, end: n, cost, data: null, receivedAt: 0 }
    c.add(item, 0)
    if (n % 1_000 === 0) take(0, false)
  })
  take(0, false)
  take(Number.MAX_SAFE_INTEGER, true)
  return { ...stats(costs, capacity, overflows), closed_by: closedBy }
}

/** Fixed ranges of `n` blocks; a range whose gas exceeds the capacity is an overflow (it must be re-split or fail). */
export function fixedN(gas: readonly number[], capacity: number, n: number): Ranges & { n: number } {
  const costs: number[] = []
  let overflows = 0
  for (let i = 0; i + n <= gas.length; i += n) {
    let c = 0
    for (let k = i; k < i + n; k++) c += gas[k]!
    if (c > capacity) overflows++
    costs.push(Math.min(c, capacity))
  }
  return { n, ...stats(costs, capacity, overflows) }
}

export interface UtilizationResult {
  trace: { file: string; blocks: number; mean_gas: number; p50_gas: number; p99_gas: number; max_gas: number }
  prover: { capacity_gas: number; block_slots: number }
  capacity_aware: Ranges & { closed_by: Record<string, number> }
  fixed_safe: Ranges & { n: number }
  fixed_mean: Ranges & { n: number }
  /** Mean fill of capacity-aware ranges. */
  capacity_fill: number
  /** Capacity-aware fill ÷ fixed_safe fill (= fewer proofs for the same blocks). */
  ratio_vs_fixed: number
  /** Capacity-aware ranges over the prover's capacity (only a single block larger than the capacity can be). */
  overflows: number
  proofs_saved_vs_fixed: number
}

export async function utilizationBench(opts: BenchOptions): Promise<UtilizationResult> {
  const doc = JSON.parse(await readFile(TRACE_FILE, 'utf8')) as { gasUsed: number[] }
  const gas = doc.gasUsed.slice(0, size(opts, 'utilization.blocks', doc.gasUsed.length, 20_000))
  const capacity = 400_000_000
  const slots = 256
  const cap = capacityAware(gas, capacity, slots)
  // The largest N whose every aligned range fits (what an operator must provision for).
  let safe = fixedN(gas, capacity, 1)
  for (let n = 2; n <= slots; n++) {
    const f = fixedN(gas, capacity, n)
    if (f.overflows > 0) break
    safe = f
  }
  const meanGas = mean(gas)
  const fm = fixedN(gas, capacity, Math.max(1, Math.floor(capacity / meanGas)))
  return {
    trace: { file: 'bench/fixtures/block-gas-trace.json', blocks: gas.length, mean_gas: Math.round(meanGas), p50_gas: percentile(gas, 50), p99_gas: percentile(gas, 99), max_gas: Math.max(...gas) },
    prover: { capacity_gas: capacity, block_slots: slots },
    capacity_aware: cap,
    fixed_safe: safe,
    fixed_mean: fm,
    capacity_fill: cap.capacity_fill,
    ratio_vs_fixed: r3(cap.capacity_fill / safe.capacity_fill),
    overflows: cap.overflows,
    proofs_saved_vs_fixed: r3(1 - cap.proofs / safe.proofs),
  }
}
