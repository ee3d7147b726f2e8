import { describe, expect, it } from 'vitest'
import { ConfigError } from '../../core/errors.js'
import { createCollector, type CollectorConfig } from './index.js'

describe('createCollector', () => {
  it('creates a sequential collector from its config', () => {
    const c = createCollector({ strategy: 'sequential', startKey: 3, maxCount: 2 })
    expect(c.strategy).toBe('sequential')
    expect(c.cursor()).toBe('3')
  })

  it('creates a match collector from its config', () => {
    const c = createCollector({ strategy: 'match', fields: ['range'], inputs: 2, timeoutMs: 10 })
    expect(c.strategy).toBe('match')
    expect(c.cursor()).toBeUndefined()
  })

  it('rejects an unknown strategy or invalid options with a ConfigError', () => {
    expect(() => createCollector({ strategy: 'fifo' } as unknown as CollectorConfig)).toThrow(ConfigError)
    expect(() => createCollector({ strategy: 'sequential', startKey: 0, maxCount: -1 })).toThrow(ConfigError)
    expect(() => createCollector({ strategy: 'match', fields: ['range'], inputs: 0 })).toThrow(ConfigError)
  })
})
