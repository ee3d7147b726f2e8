import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { AnvilError, DEV_CHAIN_IDS, isDevChain, startAnvil } from './anvil.js'

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

async function waitUntil(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (cond()) return true
    await new Promise((r) => setTimeout(r, 50))
  }
  return cond()
}

async function chainIdOf(rpcUrl: string): Promise<number> {
  const res = await fetch(rpcUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_chainId', params: [] }),
  })
  return Number(((await res.json()) as { result: string }).result)
}

describe('dev chain ids', () => {
  it('behavior: 31337, 900, 901 and 1337 are dev chains; mainnet, OP and chain 5 are not', () => {
    for (const id of [31337, 900, 901, 1337, 900n]) expect(isDevChain(id)).toBe(true)
    for (const id of [1, 10, 5, 11155111, 8453]) expect(isDevChain(id)).toBe(false)
  })

  it('behavior: the TypeScript list equals the list hard-coded in DevChains.sol', () => {
    const sol = readFileSync(fileURLToPath(new URL('../contracts/DevChains.sol', import.meta.url)), 'utf8')
    const body = /function isDevChain[\s\S]*?\{([\s\S]*?)\}/.exec(sol)?.[1] ?? ''
    const ids = [...body.matchAll(/chainId == (\d+)/g)].map((m) => Number(m[1]))
    expect([...ids].sort()).toEqual([...DEV_CHAIN_IDS].sort())
  })
})

describe('startAnvil', () => {
  it('behavior: two chains start on distinct free ports with their chain ids and stop for good', async () => {
    const [l1, l2] = await Promise.all([startAnvil({ chainId: 900 }), startAnvil({ chainId: 901 })])
    try {
      expect(l1.port).not.toBe(l2.port)
      expect(await chainIdOf(l1.rpcUrl)).toBe(900)
      expect(await chainIdOf(l2.rpcUrl)).toBe(901)
      expect(alive(l1.pid)).toBe(true)
    } finally {
      await Promise.all([l1.stop(), l2.stop()])
    }
    expect(alive(l1.pid)).toBe(false)
    expect(alive(l2.pid)).toBe(false)
    await l1.stop() // idempotent
    await expect(chainIdOf(l1.rpcUrl)).rejects.toThrow()
  })

  it('behavior: past states live in a folder of its own that is removed when it stops; folders of dead owners are swept', async () => {
    const stale = join(tmpdir(), 'proofline-anvil-999999999-test')
    await mkdir(stale, { recursive: true })
    const a = await startAnvil({ chainId: 31337 })
    expect(existsSync(stale)).toBe(false)
    try {
      expect(a.stateDir.startsWith(join(tmpdir(), `proofline-anvil-${process.pid}-`))).toBe(true)
      expect(existsSync(a.stateDir)).toBe(true)
      await chainIdOf(a.rpcUrl)
    } finally {
      await a.stop()
    }
    expect(existsSync(a.stateDir)).toBe(false)
  })

  it('behavior: a taken port fails the start with ANVIL_START_FAILED and anvil output in details', async () => {
    const first = await startAnvil({ chainId: 31337 })
    try {
      const err = await startAnvil({ chainId: 31337, port: first.port }).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(AnvilError)
      expect((err as AnvilError).code).toBe('ANVIL_START_FAILED')
      expect((err as AnvilError).details.exit).not.toBeNull()
      expect(await chainIdOf(first.rpcUrl)).toBe(31337)
    } finally {
      await first.stop()
    }
  })

  it('behavior: an abort before ready rejects with the reason; an abort afterwards stops the chain', async () => {
    const early = new AbortController()
    const starting = startAnvil({ chainId: 31337, signal: early.signal })
    early.abort(new Error('cancelled by test'))
    await expect(starting).rejects.toThrow('cancelled by test')

    const later = new AbortController()
    const chain = await startAnvil({ chainId: 31337, signal: later.signal })
    later.abort()
    expect(await waitUntil(() => !alive(chain.pid), 5_000)).toBe(true)
  })

  it('behavior: block time, steps tracing and extra args reach anvil', async () => {
    const chain = await startAnvil({ chainId: 31337, blockTimeSec: 1, stepsTracing: true, extraArgs: ['--hardfork', 'cancun'] })
    try {
      const rpc = async (method: string, params: unknown[] = []): Promise<unknown> => {
        const res = await fetch(chain.rpcUrl, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
        })
        return ((await res.json()) as { result: unknown }).result
      }
      const n0 = Number(await rpc('eth_blockNumber'))
      expect(await waitUntil(() => false, 2_300)).toBe(false)
      expect(Number(await rpc('eth_blockNumber'))).toBeGreaterThan(n0)
      const config = (await rpc('anvil_nodeInfo')) as { hardFork?: string }
      expect(String(config.hardFork).toLowerCase()).toContain('cancun')
    } finally {
      await chain.stop()
    }
  })

  it.each([
    ['SIGKILL of the parent', 'kill'],
    ['process.exit() without stop()', 'exit'],
  ])('behavior: anvil does not outlive its parent (%s)', async (_name, mode) => {
    const dir = mkdtempSync(join(tmpdir(), 'proofline-anvil-'))
    const script = join(dir, 'parent.mts')
    const anvilModule = fileURLToPath(new URL('./anvil.ts', import.meta.url))
    writeFileSync(
      script,
      `import { startAnvil } from ${JSON.stringify(anvilModule)}\n` +
        `const a = await startAnvil({ chainId: 31337 })\n` +
        `process.stdout.write(String(a.pid) + '\\n')\n` +
        `if (process.argv[2] === 'exit') setTimeout(() => process.exit(0), 100)\n` +
        `else setInterval(() => {}, 1000)\n`,
    )
    const parent = spawn(process.execPath, ['--import', 'tsx', script, mode], { stdio: ['ignore', 'pipe', 'inherit'] })
    const pid = await new Promise<number>((resolve, reject) => {
      let out = ''
      parent.stdout.on('data', (c: Buffer) => {
        out += c.toString()
        const m = /^(\d+)\n/.exec(out)
        if (m?.[1]) resolve(Number(m[1]))
      })
      parent.once('exit', (code) => reject(new Error(`parent exited early (${code}) before printing the pid`)))
    })
    expect(alive(pid)).toBe(true)
    if (mode === 'kill') parent.kill('SIGKILL')
    const gone = await waitUntil(() => !alive(pid), 5_000)
    if (!gone) process.kill(pid, 'SIGKILL')
    expect(gone).toBe(true)
  })
})
