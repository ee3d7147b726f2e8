/**
 * Test helpers of the built-in backend: real L2 blocks from an anvil as range inputs, and the
 * backend over the machine's shared cache (CRS, compiled circuits, keys), so repeated runs
 * only prove.
 */
import { join } from 'node:path'
import type { Hex } from 'viem'
import { installMessagePasser } from '../../chain/load.js'
import { startTestAnvil, type TestAnvil } from '../../chain/test-anvil.js'
import { fetchBlockTrace, fetchOutputRootInputs, parseRpcBlock, type BlockTraceArtifact } from '../../chain/traces.js'
import { withCacheLock } from '../crs/cache-lock.js'
import { defaultCacheDir, resolveCrs } from '../crs/resolve.js'
import { builtinBackend, type BuiltinBackend } from './backend.js'

/** CRS points the test circuits need: the K=2 aggregate is 2^21 gates. */
export const TEST_CRS_POINTS = 2 ** 21 + 1

/** An anvil L2 with `blocks` mined blocks (each with a withdrawal-free transfer), and their trace artifacts with parent output inputs. */
export async function anvilL2Blocks(count: number): Promise<{ anvil: TestAnvil; blocks: BlockTraceArtifact[] }> {
  const anvil = await startTestAnvil({ chainId: 901 })
  await installMessagePasser(anvil.rpc)
  for (let i = 0; i < count; i++) await anvil.call('evm_mine', [])
  const blocks: BlockTraceArtifact[] = []
  for (let n = 1; n <= count; n++) {
    const block = parseRpcBlock(await anvil.call('eth_getBlockByNumber', [`0x${n.toString(16)}`, true]))
    if (block === null) throw new Error(`anvil has no block ${n}`)
    const trace = await fetchBlockTrace(anvil.rpc, block, { traces: 'none' })
    trace.parentOutput = await fetchOutputRootInputs(anvil.rpc, block.parentHash)
    blocks.push(trace)
  }
  return { anvil, blocks }
}

/** The shared cache folder of tests (`$PROOFLINE_CACHE_DIR` or `~/.cache/proofline`). */
export function testCacheDir(): string {
  return defaultCacheDir()
}

/** A built-in backend over the shared cache and the machine's development CRS (generated once). */
export async function testBackend(opts: { blocksPerRange?: number; aggregateK?: number } = {}): Promise<BuiltinBackend> {
  const cacheDir = testCacheDir()
  const crs = await resolveCrs({ kind: 'dev', points: TEST_CRS_POINTS, cacheDir })
  return builtinBackend({ crs, cacheDir, blocksPerRange: opts.blocksPerRange ?? 2, aggregateK: opts.aggregateK ?? 2 })
}

/**
 * Runs `fn` alone on this machine among heavy proving tests (a lock in the shared cache): test
 * files run in parallel workers, and two real provers at once on 2 cores only slow both down.
 */
export function serialHeavy<T>(fn: () => Promise<T>): Promise<T> {
  return withCacheLock(join(testCacheDir(), 'heavy-tests'), fn)
}

/** A chain config hash for tests. */
export const TEST_CHAIN_CONFIG: Hex = '0x1111111111111111111111111111111111111111111111111111111111111111'
