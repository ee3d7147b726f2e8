/** Collector strategies and the factory that picks one from a stage's config. */
import { ConfigError } from '../../core/errors.js'
import { matchCollector, type MatchCollectorOptions } from './match.js'
import { sequentialCollector, type SequentialCollectorOptions } from './sequential.js'
import type { Collector } from './types.js'

export type { AddOutcome, ClosedGroup, CloseReason, Collector, CollectorItem } from './types.js'
export { matchCollector, type MatchCollectorOptions } from './match.js'
export { sequentialCollector, type SequentialCollectorOptions } from './sequential.js'

/** A collector's config, as a stage declares it. */
export type CollectorConfig = ({ strategy: 'sequential' } & SequentialCollectorOptions) | ({ strategy: 'match' } & MatchCollectorOptions)

/**
 * Creates the collector a config names.
 * @throws ConfigError for an unknown strategy or invalid options.
 */
export function createCollector(config: CollectorConfig): Collector {
  switch (config.strategy) {
    case 'sequential': {
      const { strategy: _, ...opts } = config
      return sequentialCollector(opts)
    }
    case 'match': {
      const { strategy: _, ...opts } = config
      return matchCollector(opts)
    }
    default: {
      const unknown: unknown = (config as { strategy: unknown }).strategy
      throw new ConfigError(`unknown collector strategy ${JSON.stringify(unknown)}; use 'sequential' or 'match'`, { strategy: unknown })
    }
  }
}
