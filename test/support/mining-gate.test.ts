import { createServer, type Server } from 'node:http'
import { createPublicClient, http, type Hex } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { afterEach, describe, expect, it } from 'vitest'
import { DEV_L2_CHAIN_ID, startAnvil, type AnvilInstance } from '../../src/chain/anvil.js'
import { ANVIL_DEV_KEYS } from '../../src/chain/load.js'
import { freePort } from '../../src/core/net.js'
import { miningGate, type MiningGate } from './mining-gate.js'

/** A fake node: answers every call after `delayMs(method)`, records overlaps of mining with other calls. */
async function fakeNode(delayMs: (method: string) => number): Promise<{ url: string; log: { method: string; start: number; end: number }[]; server: Server }> {
  const log: { method: string; start: number; end: number }[] = []
  const port = await freePort()
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const { method, id } = JSON.parse(Buffer.concat(chunks).toString()) as { method: string; id: number }
      const start = Date.now()
      const ms = delayMs(method)
      if (ms < 0) return // never answers: a hung node
      setTimeout(() => {
        log.push({ method, start, end: Date.now() })
        res.end(JSON.stringify({ jsonrpc: '2.0', id, result: '0x1' }))
      }, ms)
    })
  })
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()))
  return { url: `http://127.0.0.1:${port}`, log, server }
}

const call = async (url: string, method: string): Promise<{ status: number; body: { result?: string; error?: { message: string } } }> => {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params: [] }) })
  return { status: res.status, body: (await res.json()) as { result?: string; error?: { message: string } } }
}

describe('the L2 mining gate (chaos harness)', () => {
  const open: (MiningGate | Server | AnvilInstance)[] = []
  afterEach(async () => {
    for (const o of open.splice(0)) {
      if ('stop' in o) await o.stop()
      else if ('url' in o) await o.close()
      else {
        o.closeAllConnections()
        await new Promise<void>((r) => o.close(() => r()))
      }
    }
  })

  it('behavior: mining never overlaps another call at the node, and mining calls are spaced', async () => {
    const node = await fakeNode((m) => (m === 'evm_mine' ? 5 : 3 + Math.floor(Math.random() * 10)))
    const gate = await miningGate({ target: node.url, minMiningIntervalMs: 20 })
    open.push(gate, node.server)
    const calls: Promise<unknown>[] = []
    for (let i = 0; i < 60; i++) calls.push(call(gate.url, i % 6 === 0 ? 'evm_mine' : 'eth_getProof'))
    const answers = (await Promise.all(calls)) as { status: number }[]
    expect(answers.every((a) => a.status === 200)).toBe(true)
    const mines = node.log.filter((l) => l.method === 'evm_mine')
    const others = node.log.filter((l) => l.method !== 'evm_mine')
    expect(mines).toHaveLength(10)
    for (const m of mines) {
      const overlapping = others.filter((o) => o.start < m.end && m.start < o.end)
      expect(overlapping, `calls overlapping the mining call at ${m.start}`).toEqual([])
    }
    const sorted = [...mines].sort((a, b) => a.start - b.start)
    for (let i = 1; i < sorted.length; i++) expect((sorted[i] as { start: number }).start - (sorted[i - 1] as { end: number }).end).toBeGreaterThanOrEqual(19)
    expect(gate.stats()).toMatchObject({ writers: 10, readers: 50, timeouts: 0 })
  })

  it('behavior: a node that never answers gets a 504 after the deadline, and the gate reports the stuck call', async () => {
    const node = await fakeNode((m) => (m === 'eth_getProof' ? -1 : 1))
    const gate = await miningGate({ target: node.url, upstreamTimeoutMs: 300 })
    open.push(gate, node.server)
    const stuck = call(gate.url, 'eth_getProof')
    await new Promise((r) => setTimeout(r, 150))
    expect(gate.stuckFor()).toMatchObject({ method: 'eth_getProof' })
    const answer = await stuck
    expect(answer.status).toBe(504)
    expect(answer.body.error?.message).toContain('did not answer within 300 ms')
    expect(gate.stuckFor()).toBeUndefined()
    // The gate is not wedged by it: mining goes through afterwards.
    expect((await call(gate.url, 'evm_mine')).status).toBe(200)
  })

  it('regression: blocks mined while anvil_reorg runs no longer leave anvil 1.7.1 without blocks below its head', async () => {
    // Straight to anvil, an evm_mine that overlaps an anvil_reorg of depth d leaves the d block
    // numbers of the reorg without a block (eth_getBlockByNumber → null) while the head is above
    // them: 64 missing blocks in 40 such reorgs, measured; this test fails the same way with the
    // client pointed at l2.rpcUrl. That is the chaos run that stalled on OUTPUT_BLOCK_NOT_FOUND
    // for L2 block 4628, the first block of a depth-9 reorg at 4636.
    const l2 = await startAnvil({ chainId: DEV_L2_CHAIN_ID })
    open.push(l2)
    const gate = await miningGate({ target: l2.rpcUrl, minMiningIntervalMs: 5 })
    open.push(gate)
    const c = createPublicClient({ transport: http(gate.url, { timeout: 15_000, retryCount: 0 }), cacheTime: 0 })
    const raw = (method: string, params: unknown[]): Promise<unknown> => c.request({ method: method as never, params: params as never })
    await raw('anvil_mine', ['0x40'])
    const from = privateKeyToAccount(ANVIL_DEV_KEYS[8] as Hex).address
    let stop = false
    const miner = (async () => {
      while (!stop) await raw('evm_mine', [])
    })()
    for (let i = 0; i < 30; i++) {
      await new Promise((r) => setTimeout(r, 20))
      await raw('anvil_reorg', [9, [[{ from, to: '0x000000000000000000000000000000000000dEaD', value: `0x${(i + 1).toString(16)}` }, 0]]])
    }
    stop = true
    await miner
    const head = Number(await raw('eth_blockNumber', []))
    expect(head).toBeGreaterThan(64 + 30)
    const missing: number[] = []
    for (let n = 1; n <= head; n++) if ((await raw('eth_getBlockByNumber', [`0x${n.toString(16)}`, false])) === null) missing.push(n)
    expect(missing).toEqual([])
  })
})
