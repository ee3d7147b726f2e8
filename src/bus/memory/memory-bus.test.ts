import { describe, expect, it } from 'vitest'
import { busConformance } from '../conformance.js'
import { memoryBus } from './memory-bus.js'

busConformance('memory', () => Promise.resolve({ bus: memoryBus(), cleanup: () => Promise.resolve() }))

describe('memoryBus', () => {
  it('behavior: an id is deduplicated only within the dedupe window', async () => {
    const bus = memoryBus({ dedupeWindowMs: 50 })
    await expect(bus.publish('s', { id: 'a', data: 1 })).resolves.toEqual({ duplicate: false })
    await expect(bus.publish('s', { id: 'a', data: 1 })).resolves.toEqual({ duplicate: true })
    await new Promise((r) => setTimeout(r, 80))
    await expect(bus.publish('s', { id: 'a', data: 1 })).resolves.toEqual({ duplicate: false })
    await bus.close()
  })

  it('behavior: publish rejects data that is not JSON and names that other adapters would refuse', async () => {
    const bus = memoryBus()
    await expect(bus.publish('s', { id: 'a', data: { n: 1n } })).rejects.toMatchObject({ code: 'BUS_INVALID_ARGUMENT', retryable: false })
    await expect(bus.publish('a b', { id: 'a', data: 1 })).rejects.toMatchObject({ code: 'BUS_INVALID_ARGUMENT' })
    await expect(bus.publish('jobs.*', { id: 'a', data: 1 })).rejects.toMatchObject({ code: 'BUS_INVALID_ARGUMENT' })
    await expect(bus.consume('s', 'a.b', async () => {}, { signal: new AbortController().signal })).rejects.toMatchObject({ code: 'BUS_INVALID_ARGUMENT' })
    await bus.close()
  })

  it('behavior: publish rejects after close, and consumers stop', async () => {
    const bus = memoryBus()
    const stop = new AbortController()
    const done = bus.consume('s', 'g', async () => {}, { signal: stop.signal })
    await bus.close()
    await done
    await expect(bus.publish('s', { id: 'a', data: 1 })).rejects.toMatchObject({ code: 'BUS_CLOSED' })
  })

  it('behavior: a delivery carries its own copy of the data', async () => {
    const bus = memoryBus()
    const data = { list: [1] }
    await bus.publish('s', { id: 'a', data })
    data.list.push(2)
    const stop = new AbortController()
    const got: unknown[] = []
    const done = bus.consume('s', 'g', async (d) => {
      got.push(d.data)
      stop.abort()
    }, { signal: stop.signal })
    await done
    expect(got).toEqual([{ list: [1] }])
    await bus.close()
  })
})
