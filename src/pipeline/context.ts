import type { Logger } from 'pino'
import type { ArtifactStore } from '../artifacts/types.js'
import type { Bus } from '../bus/types.js'
import type { ResolvedConfig, ResolvedStage } from '../config/load.js'
import type { StateStore } from '../state/types.js'

/** What the orchestrator's services share. Built once in `src/wiring.ts`. */
export interface PipelineContext {
  config: ResolvedConfig
  state: StateStore
  bus: Bus
  artifacts: ArtifactStore
  log: Logger
  /** Injected clock, so tests can reason about time. */
  now: () => number
  /** A background loop cannot go on (e.g. a consumer could not start): stop the process. */
  fatal: (err: unknown, where: string) => void
}

/** Serialises async sections (a promise-chain mutex). */
export class Serial {
  private tail: Promise<unknown> = Promise.resolve()
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn)
    this.tail = next.then(
      () => undefined,
      () => undefined,
    )
    return next
  }
}

/** The stage a name refers to. */
export function stageByName(config: ResolvedConfig, name: string): ResolvedStage {
  const stage = config.stages.find((s) => s.name === name)
  if (!stage) throw new Error(`unknown stage ${name}`)
  return stage
}
