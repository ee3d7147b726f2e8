/**
 * `npx tsx test/chaos/anvil-stress.ts [--gate on|off] [--minutes 3] [--readers 6] [--seed 1]`
 *
 * Measures whether the dev L2 anvil survives the chaos run's access pattern: the load mining as
 * fast as it can (a transaction per block, plus empty blocks), concurrent state lookups of recent
 * blocks as the watcher and proposer make them (block, receipts, `eth_getProof`), and a reorg
 * of 1–64 blocks every 15 s. With `--gate on` every call goes through the chaos harness's mining
 * gate (test/support/mining-gate.ts); with `off`, straight to anvil. Prints one JSON line: blocks
 * mined, lookups answered, and whether (and when) anvil stopped answering `eth_blockNumber` for
 * 30 s. docs/reliability.md records what it measured.
 */
import { createPublicClient, http, type Hex } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { DEV_L2_CHAIN_ID, startAnvil } from '../../src/chain/anvil.js'
import { ANVIL_DEV_KEYS, installMessagePasser, startLoad } from '../../src/chain/load.js'
import { mulberry32 } from '../../src/core/random.js'
import { miningGate } from '../support/mining-gate.js'

const arg = (name: string, dflt: string): string => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? (process.argv[i + 1] ?? dflt) : dflt
}
const useGate = arg('gate', 'on') === 'on'
const minutes = Number(arg('minutes', '3'))
const nReaders = Number(arg('readers', '6'))
const rand = mulberry32(Number(arg('seed', '1')))
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

const l2 = await startAnvil({ chainId: DEV_L2_CHAIN_ID })
const gate = useGate ? await miningGate({ target: l2.rpcUrl, minMiningIntervalMs: 50 }) : undefined
const url = gate?.url ?? l2.rpcUrl
const client = createPublicClient({ transport: http(url, { timeout: 15_000, retryCount: 0 }), cacheTime: 0 })
const raw = (method: string, params: unknown[]): Promise<unknown> => client.request({ method: method as never, params: params as never })
await installMessagePasser(client)
await raw('anvil_mine', ['0x1'])

const t0 = Date.now()
const end = t0 + minutes * 60_000
const abort = new AbortController()
let hungAtMs: number | null = null
let lookups = 0
let lookupErrors = 0
let reorgs = 0
const stop = (): boolean => Date.now() >= end || hungAtMs !== null

const load = await startLoad({ rpcUrl: url, privateKeys: ANVIL_DEV_KEYS.slice(1, 4), txPerBlock: 1, blockIntervalMs: 0, seed: 7, signal: abort.signal })

const empties = (async () => {
  while (!stop()) {
    await raw('anvil_mine', ['0x2']).catch(() => undefined)
    await sleep(100)
  }
})()

const readers = Array.from({ length: nReaders }, async () => {
  while (!stop()) {
    try {
      const head = Number(await raw('eth_blockNumber', []))
      const n = Math.max(1, head - Math.floor(rand() * 64))
      const b = (await raw('eth_getBlockByNumber', [`0x${n.toString(16)}`, false])) as { hash: Hex } | null
      if (b !== null) {
        await raw('eth_getBlockReceipts', [b.hash])
        await raw('eth_getProof', ['0x4200000000000000000000000000000000000016', [], { blockHash: b.hash }])
      }
      lookups++
    } catch {
      lookupErrors++
    }
  }
})

const reorger = (async () => {
  const from = privateKeyToAccount(ANVIL_DEV_KEYS[8] as Hex).address
  while (!stop()) {
    await sleep(15_000)
    if (stop()) break
    const head = Number(await raw('eth_blockNumber', []).catch(() => 0))
    const depth = Math.min(head - 2, 1 + Math.floor(rand() * 64))
    if (depth < 1) continue
    await raw('anvil_reorg', [depth, [[{ from, to: '0x000000000000000000000000000000000000dEaD', value: '0x1' }, 0]]]).then(
      () => reorgs++,
      () => undefined,
    )
  }
})()

// The probe goes straight to anvil: is the node itself answering?
let answeredAt = Date.now()
while (!stop()) {
  await sleep(2_000)
  const ok = await fetch(l2.rpcUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_blockNumber', params: [] }),
    signal: AbortSignal.timeout(10_000),
  }).then(
    () => true,
    () => false,
  )
  if (ok) answeredAt = Date.now()
  else if (Date.now() - answeredAt > 30_000) hungAtMs = Date.now() - t0
}
abort.abort()
await Promise.race([Promise.all([load.done, empties, reorger, ...readers]), sleep(20_000)])
const stats = load.stats()
const head = hungAtMs === null ? Number(await raw('eth_blockNumber', [])) : -1
process.stdout.write(
  `${JSON.stringify({ gate: useGate, minutes, readers: nReaders, head, blocksMinedByLoad: stats.blocksMined, txSent: stats.sent, lookups, lookupErrors, reorgs, hungAtMs, gateStats: gate?.stats() })}\n`,
)
await gate?.close()
await l2.stop()
process.exit(hungAtMs === null ? 0 : 1)
