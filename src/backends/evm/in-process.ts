import { createEVM } from '@ethereumjs/evm'
import { bytesToHex, decodeErrorResult, decodeFunctionResult, encodeAbiParameters, encodeFunctionData, hexToBytes, type Abi, type Hex } from 'viem'
import { ultraHonkAdapterAbi } from '../../contracts/abis.js'
import { ultraHonkAdapterBytecode } from '../../contracts/bytecode.js'
import { ProoflineError } from '../../core/errors.js'
import type { HonkVerifierArtifact } from './honk-verifier.js'

/**
 * The on-chain verifier, run off-chain: the generated HonkVerifier and the UltraHonkAdapter
 * deployed into an in-memory EVM (@ethereumjs/evm; BN254 precompiles from @noble/curves),
 * called exactly as the OutputOracle calls them. An aggregate proof that passes here passes on
 * L1 with the same public inputs, whatever CRS it was made over.
 */

/** What one call returned. */
export interface EvmVerifyResult {
  ok: boolean
  /** Execution gas of the call (no intrinsic or calldata gas). */
  gasUsed: bigint
  /** A revert's decoded error name, or the raw data. */
  revert?: string
  durationMs: number
}

/** An in-process verifier (adapter in front of the generated verifier). */
export interface InProcessVerifier {
  /** Verifies `proof` against the OutputOracle's twelve public-input words. Never throws for a bad proof. */
  verify(proof: Uint8Array | Hex, oraclePublicInputs: readonly Hex[]): Promise<EvmVerifyResult>
  /** Calls the generated verifier directly with the circuit's public inputs. */
  verifyCircuit(proof: Uint8Array | Hex, circuitPublicInputs: readonly Hex[]): Promise<EvmVerifyResult>
}

/** The in-memory EVM could not be set up (a deployment failed). */
export class EvmError extends ProoflineError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super('EVM_SETUP_FAILED', message, { retryable: false, details })
  }
}

const GAS_LIMIT = 30_000_000n

type EvmInstance = Awaited<ReturnType<typeof createEVM>>
type Address = NonNullable<Awaited<ReturnType<EvmInstance['runCall']>>['createdAddress']>

async function deploy(evm: EvmInstance, code: Hex, what: string): Promise<Address> {
  const r = await evm.runCall({ data: hexToBytes(code), gasLimit: GAS_LIMIT })
  if (r.execResult.exceptionError !== undefined || r.createdAddress === undefined) {
    throw new EvmError(`deploying ${what} in the in-process EVM failed: ${r.execResult.exceptionError?.error ?? 'no address'}`, { what })
  }
  return r.createdAddress
}

function describeRevert(abis: Abi[], data: Uint8Array): string {
  const hex = bytesToHex(data)
  for (const abi of abis) {
    try {
      return decodeErrorResult({ abi, data: hex }).errorName
    } catch {
      // Try the next ABI.
    }
  }
  return hex.length > 2 ? `revert ${hex.slice(0, 10)}` : 'revert (no data)'
}

/** Deploys `verifier` and an adapter for `programId` into a fresh in-memory EVM. */
export async function inProcessVerifier(verifier: Pick<HonkVerifierArtifact, 'abi' | 'bytecode'>, programId: Hex): Promise<InProcessVerifier> {
  const evm = await createEVM()
  const honk = await deploy(evm, verifier.bytecode, 'the HonkVerifier')
  const args = encodeAbiParameters([{ type: 'address' }, { type: 'bytes32' }], [honk.toString() as Hex, programId])
  const adapter = await deploy(evm, `${ultraHonkAdapterBytecode}${args.slice(2)}`, 'the UltraHonkAdapter')
  const abis = [verifier.abi, ultraHonkAdapterAbi as Abi]

  async function call(to: Address, abi: Abi, proof: Uint8Array | Hex, inputs: readonly Hex[]): Promise<EvmVerifyResult> {
    const started = performance.now()
    const p = typeof proof === 'string' ? proof : bytesToHex(proof)
    const data = encodeFunctionData({ abi, functionName: 'verify', args: [p, [...inputs]] })
    const r = await evm.runCall({ to, data: hexToBytes(data), gasLimit: GAS_LIMIT })
    const durationMs = Math.round(performance.now() - started)
    const gasUsed = r.execResult.executionGasUsed
    if (r.execResult.exceptionError !== undefined) return { ok: false, gasUsed, revert: describeRevert(abis, r.execResult.returnValue), durationMs }
    const ok = decodeFunctionResult({ abi, functionName: 'verify', data: bytesToHex(r.execResult.returnValue) }) === true
    return { ok, gasUsed, durationMs }
  }

  return {
    verify: (proof, inputs) => call(adapter, ultraHonkAdapterAbi as Abi, proof, inputs),
    verifyCircuit: (proof, inputs) => call(honk, verifier.abi, proof, inputs),
  }
}
