import type { Logger } from 'pino'
import type { ArtifactStore } from '../artifacts/types.js'
import type { Bus, Handler } from '../bus/types.js'
import { BusError, ProoflineError } from '../core/errors.js'
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
  /** Operator controls: a paused stage's jobs are not published (see src/pipeline/controls.ts). */
  controls?: {
    isPaused(stage: string): boolean
    /** Marks a publication of one of `stage`'s jobs in progress; call the result when it is done. */
    begin(stage: string): () => void
  }
}

/**
 * Wraps a bus handler of the orchestrator: if a write was refused because another
 * orchestrator took over (`STATE_FENCED`), this process must stop at once, and the message
 * must go back to the bus for the new leader — never be dead-lettered because the error is
 * not retryable.
 */
export function leaderAware<T>(ctx: PipelineContext, where: string, handler: Handler<T>): Handler<T> {
  return async (delivery) => {
    try {
      await handler(delivery)
    } catch (err) {
      if (err instanceof ProoflineError && err.code === 'STATE_FENCED') {
        ctx.fatal(err, where)
        throw new BusError('HANDLER_FENCED', `${where}: not the leader any more; message left for the new leader`, { retryable: true, cause: err })
      }
      throw err
    }
  }
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
