/**
 * `npm run chaos -- [--json] [--blocks N] [--seed S] [--workers N] [--minutes M] [--keep] [--l2-gate off]`
 *
 * Runs proofline's distributed setup over N L2 blocks (default 10,000) with seeded SIGKILLs
 * of the orchestrator, workers and proposer, NATS and Postgres crash-restarts, an L1 RPC
 * endpoint going down and up, and L2 reorgs up to 64 blocks deep; then checks L1 and L2
 * independently (test/chaos/checker.ts). Prints the result (JSON with --json) and exits 0 only
 * if lost, duplicates, gaps, orphaned_in_proposals and stuck_jobs are all 0 and every kind of
 * disruption was injected. Bounded: it stops by itself within --minutes (default 28).
 * See docs/reliability.md.
 */
import { FULL_PLAN, runChaos, type ChaosPlan } from '../test/chaos/harness.js'

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : undefined
}
const num = (name: string, dflt: number): number => {
  const v = arg(name)
  if (v === undefined) return dflt
  const n = Number(v)
  if (!Number.isFinite(n) || n <= 0) {
    process.stderr.write(`--${name} must be a positive number (got ${v})\n`)
    process.exit(2)
  }
  return n
}

const json = process.argv.includes('--json')
const blocks = Math.floor(num('blocks', 10_000))
// Fewer disruptions on short runs, so they still fit.
const scale = Math.min(1, blocks / 10_000)
const plan = Object.fromEntries(Object.entries(FULL_PLAN).map(([k, v]) => [k, Math.max(1, Math.round(v * scale))])) as unknown as ChaosPlan

// Ctrl-C / SIGTERM: stop the disruptions, stop and clean up everything, report what was found.
const abort = new AbortController()
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => abort.abort())

const result = await runChaos({
  signal: abort.signal,
  blocks,
  seed: Math.floor(num('seed', 20260401)),
  workers: Math.floor(num('workers', 3)),
  plan,
  deadlineMs: num('minutes', 28) * 60_000,
  keepDir: process.argv.includes('--keep'),
  // `--l2-gate off`: clients reach the dev L2 directly (only to measure what the gate changes).
  l2Gate: arg('l2-gate') !== 'off',
})

if (json) {
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`)
} else {
  const line = (k: string, v: unknown): void => void process.stdout.write(`${k.padEnd(24)} ${String(v)}\n`)
  for (const k of ['ok', 'lost', 'duplicates', 'gaps', 'orphaned_in_proposals', 'stuck_jobs', 'kills', 'restarts', 'outages', 'reorgs', 'kills_in_flight'] as const) line(k, result[k])
  line('injected', JSON.stringify(result.injected))
  line('unexpected exits', result.unexpected_exits.length)
  line('proposals', `${result.proposals} (L2 ${result.blocks.start}..${result.blocks.proposedTo}, target ${result.blocks.target})`)
  line('duration', `${Math.round(result.durationMs / 1000)} s`)
  if (result.error) line('error', result.error)
  for (const f of result.findings) line('finding', f)
}
process.exit(result.ok ? 0 : 1)
