/** An item waiting in a {@link GroupCommit} queue; the flush settles it. */
export interface Rejectable {
  reject(err: unknown): void
}

/**
 * Group commit: items added while a flush runs are flushed together by the next one, so a
 * burst costs a few round trips instead of one per item, and a lone item waits for nothing.
 */
export class GroupCommit<I extends Rejectable> {
  readonly #flush: (items: I[]) => Promise<void>
  readonly #maxBatch: number
  #queue: I[] = []
  #running: Promise<void> | null = null

  /** `flush` settles every item it is given; if it throws, the items it left unsettled are rejected. */
  constructor(flush: (items: I[]) => Promise<void>, maxBatch: number) {
    this.#flush = flush
    this.#maxBatch = maxBatch
  }

  /** Queues an item; the caller awaits the promise the item settles. */
  add(item: I): void {
    this.#queue.push(item)
    this.#running ??= this.#drain()
  }

  /** Resolves when everything queued so far has been flushed. */
  async idle(): Promise<void> {
    while (this.#running !== null) await this.#running
  }

  async #drain(): Promise<void> {
    // One microtask lets the rest of a synchronous burst join the first batch.
    await Promise.resolve()
    while (this.#queue.length > 0) {
      const batch = this.#queue.splice(0, this.#maxBatch)
      try {
        await this.#flush(batch)
      } catch (err) {
        // Settling twice is a no-op for a promise, so rejecting all is safe.
        for (const item of batch) item.reject(err)
      }
    }
    this.#running = null
  }
}
