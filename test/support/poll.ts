/** Thrown inside an {@link until} check to stop waiting at once (e.g. the process under test exited). */
export class GiveUp extends Error {}

/**
 * Polls `fn` every `everyMs` until it returns a value (not `undefined`) and resolves with it.
 * An error thrown by `fn` counts as "not yet" (the last one is quoted on timeout), except
 * {@link GiveUp}, which ends the wait at once.
 */
export async function until<T>(what: string, fn: () => Promise<T | undefined>, ms = 90_000, everyMs = 200): Promise<T> {
  const end = Date.now() + ms
  let last: unknown
  for (;;) {
    try {
      const v = await fn()
      if (v !== undefined) return v
    } catch (err) {
      if (err instanceof GiveUp) throw err
      last = err
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}`)
    await new Promise((r) => setTimeout(r, everyMs))
  }
}
