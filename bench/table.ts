/** The short human table of a bench document: each headline number, its target, and whether it is met. */

interface Row {
  key: string
  target: string
  check: (v: number) => boolean
}

const ROWS: Row[] = [
  { key: 'scheduling.p50_ratio_vs_pgboss', target: '≤ 1.0', check: (v) => v <= 1 },
  { key: 'scheduling.throughput_ratio_vs_pgboss', target: '≥ 1.0', check: (v) => v >= 1 },
  { key: 'scheduling.p50_ratio_vs_bullmq', target: '(info)', check: () => true },
  { key: 'scheduling.throughput_ratio_vs_bullmq', target: '(info)', check: () => true },
  { key: 'bus.fraction_of_raw', target: '≥ 0.5', check: (v) => v >= 0.5 },
  { key: 'utilization.capacity_fill', target: '≥ 0.95', check: (v) => v >= 0.95 },
  { key: 'utilization.ratio_vs_fixed', target: '≥ 1.2', check: (v) => v >= 1.2 },
  { key: 'utilization.overflows', target: '= 0', check: (v) => v === 0 },
  { key: 'scaling.efficiency_64', target: '≥ 0.9', check: (v) => v >= 0.9 },
  { key: 'scaling.efficiency_256', target: '≥ 0.8', check: (v) => v >= 0.8 },
  { key: 'latency.orchestration_share', target: '≤ 0.02', check: (v) => v <= 0.02 },
  { key: 'memory.rss_mb_1m_blocks', target: '≤ 150', check: (v) => v <= 150 },
]

/** Reads `a.b` from a document. */
export function pick(doc: Record<string, unknown>, key: string): unknown {
  let v: unknown = doc
  for (const part of key.split('.')) v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[part] : undefined
  return v
}

export function summaryTable(doc: Record<string, unknown>): string {
  const lines = [`${'measure'.padEnd(40)} ${'value'.padStart(10)}  ${'target'.padEnd(8)} met`]
  for (const r of ROWS) {
    const v = pick(doc, r.key)
    const shown = typeof v === 'number' ? String(v) : v === undefined ? '—' : JSON.stringify(v)
    const met = typeof v === 'number' ? (r.check(v) ? 'yes' : 'NO') : '—'
    lines.push(`${r.key.padEnd(40)} ${shown.padStart(10)}  ${r.target.padEnd(8)} ${met}`)
  }
  const prover = pick(doc, 'prover') as { available?: boolean; reason?: string; source?: string } | undefined
  if (prover) lines.push(`${'prover'.padEnd(40)} ${prover.available === true ? `see JSON (${prover.source === 'recorded' ? 'recorded run, not measured now' : 'measured in this run'})` : `not available: ${prover.reason ?? ''}`}`)
  return lines.join('\n')
}
