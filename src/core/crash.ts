/**
 * Fault injection for crash tests: `PROOFLINE_CRASH_AT=<point>:<n>` makes the process
 * SIGKILL itself the n-th time it reaches `<point>` (n defaults to 1). Only tests set it; it
 * costs one map lookup per call otherwise. Points are listed in docs/operations.md.
 */
let target: { point: string; n: number } | null | undefined
const hits = new Map<string, number>()

function parseTarget(env: Record<string, string | undefined>): { point: string; n: number } | null {
  const spec = env.PROOFLINE_CRASH_AT
  if (!spec) return null
  const [point, n] = spec.split(':')
  return point ? { point, n: n ? Number(n) : 1 } : null
}

/** Kills this process with SIGKILL when the configured crash point is reached. */
export function crashPoint(point: string): void {
  if (target === undefined) target = parseTarget(process.env)
  if (target === null || target.point !== point) return
  const n = (hits.get(point) ?? 0) + 1
  hits.set(point, n)
  if (n >= target.n) process.kill(process.pid, 'SIGKILL')
}
