/**
 * Test helpers for the tx manager: raw JSON-RPC to anvil, a background block miner, anvil's
 * funded dev keys, and a logger that records.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { Hex } from 'viem'
import type { TxLogger } from './tx-manager.js'

/** anvil's default funded dev keys (public knowledge, dev only). */
export { ANVIL_DEV_KEYS as ANVIL_KEYS } from '../chain/load.js'

/** One JSON-RPC call; throws on an error answer. */
export async function rpcCall<T = unknown>(url: string, method: string, params: readonly unknown[] = []): Promise<T> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
    signal: AbortSignal.timeout(10_000),
  })
  const body = (await res.json()) as { result?: T; error?: { message: string } }
  if (body.error !== undefined) throw new Error(`${method}: ${body.error.message}`)
  return body.result as T
}

/** Mines a block every `intervalMs` until stopped; errors end the loop and are rethrown by `stop`. */
export function backgroundMiner(url: string, intervalMs: number): { stop(): Promise<void> } {
  const ctl = new AbortController()
  const loop = (async () => {
    while (!ctl.signal.aborted) {
      await rpcCall(url, 'evm_mine')
      await sleep(intervalMs, undefined, { signal: ctl.signal }).catch(() => undefined)
    }
  })()
  return {
    async stop() {
      ctl.abort()
      await loop
    },
  }
}

/** A logger that keeps every line, for asserting on what the manager reported. */
export function recordingLogger(): TxLogger & { lines: Array<{ level: 'info' | 'warn'; msg: string; obj: Record<string, unknown> }> } {
  const lines: Array<{ level: 'info' | 'warn'; msg: string; obj: Record<string, unknown> }> = []
  return {
    lines,
    info: (obj, msg) => void lines.push({ level: 'info', msg, obj }),
    warn: (obj, msg) => void lines.push({ level: 'warn', msg, obj }),
  }
}

/** Polls `cond` until it holds or `timeoutMs` passes. */
export async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(25)
  }
}
