/** Keeps the last `limit` bytes of a stream without holding all of it. */
export class TailBuffer {
  private chunks: Buffer[] = []
  private held = 0
  /** Bytes seen in total. */
  total = 0

  constructor(private readonly limit: number) {}

  push(chunk: Buffer): void {
    this.total += chunk.length
    if (this.limit <= 0) return
    this.chunks.push(chunk)
    this.held += chunk.length
    // Compact only once we hold twice the limit, so pushing stays amortised O(1).
    if (this.held > 2 * this.limit) {
      const all = Buffer.concat(this.chunks)
      const last = all.subarray(all.length - this.limit)
      this.chunks = [Buffer.from(last)]
      this.held = last.length
    }
  }

  /** Whether bytes were dropped from the front. */
  get truncated(): boolean {
    return this.total > this.limit
  }

  /** The tail as UTF-8, starting on a character boundary. */
  text(): string {
    if (this.limit <= 0) return ''
    let buf = Buffer.concat(this.chunks)
    if (buf.length > this.limit) buf = buf.subarray(buf.length - this.limit)
    let start = 0
    // Skip UTF-8 continuation bytes (10xxxxxx) a cut may have left at the front.
    if (this.truncated) while (start < buf.length && start < 4 && ((buf[start] ?? 0) & 0xc0) === 0x80) start++
    return buf.toString('utf8', start)
  }
}
