import {
  BaseError,
  concatHex,
  decodeErrorResult,
  keccak256,
  numberToHex,
  pad,
  size,
  sliceHex,
  type Abi,
  type Account,
  type Address,
  type Chain,
  type Client,
  type Hex,
  type PublicClient,
  type Transport,
  type WalletClient,
} from 'viem'
import { deployContract, waitForTransactionReceipt } from 'viem/actions'
import { ProoflineError } from '../core/errors.js'
import { mockVerifierAbi, outputOracleAbi, ultraHonkAdapterAbi } from '../contracts/abis.js'
import { l2ToL1MessagePasserDeployedBytecode, mockVerifierBytecode, outputOracleBytecode, ultraHonkAdapterBytecode } from '../contracts/bytecode.js'
import { L2_TO_L1_MESSAGE_PASSER } from './output-root.js'

/** A wallet client that can sign (local or JSON-RPC account). */
export type DeployWalletClient = WalletClient<Transport, Chain | undefined, Account>

/** Where a contract went and what deploying it cost. */
export interface DeployResult {
  address: Address
  txHash: Hex
  blockNumber: bigint
  gasUsed: bigint
}

/** A deployment failed: reverted (not retryable: fix the arguments) or could not be sent/confirmed. */
export class DeployError extends ProoflineError {
  constructor(code: 'CONTRACT_DEPLOY_REVERTED' | 'CONTRACT_DEPLOY_FAILED', message: string, opts: { retryable: boolean; details?: Record<string, unknown>; cause?: unknown }) {
    super(code, message, opts)
  }
}

/** Options of `deployOracle`; names follow the OutputOracle constructor. */
export interface DeployOracleOptions {
  /** Output root of the starting L2 block (becomes output index 0). */
  anchorRoot: Hex
  /** The starting L2 block. */
  anchorBlock: bigint
  /** Minimum L2 blocks between two outputs. */
  intervalBlocks: bigint
  /** L2 block time, read by OP tooling to estimate when the next output lands. @default 2n */
  l2BlockTimeSec?: bigint
  /** The verifier contract. A mock verifier is refused on non-dev chain ids. */
  verifier: Address
  /** Program / vkey id bound into every proof's public inputs (bytes32). */
  programId: Hex
  /** Chain config hash bound into every proof's public inputs (bytes32). */
  chainConfigHash: Hex
  /** The only address allowed to propose. */
  proposer: Address
  /** Confirmations to wait for. @default 1 */
  confirmations?: number
}

/** How a MockVerifier decides (see src/contracts/MockVerifier.sol). */
export type MockVerifierMode = 'accept-all' | 'proof-hash' | 'public-inputs-commitment'

const MOCK_MODES: Record<MockVerifierMode, number> = { 'accept-all': 0, 'proof-hash': 1, 'public-inputs-commitment': 2 }

/** Options of `deployMockVerifier`. */
export interface DeployMockVerifierOptions {
  /** @default 'accept-all' */
  mode?: MockVerifierMode
  /** Required for mode 'proof-hash': keccak256 of the one proof accepted. */
  expectedProofHash?: Hex
  /** @default 1 */
  confirmations?: number
}

/** Deploys the OutputOracle and waits for its receipt. Constructor reverts are decoded into the error message. */
export async function deployOracle(walletClient: DeployWalletClient, publicClient: PublicClient, opts: DeployOracleOptions): Promise<DeployResult> {
  return deploy(walletClient, publicClient, 'OutputOracle', outputOracleAbi, opts.confirmations, () =>
    deployContract(walletClient, {
      abi: outputOracleAbi,
      bytecode: outputOracleBytecode,
      args: [
        opts.anchorRoot,
        opts.anchorBlock,
        opts.intervalBlocks,
        opts.l2BlockTimeSec ?? 2n,
        opts.verifier,
        opts.programId,
        opts.chainConfigHash,
        opts.proposer,
      ],
      account: walletClient.account,
      chain: walletClient.chain ?? null,
    }),
  )
}

/** Deploys a MockVerifier (development only: the oracle refuses it off dev chains). */
export async function deployMockVerifier(
  walletClient: DeployWalletClient,
  publicClient: PublicClient,
  opts: DeployMockVerifierOptions = {},
): Promise<DeployResult> {
  const mode = opts.mode ?? 'accept-all'
  if (mode === 'proof-hash' && opts.expectedProofHash === undefined) {
    throw new DeployError('CONTRACT_DEPLOY_REVERTED', "mock verifier mode 'proof-hash' needs expectedProofHash", { retryable: false })
  }
  return deploy(walletClient, publicClient, 'MockVerifier', mockVerifierAbi, opts.confirmations, () =>
    deployContract(walletClient, {
      abi: mockVerifierAbi,
      bytecode: mockVerifierBytecode,
      args: [MOCK_MODES[mode], opts.expectedProofHash ?? pad('0x00')],
      account: walletClient.account,
      chain: walletClient.chain ?? null,
    }),
  )
}

/**
 * Dev L2 only: puts the L2ToL1MessagePasser stand-in (src/contracts/L2ToL1MessagePasser.sol) at
 * the predeploy address with `anvil_setCode`, so withdrawals give the output root a non-empty
 * message-passer storage root.
 */
export async function installDevMessagePasser(client: Client, address: Address = L2_TO_L1_MESSAGE_PASSER): Promise<void> {
  const request = client.request as unknown as (args: { method: string; params: unknown[] }) => Promise<unknown>
  await request({ method: 'anvil_setCode', params: [address, l2ToL1MessagePasserDeployedBytecode] })
}

/** The values a proof of one oracle transition commits to. */
export interface TransitionPublicValues {
  previousOutputRoot: Hex
  newOutputRoot: Hex
  previousL2Block: bigint
  newL2Block: bigint
  programId: Hex
  chainConfigHash: Hex
}

/**
 * The OutputOracle's public inputs for a transition, exactly as the contract builds them
 * (`computePublicInputs`): twelve bytes32 words, the high then low 128 bits of, in order,
 * previous root, new root, previous L2 block, new L2 block, program id, chain config hash.
 */
export function encodePublicInputs(v: TransitionPublicValues): Hex[] {
  const words: Hex[] = [
    v.previousOutputRoot,
    v.newOutputRoot,
    numberToHex(v.previousL2Block, { size: 32 }),
    numberToHex(v.newL2Block, { size: 32 }),
    v.programId,
    v.chainConfigHash,
  ]
  return words.flatMap((w) => {
    if (size(w) !== 32) throw new TypeError(`public value must be 32 bytes, got ${w}`)
    return [pad(sliceHex(w, 0, 16)), pad(sliceHex(w, 16, 32))]
  })
}

/** The proof a MockVerifier in mode 'public-inputs-commitment' accepts: keccak256 of the packed public inputs. */
export function mockCommitmentProof(publicInputs: readonly Hex[]): Hex {
  return keccak256(concatHex([...publicInputs]))
}

/** Finds revert data in a viem error and decodes it with `abi`, e.g. `NotProposer(0xabc…)`. */
export function decodeRevert(err: unknown, abi: Abi): { errorName: string; args: readonly unknown[] } | null {
  if (!(err instanceof BaseError)) return null
  let data: Hex | undefined
  err.walk((e) => {
    const d = (e as { data?: unknown }).data
    if (typeof d === 'string' && d.startsWith('0x') && d.length >= 10) data = d as Hex
    else if (d && typeof d === 'object' && typeof (d as { data?: unknown }).data === 'string') data = (d as { data: Hex }).data
    return false
  })
  if (!data) return null
  try {
    const decoded = decodeErrorResult({ abi, data })
    return { errorName: decoded.errorName, args: decoded.args ?? [] }
  } catch {
    return null
  }
}

async function deploy(
  walletClient: DeployWalletClient,
  publicClient: PublicClient,
  name: string,
  abi: Abi,
  confirmations: number | undefined,
  send: () => Promise<Hex>,
): Promise<DeployResult> {
  let txHash: Hex
  try {
    txHash = await send()
  } catch (cause) {
    const revert = decodeRevert(cause, abi)
    if (revert) {
      throw new DeployError(
        'CONTRACT_DEPLOY_REVERTED',
        `${name} constructor reverted: ${revert.errorName}(${revert.args.map(String).join(', ')})${hint(revert.errorName)}`,
        { retryable: false, details: { contract: name, ...revert, args: revert.args.map(String) }, cause },
      )
    }
    throw new DeployError('CONTRACT_DEPLOY_FAILED', `${name} deployment could not be sent: ${(cause as Error).message.split('\n')[0]}`, {
      retryable: true,
      details: { contract: name, from: walletClient.account.address },
      cause,
    })
  }
  const receipt = await waitForTransactionReceipt(publicClient, { hash: txHash, confirmations: confirmations ?? 1 })
  if (receipt.status !== 'success' || !receipt.contractAddress) {
    throw new DeployError('CONTRACT_DEPLOY_REVERTED', `${name} deployment ${txHash} reverted`, {
      retryable: false,
      details: { contract: name, txHash },
    })
  }
  return { address: receipt.contractAddress, txHash, blockNumber: receipt.blockNumber, gasUsed: receipt.gasUsed }
}

function hint(errorName: string): string {
  switch (errorName) {
    case 'MockVerifierOnNonDevChain':
      return ' — a mock verifier is only allowed on dev chain ids (31337, 900, 901, 1337); configure a real verifier for this chain'
    case 'VerifierNotContract':
      return ' — the verifier address has no code on this chain; deploy the verifier first'
    default:
      return ''
  }
}

/** Options of `deployUltraHonkVerifier`. */
export interface DeployUltraHonkOptions {
  /** Creation bytecode of the generated HonkVerifier (`HonkVerifierArtifact.bytecode`). */
  honkBytecode: Hex
  /** The program id the adapter requires (the OutputOracle's PROGRAM_ID). */
  programId: Hex
  /** @default 1 */
  confirmations?: number
}

/**
 * Deploys the generated HonkVerifier and an UltraHonkAdapter in front of it (the address to
 * give the OutputOracle as its verifier). Returns both deployments.
 */
export async function deployUltraHonkVerifier(walletClient: DeployWalletClient, publicClient: PublicClient, opts: DeployUltraHonkOptions): Promise<{ honk: DeployResult; adapter: DeployResult }> {
  const honkAbi = [] as const
  const honk = await deploy(walletClient, publicClient, 'HonkVerifier', honkAbi, opts.confirmations, () =>
    deployContract(walletClient, { abi: honkAbi, bytecode: opts.honkBytecode, account: walletClient.account, chain: walletClient.chain ?? null }),
  )
  const adapter = await deploy(walletClient, publicClient, 'UltraHonkAdapter', ultraHonkAdapterAbi, opts.confirmations, () =>
    deployContract(walletClient, {
      abi: ultraHonkAdapterAbi,
      bytecode: ultraHonkAdapterBytecode,
      args: [honk.address, opts.programId],
      account: walletClient.account,
      chain: walletClient.chain ?? null,
    }),
  )
  return { honk, adapter }
}
