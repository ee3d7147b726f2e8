/**
 * Live progress on a terminal: one line redrawn in place when the stream is a TTY, a plain
 * line per update otherwise (logs, CI, tests), so scripts still read it line by line.
 */
export interface ProgressLine {
  /** True when the line is redrawn in place (a terminal). */
  readonly live: boolean
  update(text: string): void
  /** Ends the live line (the next output starts on a fresh line). */
  done(): void
}

export function progressLine(stream: NodeJS.WriteStream = process.stderr): ProgressLine {
  const live = stream.isTTY
  let drawn = false
  return {
    live,
    update(text) {
      if (!live) {
        stream.write(`${text}\n`)
        return
      }
      const width = stream.columns > 0 ? stream.columns - 1 : 200
      stream.write(`\r\x1b[2K${text.length > width ? `${text.slice(0, width - 1)}…` : text}`)
      drawn = true
    },
    done() {
      if (live && drawn) stream.write('\n')
      drawn = false
    },
  }
}

/** A text bar of `fraction` (clamped to 0…1), e.g. `[#######-------]`. */
export function bar(fraction: number, width = 20): string {
  const f = Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0
  const n = Math.round(f * width)
  return `[${'#'.repeat(n)}${'-'.repeat(width - n)}]`
}

/**
 * Redraws `render()` on `line` every `intervalMs` until stopped (one render at a time; a failed
 * render is skipped). Returns the stop function, which ends the line.
 */
export function watchProgress(line: ProgressLine, render: () => Promise<string>, intervalMs: number): () => void {
  let busy = false
  let stopped = false
  const tick = (): void => {
    if (busy || stopped) return
    busy = true
    render()
      .then((text) => {
        if (!stopped) line.update(text)
      })
      .catch(() => undefined)
      .finally(() => (busy = false))
  }
  tick()
  const timer = setInterval(tick, intervalMs)
  return () => {
    stopped = true
    clearInterval(timer)
    line.done()
  }
}
