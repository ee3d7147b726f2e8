import { hexToBytes } from 'viem'
import { beforeAll, describe, expect, it } from 'vitest'
import { prepareRange } from '../backends/builtin/range-program.js'
import { checkedHeaderRlp } from '../chain/header.js'
import { main } from '../cli/main.js'
import { benchCrsPoints } from '../cli/bench-prover.js'
import { median, nativeRangeStatement } from './run.js'
import { mineDevBlocks, type DevBlocks } from './dev-blocks.js'

/** The benchmark's native baseline must compute what the range circuit proves, on real blocks. */
describe('prover bench: native baseline and command line', () => {
  let set: DevBlocks
  beforeAll(async () => {
    set = await mineDevBlocks(3)
  })

  const native = (blocks: DevBlocks['blocks']): ReturnType<typeof nativeRangeStatement> => {
    const first = blocks[0]
    const last = blocks[blocks.length - 1]
    if (!first?.parentOutput || !last) throw new Error('no blocks')
    const p = first.parentOutput
    return nativeRangeStatement(
      blocks.map((b) => checkedHeaderRlp(b.block)),
      { stateRoot: hexToBytes(p.stateRoot), storageRoot: hexToBytes(p.messagePasserStorageRoot), blockHash: hexToBytes(p.blockHash) },
      hexToBytes(last.messagePasser.storageHash),
      first.number,
    )
  }

  it('mined blocks chain, carry withdrawals (non-empty message-passer storage) and parent output inputs', () => {
    expect(set.blocks).toHaveLength(3)
    for (const [i, b] of set.blocks.entries()) {
      expect(b.parentOutput).toBeDefined()
      if (i > 0) expect(b.block.parentHash).toBe(set.blocks[i - 1]?.hash)
      expect(b.block.transactions).toHaveLength(2)
    }
    expect(set.blocks[1]?.messagePasser.storageHash).not.toBe(set.blocks[0]?.messagePasser.storageHash)
  })

  it('computes the statement the range program proves (the host\'s expected public values)', () => {
    for (const blocks of [set.blocks.slice(0, 1), set.blocks.slice(0, 3), set.blocks.slice(1, 3)]) {
      const expected = prepareRange(3, { blocks, chainConfigHash: set.chainConfigHash }).expected
      expect(native(blocks)).toEqual({ previousOutputRoot: expected.previousOutputRoot, outputRoot: expected.outputRoot })
    }
  })

  it('fails on a broken header chain, as the circuit does', () => {
    const [a, b, c] = set.blocks
    if (!a || !b || !c) throw new Error('no blocks')
    expect(() => native([a, c])).toThrow(/broken header chain/)
  })

  it('medians and CRS sizes', () => {
    expect(median([3, 1, 2])).toBe(2)
    expect(median([4, 1, 3, 2])).toBe(2.5)
    expect(benchCrsPoints(1)).toBe(2 ** 20 + 1)
    expect(benchCrsPoints(2)).toBe(2 ** 21 + 1)
  })

  it('`proofline bench prover` refuses bad sizes before any work (exit code 3)', async () => {
    expect(await main(['bench', 'prover', '--runs', '0'])).toBe(3)
    expect(await main(['bench', 'prover', '--aggregate-k', 'two'])).toBe(3)
  })
})
