/**
 * Test fixture: a hostile JSON-RPC server in front of a real node. It forwards every request
 * and, while armed, spoils the answers to chosen methods: a block with a made-up hash, a
 * proof with a made-up storage root, a body cut in half, a body of many megabytes.
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

/** How an answer is spoiled. */
export type Hostility =
  /** `result.hash` replaced (a block). */
  | 'wrong-hash'
  /** `result.number` replaced by another block's (a block). */
  | 'wrong-number'
  /** `result.storageHash` replaced (an `eth_getProof` answer). */
  | 'wrong-storage'
  /** The body cut in half: not JSON. */
  | 'truncate'
  /** A valid JSON-RPC body with a result string of `hugeBytes`. */
  | 'huge'

/** A running hostile server. */
export interface HostileRpc {
  readonly url: string
  /** Spoils the next `times` answers to `method` (the ones whose params `match`, if given). */
  arm(method: string, how: Hostility, times: number, match?: (params: unknown[]) => boolean): void
  /** Armed spoilings not used yet. */
  remaining(): number
  /** Answers spoiled so far, by kind. */
  readonly spoiled: Record<Hostility, number>
  close(): Promise<void>
}

interface Armed {
  method: string
  how: Hostility
  left: number
  match?: ((params: unknown[]) => boolean) | undefined
}

/** Starts the server on a free port of 127.0.0.1 in front of `target` (an HTTP JSON-RPC URL). */
export async function hostileRpc(target: string, opts: { hugeBytes?: number } = {}): Promise<HostileRpc> {
  const armed: Armed[] = []
  const spoiled: Record<Hostility, number> = { 'wrong-hash': 0, 'wrong-number': 0, 'wrong-storage': 0, truncate: 0, huge: 0 }
  const hugeBytes = opts.hugeBytes ?? 32 * 1024 * 1024
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      void (async () => {
        const body = Buffer.concat(chunks).toString('utf8')
        const upstream = await fetch(target, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
        let text = await upstream.text()
        const call = JSON.parse(body) as { method?: string; params?: unknown[] }
        const a = armed.find((x) => x.left > 0 && x.method === call.method && (x.match === undefined || x.match(call.params ?? [])))
        if (a !== undefined) {
          const reply = JSON.parse(text) as { result?: Record<string, unknown> | null }
          // Spoil only real answers (a null "no such block" stays null and does not count).
          if (reply.result !== null && reply.result !== undefined) {
            a.left--
            spoiled[a.how]++
            switch (a.how) {
              case 'wrong-hash':
                reply.result.hash = `0x${'ab'.repeat(32)}`
                text = JSON.stringify(reply)
                break
              case 'wrong-number':
                reply.result.number = `0x${(Number(reply.result.number) + 1).toString(16)}`
                text = JSON.stringify(reply)
                break
              case 'wrong-storage':
                reply.result.storageHash = `0x${'cd'.repeat(32)}`
                text = JSON.stringify(reply)
                break
              case 'truncate':
                text = text.slice(0, Math.floor(text.length / 2))
                break
              case 'huge':
                text = `{"jsonrpc":"2.0","id":1,"result":"0x${'a'.repeat(hugeBytes)}"}`
                break
            }
          }
        }
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(text)
      })().catch(() => {
        res.destroy()
      })
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  const port = (server.address() as AddressInfo).port
  return {
    url: `http://127.0.0.1:${port}`,
    arm(method, how, times, match) {
      armed.push({ method, how, left: times, match })
    },
    remaining: () => armed.reduce((n, a) => n + a.left, 0),
    spoiled,
    async close() {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}
