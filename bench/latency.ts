import type { BenchOptions } from './lib.js'
export function latencyBench(_opts: BenchOptions): Promise<unknown> { return Promise.reject(new Error('not written yet')) }
