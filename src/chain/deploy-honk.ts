import { keccak256, type Abi, type Address, type Hex, type PublicClient } from 'viem'
import { deployContract, getCode, waitForTransactionReceipt } from 'viem/actions'
import type { HonkVerifierArtifact } from '../backends/evm/honk-verifier.js'
import { ultraHonkAdapterAbi } from '../contracts/abis.js'
import { ultraHonkAdapterBytecode } from '../contracts/bytecode.js'
import { DeployError, type DeployResult, type DeployWalletClient } from './deploy.js'

/** The generated UltraHonk verifier and its adapter, as deployed. */
export interface HonkStack {
  verifier: DeployResult
  adapter: DeployResult
  /** keccak256 of the verifier's runtime code on chain (equals the artifact's `codeHash`). */
  verifierCodeHash: Hex
}

async function deployOne(wallet: DeployWalletClient, publicClient: PublicClient, name: string, abi: Abi, bytecode: Hex, args: readonly unknown[]): Promise<DeployResult> {
  let txHash: Hex
  try {
    txHash = await deployContract(wallet, { abi, bytecode, args, account: wallet.account, chain: wallet.chain ?? null })
  } catch (cause) {
    throw new DeployError('CONTRACT_DEPLOY_FAILED', `${name} deployment could not be sent: ${(cause as Error).message.split('\n')[0]}`, { retryable: true, details: { contract: name }, cause })
  }
  const receipt = await waitForTransactionReceipt(publicClient, { hash: txHash })
  if (receipt.status !== 'success' || !receipt.contractAddress) {
    throw new DeployError('CONTRACT_DEPLOY_REVERTED', `${name} deployment ${txHash} reverted`, { retryable: false, details: { contract: name, txHash } })
  }
  return { address: receipt.contractAddress, txHash, blockNumber: receipt.blockNumber, gasUsed: receipt.gasUsed }
}

/**
 * Deploys the generated HonkVerifier (for the CRS it was generated for) and an UltraHonkAdapter
 * for `programId` in front of it; the adapter is what the OutputOracle's `verifier` is. Checks
 * that the deployed verifier's code hash is the artifact's.
 */
export async function deployHonkStack(wallet: DeployWalletClient, publicClient: PublicClient, verifier: Pick<HonkVerifierArtifact, 'abi' | 'bytecode' | 'codeHash'>, programId: Hex): Promise<HonkStack> {
  const v = await deployOne(wallet, publicClient, 'HonkVerifier', verifier.abi, verifier.bytecode, [])
  const code = await getCode(publicClient, { address: v.address })
  const verifierCodeHash = keccak256(code ?? '0x')
  if (verifierCodeHash !== verifier.codeHash) {
    throw new DeployError('CONTRACT_DEPLOY_REVERTED', `the deployed HonkVerifier's code hash ${verifierCodeHash} is not the generated verifier's ${verifier.codeHash}`, { retryable: false, details: { address: v.address } })
  }
  const adapter = await deployOne(wallet, publicClient, 'UltraHonkAdapter', ultraHonkAdapterAbi as Abi, ultraHonkAdapterBytecode, [v.address satisfies Address, programId])
  return { verifier: v, adapter, verifierCodeHash }
}
