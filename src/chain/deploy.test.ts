import { decodeFunctionData, getAddress, keccak256, parseAbi, parseEventLogs, toHex, zeroAddress, type Address, type Hex } from 'viem'
import { deployContract, getBlock, readContract, simulateContract, waitForTransactionReceipt, writeContract } from 'viem/actions'
import { getL2Output } from 'viem/op-stack'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { iProofVerifierAbi, outputOracleAbi } from '../contracts/abis.js'
import {
  configurableVerifierAbi,
  configurableVerifierBytecode,
  silentVerifierAbi,
  silentVerifierBytecode,
} from '../contracts/fixtures/abis.js'
import { startAnvil, type AnvilInstance } from './anvil.js'
import {
  DeployError,
  deployMockVerifier,
  deployOracle,
  encodePublicInputs,
  mockCommitmentProof,
  type DeployOracleOptions,
  type DeployWalletClient,
} from './deploy.js'
import { devClients, expectRevert, type DevClients } from './deploy.fixture.js'

/**
 * The read side of OP's L2OutputOracle, written out from its interface (packages/contracts-bedrock
 * L2OutputOracle.sol), independent of our generated ABI: what OP tooling calls.
 */
const l2OutputOracleAbi = parseAbi([
  'struct OutputProposal { bytes32 outputRoot; uint128 timestamp; uint128 l2BlockNumber; }',
  'function getL2Output(uint256 _l2OutputIndex) view returns (OutputProposal)',
  'function getL2OutputIndexAfter(uint256 _l2BlockNumber) view returns (uint256)',
  'function latestOutputIndex() view returns (uint256)',
  'function latestBlockNumber() view returns (uint256)',
  'function nextBlockNumber() view returns (uint256)',
  'function SUBMISSION_INTERVAL() view returns (uint256)',
  'function L2_BLOCK_TIME() view returns (uint256)',
  'event OutputProposed(bytes32 indexed outputRoot, uint256 indexed l2OutputIndex, uint256 indexed l2BlockNumber, uint256 l1Timestamp)',
])

const root = (n: number): Hex => keccak256(toHex(`output-${n}`))
const PROGRAM_ID = keccak256(toHex('program'))
const CONFIG_HASH = keccak256(toHex('chain-config'))
const ANCHOR_BLOCK = 100n
const INTERVAL = 10n

interface Env {
  anvil: AnvilInstance
  dev: DevClients
  proposer: DeployWalletClient
  stranger: DeployWalletClient
}

async function env(chainId: number): Promise<Env> {
  const anvil = await startAnvil({ chainId })
  const dev = devClients(anvil.rpcUrl, chainId)
  return { anvil, dev, proposer: dev.wallet(0), stranger: dev.wallet(1) }
}

async function deployFixture(e: Env, which: 'configurable' | 'silent'): Promise<Address> {
  const hash =
    which === 'configurable'
      ? await deployContract(e.proposer, { abi: configurableVerifierAbi, bytecode: configurableVerifierBytecode, account: e.proposer.account, chain: e.dev.chain })
      : await deployContract(e.proposer, { abi: silentVerifierAbi, bytecode: silentVerifierBytecode, account: e.proposer.account, chain: e.dev.chain })
  const receipt = await waitForTransactionReceipt(e.dev.publicClient, { hash })
  if (!receipt.contractAddress) throw new Error('fixture not deployed')
  return receipt.contractAddress
}

function oracleOptions(e: Env, verifier: Address, over: Partial<DeployOracleOptions> = {}): DeployOracleOptions {
  return {
    anchorRoot: root(0),
    anchorBlock: ANCHOR_BLOCK,
    intervalBlocks: INTERVAL,
    verifier,
    programId: PROGRAM_ID,
    chainConfigHash: CONFIG_HASH,
    proposer: e.proposer.account.address,
    ...over,
  }
}

async function propose(e: Env, oracle: Address, outputRoot: Hex, l2Block: bigint, proof: Hex = '0x', from = e.proposer) {
  const hash = await writeContract(from, {
    address: oracle,
    abi: outputOracleAbi,
    functionName: 'proposeL2Output',
    args: [outputRoot, l2Block, proof],
    account: from.account,
    chain: e.dev.chain,
  })
  const receipt = await waitForTransactionReceipt(e.dev.publicClient, { hash })
  expect(receipt.status).toBe('success')
  return receipt
}

function simulatePropose(e: Env, oracle: Address, outputRoot: Hex, l2Block: bigint, proof: Hex = '0x', from = e.proposer) {
  return simulateContract(e.dev.publicClient, {
    address: oracle,
    abi: outputOracleAbi,
    functionName: 'proposeL2Output',
    args: [outputRoot, l2Block, proof],
    account: from.account,
  })
}

const read = <F extends 'latestBlockNumber' | 'latestOutputIndex' | 'nextBlockNumber' | 'nextOutputIndex'>(e: Env, oracle: Address, functionName: F) =>
  readContract(e.dev.publicClient, { address: oracle, abi: outputOracleAbi, functionName })

describe('OutputOracle on a dev chain (31337)', () => {
  let e: Env
  beforeAll(async () => {
    e = await env(31337)
  })
  afterAll(async () => {
    await e?.anvil.stop()
  })

  it('behavior: with the MockVerifier a valid proposal is stored, readable with OP L2OutputOracle getters and OP tooling, and emits OutputProposed', async () => {
    const mock = await deployMockVerifier(e.proposer, e.dev.publicClient)
    const { address: oracle } = await deployOracle(e.proposer, e.dev.publicClient, oracleOptions(e, mock.address))

    // Only the anchor so far: index 0.
    expect(await read(e, oracle, 'latestOutputIndex')).toBe(0n)
    expect(await read(e, oracle, 'latestBlockNumber')).toBe(ANCHOR_BLOCK)
    expect(await read(e, oracle, 'nextBlockNumber')).toBe(ANCHOR_BLOCK + INTERVAL)

    const receipt = await propose(e, oracle, root(1), 110n)
    const block = await getBlock(e.dev.publicClient, { blockNumber: receipt.blockNumber })

    // Read through OP's own ABI (as shipped by viem/op-stack), not ours.
    const opRead = <F extends 'latestOutputIndex' | 'latestBlockNumber' | 'nextBlockNumber' | 'SUBMISSION_INTERVAL' | 'L2_BLOCK_TIME'>(functionName: F) =>
      readContract(e.dev.publicClient, { address: oracle, abi: l2OutputOracleAbi, functionName })
    expect(await opRead('latestOutputIndex')).toBe(1n)
    expect(await opRead('latestBlockNumber')).toBe(110n)
    expect(await opRead('nextBlockNumber')).toBe(120n)
    expect(await opRead('SUBMISSION_INTERVAL')).toBe(INTERVAL)
    expect(await opRead('L2_BLOCK_TIME')).toBe(2n)
    const stored = await readContract(e.dev.publicClient, { address: oracle, abi: l2OutputOracleAbi, functionName: 'getL2Output', args: [1n] })
    expect(stored).toEqual({ outputRoot: root(1), timestamp: block.timestamp, l2BlockNumber: 110n })
    const anchor = await readContract(e.dev.publicClient, { address: oracle, abi: l2OutputOracleAbi, functionName: 'getL2Output', args: [0n] })
    expect(anchor).toMatchObject({ outputRoot: root(0), l2BlockNumber: ANCHOR_BLOCK })

    const [log, ...others] = parseEventLogs({ abi: l2OutputOracleAbi, logs: receipt.logs, eventName: 'OutputProposed' })
    expect(others).toHaveLength(0)
    expect(log?.args).toEqual({ outputRoot: root(1), l2OutputIndex: 1n, l2BlockNumber: 110n, l1Timestamp: block.timestamp })
    // The three indexed fields are topics, in OP's order.
    expect(log?.topics.slice(1)).toEqual([root(1), toHex(1n, { size: 32 }), toHex(110n, { size: 32 })])

    // viem's OP Stack action (getL2OutputIndexAfter + getL2Output) reads it unchanged.
    const viaViem = await getL2Output(e.dev.publicClient, { l2BlockNumber: 105n, l2OutputOracleAddress: oracle, chain: null })
    expect(viaViem).toEqual({ outputIndex: 1n, outputRoot: root(1), timestamp: block.timestamp, l2BlockNumber: 110n })

    // Gas of a proposal with the mock verifier (the second one, like every proposal after the first).
    const second = await propose(e, oracle, root(2), 120n)
    expect(second.gasUsed).toBeLessThan(120_000n)
  })

  it('behavior: a proposal that does not continue from the latest output is rejected with L2BlockNumberTooLow', async () => {
    const mock = await deployMockVerifier(e.proposer, e.dev.publicClient)
    const { address: oracle } = await deployOracle(e.proposer, e.dev.publicClient, oracleOptions(e, mock.address))
    // Inside the interval of the anchor, at the anchor, below the anchor.
    for (const block of [109n, 100n, 50n]) {
      expect(await expectRevert(simulatePropose(e, oracle, root(1), block), outputOracleAbi, 'L2BlockNumberTooLow')).toEqual([block, 110n])
    }
    await propose(e, oracle, root(1), 125n) // later than latest + interval is allowed
    for (const block of [125n, 134n, 110n]) {
      expect(await expectRevert(simulatePropose(e, oracle, root(2), block), outputOracleAbi, 'L2BlockNumberTooLow')).toEqual([block, 135n])
    }
    await propose(e, oracle, root(2), 135n)
    expect(await read(e, oracle, 'latestBlockNumber')).toBe(135n)
    await expectRevert(simulatePropose(e, oracle, `0x${'00'.repeat(32)}`, 200n), outputOracleAbi, 'EmptyOutputRoot')
    await expectRevert(simulatePropose(e, oracle, root(3), 1n << 128n), outputOracleAbi, 'L2BlockNumberOverflow')
  })

  it('behavior: only the proposer may propose', async () => {
    const mock = await deployMockVerifier(e.proposer, e.dev.publicClient)
    const { address: oracle } = await deployOracle(e.proposer, e.dev.publicClient, oracleOptions(e, mock.address))
    const args = await expectRevert(simulatePropose(e, oracle, root(1), 110n, '0x', e.stranger), outputOracleAbi, 'NotProposer')
    expect(args).toEqual([e.stranger.account.address])
    expect(await read(e, oracle, 'latestOutputIndex')).toBe(0n)
  })

  it('behavior: a verifier answering false rejects the proposal with InvalidProof', async () => {
    const verifier = await deployFixture(e, 'configurable')
    const { address: oracle } = await deployOracle(e.proposer, e.dev.publicClient, oracleOptions(e, verifier))
    await writeAndWait(e, verifier, 'setResult', [false])
    await expectRevert(simulatePropose(e, oracle, root(1), 110n), outputOracleAbi, 'InvalidProof')
    await writeAndWait(e, verifier, 'setResult', [true])
    await propose(e, oracle, root(1), 110n)
  })

  it('behavior: the verifier receives exactly the documented 12-word layout, built from the oracle\'s own state', async () => {
    const verifier = await deployFixture(e, 'configurable')
    const { address: oracle } = await deployOracle(e.proposer, e.dev.publicClient, oracleOptions(e, verifier))
    const first = await propose(e, oracle, root(1), 110n, '0x1234')

    // Second transition: its previous root and block must come from storage (output 1).
    const expected = encodePublicInputs({
      previousOutputRoot: root(1),
      newOutputRoot: root(2),
      previousL2Block: 110n,
      newL2Block: 130n,
      programId: PROGRAM_ID,
      chainConfigHash: CONFIG_HASH,
    })
    expect(expected).toHaveLength(12)
    expect(expected.slice(4, 8)).toEqual([toHex(0n, { size: 32 }), toHex(110n, { size: 32 }), toHex(0n, { size: 32 }), toHex(130n, { size: 32 })])
    expect(expected[0]).toBe(`0x${'00'.repeat(16)}${root(1).slice(2, 34)}`)
    expect(expected[1]).toBe(`0x${'00'.repeat(16)}${root(1).slice(34)}`)
    // The contract's own view agrees.
    const onChain = await readContract(e.dev.publicClient, { address: oracle, abi: outputOracleAbi, functionName: 'computePublicInputs', args: [root(1), root(2), 110n, 130n] })
    expect(onChain).toEqual(expected)

    // The verifier accepts only this exact (proof, inputs) pair…
    await writeAndWait(e, verifier, 'expect', ['0xbeef', expected])
    await expectRevert(simulatePropose(e, oracle, root(2), 130n, '0xbeee'), outputOracleAbi, 'InvalidProof')
    await expectRevert(simulatePropose(e, oracle, root(3), 130n, '0xbeef'), outputOracleAbi, 'InvalidProof')
    await expectRevert(simulatePropose(e, oracle, root(2), 131n, '0xbeef'), outputOracleAbi, 'InvalidProof')
    const receipt = await propose(e, oracle, root(2), 130n, '0xbeef')

    // …and the call trace shows what it was called with.
    const trace = (await e.dev.publicClient.request({
      method: 'debug_traceTransaction' as 'eth_call',
      params: [receipt.transactionHash, { tracer: 'callTracer' }] as never,
    })) as unknown as { calls?: { to: string; input: Hex; type: string }[] }
    const calls = (trace.calls ?? []).filter((c) => c.to.toLowerCase() === verifier.toLowerCase())
    expect(calls).toHaveLength(1)
    expect(calls[0]?.type).toBe('STATICCALL')
    const decoded = decodeFunctionData({ abi: iProofVerifierAbi, data: calls[0]!.input })
    expect(decoded.functionName).toBe('verify')
    expect(decoded.args).toEqual(['0xbeef', expected])
    expect(first.status).toBe('success')
  })

  it('behavior: MockVerifier modes — a proof hash, or a commitment to the public inputs', async () => {
    const byHash = await deployMockVerifier(e.proposer, e.dev.publicClient, { mode: 'proof-hash', expectedProofHash: keccak256('0xc0ffee') })
    const o1 = (await deployOracle(e.proposer, e.dev.publicClient, oracleOptions(e, byHash.address))).address
    await expectRevert(simulatePropose(e, o1, root(1), 110n, '0xc0ffef'), outputOracleAbi, 'InvalidProof')
    await propose(e, o1, root(1), 110n, '0xc0ffee')

    const committed = await deployMockVerifier(e.proposer, e.dev.publicClient, { mode: 'public-inputs-commitment' })
    const o2 = (await deployOracle(e.proposer, e.dev.publicClient, oracleOptions(e, committed.address))).address
    const inputs = encodePublicInputs({ previousOutputRoot: root(0), newOutputRoot: root(1), previousL2Block: 100n, newL2Block: 110n, programId: PROGRAM_ID, chainConfigHash: CONFIG_HASH })
    await expectRevert(simulatePropose(e, o2, root(1), 111n, mockCommitmentProof(inputs)), outputOracleAbi, 'InvalidProof')
    await propose(e, o2, root(1), 110n, mockCommitmentProof(inputs))
  })

  it('behavior: constructor arguments are checked', async () => {
    const mock = await deployMockVerifier(e.proposer, e.dev.publicClient)
    const cases: [Partial<DeployOracleOptions>, string][] = [
      [{ intervalBlocks: 0n }, 'ZeroSubmissionInterval'],
      [{ proposer: zeroAddress }, 'ZeroProposer'],
      [{ anchorRoot: `0x${'00'.repeat(32)}` }, 'EmptyOutputRoot'],
      [{ verifier: e.stranger.account.address }, 'VerifierNotContract'],
    ]
    for (const [over, errorName] of cases) {
      const err = await deployOracle(e.proposer, e.dev.publicClient, oracleOptions(e, mock.address, over)).catch((x: unknown) => x)
      expect(err).toBeInstanceOf(DeployError)
      expect(err).toMatchObject({ code: 'CONTRACT_DEPLOY_REVERTED', retryable: false, details: { errorName } })
    }
  })
})

describe('OutputOracle on a non-dev chain (chain id 5)', () => {
  let e: Env
  beforeAll(async () => {
    e = await env(5)
  })
  afterAll(async () => {
    await e?.anvil.stop()
  })

  it('behavior: the MockVerifier is refused at deployment with MockVerifierOnNonDevChain', async () => {
    const mock = await deployMockVerifier(e.proposer, e.dev.publicClient)
    const err = await deployOracle(e.proposer, e.dev.publicClient, oracleOptions(e, mock.address)).catch((x: unknown) => x)
    expect(err).toBeInstanceOf(DeployError)
    expect(err).toMatchObject({ code: 'CONTRACT_DEPLOY_REVERTED', details: { errorName: 'MockVerifierOnNonDevChain', args: [getAddress(mock.address), '5'] } })
    expect((err as Error).message).toMatch(/only allowed on dev chain ids/)
  })

  it('behavior: a verifier that turns into a mock after deployment is refused at proposal time', async () => {
    const verifier = await deployFixture(e, 'configurable')
    const { address: oracle } = await deployOracle(e.proposer, e.dev.publicClient, oracleOptions(e, verifier))
    await propose(e, oracle, root(1), 110n)
    await writeAndWait(e, verifier, 'setMock', [true])
    const args = await expectRevert(simulatePropose(e, oracle, root(2), 120n), outputOracleAbi, 'MockVerifierOnNonDevChain')
    expect(args).toEqual([getAddress(verifier), 5n])
  })

  it('behavior: a verifier without isMock() (like a generated UltraHonk verifier) is accepted', async () => {
    const verifier = await deployFixture(e, 'silent')
    const { address: oracle } = await deployOracle(e.proposer, e.dev.publicClient, oracleOptions(e, verifier))
    await propose(e, oracle, root(1), 110n)
    expect(await read(e, oracle, 'latestBlockNumber')).toBe(110n)
  })
})

async function writeAndWait(e: Env, address: Address, functionName: 'setResult' | 'setMock' | 'expect', args: readonly unknown[]): Promise<void> {
  const hash = await writeContract(e.proposer, {
    address,
    abi: configurableVerifierAbi,
    functionName,
    args: args as never,
    account: e.proposer.account,
    chain: e.dev.chain,
  })
  const receipt = await waitForTransactionReceipt(e.dev.publicClient, { hash })
  expect(receipt.status).toBe('success')
}
