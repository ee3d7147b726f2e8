import type { JobState, Range } from '../core/types.js'
import type { StoredJob } from '../state/types.js'

/** How one stage's succeeded jobs cover the block range. */
export interface StageCoverage {
  stage: string
  /** Succeeded jobs. */
  succeeded: number
  /** Jobs by state. */
  states: Partial<Record<JobState, number>>
  /** Blocks covered by succeeded jobs (each block counted once). */
  blocksCovered: number
  /** Ranges inside [start, end] covered by no succeeded job. */
  gaps: Range[]
  /** Gaps below the highest covered block: holes, not work still in progress. */
  internalGaps: number
  /** Highest block covered by a succeeded job. */
  lastCovered: number | null
  /** Ranges covered by more than one succeeded job. */
  overlaps: Range[]
  /** Succeeded jobs with exactly the same range as another succeeded job. */
  duplicates: number
  /** Attempts beyond the first, summed over jobs (retries), and how many of those jobs ended succeeded. */
  retries: number
  retriedJobsRecovered: number
  deadLetters: number
  /** Mean of cost/capacity over succeeded jobs packed against a capacity (null when none). */
  meanFill: number | null
}

/**
 * The continuity check: over succeeded jobs of one stage, sorted by range, find gaps inside
 * [start, end], overlaps and exact duplicates. A correct run has none of the three.
 */
export function stageCoverage(stage: string, jobs: StoredJob[], start: number, end: number): StageCoverage {
  const states: Partial<Record<JobState, number>> = {}
  let retries = 0
  let retriedJobsRecovered = 0
  for (const j of jobs) {
    states[j.state] = (states[j.state] ?? 0) + 1
    retries += j.attempt - 1
    if (j.attempt > 1 && j.state === 'succeeded') retriedJobsRecovered++
  }
  const done = jobs.filter((j) => j.state === 'succeeded').sort((a, b) => a.first - b.first || a.last - b.last)
  const gaps: Range[] = []
  const overlaps: Range[] = []
  let duplicates = 0
  let covered = 0
  let next = start // first block not yet covered
  let prev: StoredJob | undefined
  for (const j of done) {
    if (prev && prev.first === j.first && prev.last === j.last) duplicates++
    if (j.first > next && next <= end) gaps.push({ first: next, last: Math.min(j.first - 1, end) })
    if (j.first < next && prev) overlaps.push({ first: j.first, last: Math.min(j.last, next - 1) })
    const from = Math.max(j.first, next, start)
    const to = Math.min(j.last, end)
    if (to >= from) covered += to - from + 1
    next = Math.max(next, j.last + 1)
    prev = j
  }
  if (next <= end) gaps.push({ first: next, last: end })
  const fills = done.filter((j) => j.capacity !== null && j.capacity > 0).map((j) => j.cost / (j.capacity as number))
  const lastCovered = done.length > 0 ? Math.max(...done.map((j) => j.last)) : null
  return {
    stage,
    succeeded: done.length,
    states,
    blocksCovered: covered,
    gaps,
    internalGaps: lastCovered === null ? 0 : gaps.filter((g) => g.last < lastCovered).length,
    lastCovered,
    overlaps,
    duplicates,
    retries,
    retriedJobsRecovered,
    deadLetters: states.dead ?? 0,
    meanFill: fills.length > 0 ? fills.reduce((a, b) => a + b, 0) / fills.length : null,
  }
}
