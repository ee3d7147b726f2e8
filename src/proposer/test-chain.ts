/**
 * Test helpers for the tx manager: raw JSON-RPC to anvil, a background block miner, anvil's
 * funded dev keys, and a logger that records.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { Hex } from 'viem'
import type { TxLogger } from './tx-manager.js'

/** anvil's default funded dev keys (from its default mnemonic). Public knowledge, dev only. */
export const ANVIL_KEYS: readonly Hex[] = [
  '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80',
  '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d',
  '0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a',
  '0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6',
  '0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a',
  '0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba',
]

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
