import { encodeFunctionData, type Address, type Client, type Hex } from 'viem'
import { getContractEvents, readContract } from 'viem/actions'
import { outputOracleAbi } from '../contracts/abis.js'
import { decodeRevert } from '../chain/deploy.js'

/**
 * A typed reader of the OutputOracle (src/contracts/OutputOracle.sol, docs/contracts.md): the
 * proposer's view of L1. Every call reads the chain (nothing is cached), because after an L1
 * reorg or a restart the contract, not the proposer's memory, says where proposals are.
 */

/** One stored output, as `getL2Output` returns it (OP's `OutputProposal`). */
export interface OracleOutput {
  outputRoot: Hex
  /** L1 timestamp (seconds) of the block that stored it. */
  timestamp: bigint
  l2BlockNumber: bigint
}

/** One `OutputProposed` log. */
export interface OutputProposedEvent {
  outputRoot: Hex
  l2OutputIndex: bigint
  l2BlockNumber: bigint
  l1Timestamp: bigint
  /** The L1 transaction and block that emitted it. */
  txHash: Hex
  l1Block: bigint
  logIndex: number
}

/** Options of {@link oracleClient}. */
export interface OracleClientOptions {
  /** An L1 client (a viem `PublicClient`, or any viem `Client` with a transport). */
  client: Client
  /** The OutputOracle's address. */
  address: Address
}

/** Reads the OutputOracle and encodes calls to it. */
export interface OracleClient {
  readonly address: Address
  /** L2 block of the latest stored output (the anchor's while nothing was proposed). */
  latestBlockNumber(): Promise<bigint>
  /** Index of the latest stored output; 0 is the anchor. */
  latestOutputIndex(): Promise<bigint>
  /** The output at `index`; reverts (`OutputIndexOutOfRange`) past the latest. */
  getL2Output(index: bigint): Promise<OracleOutput>
  /** The latest stored output (the anchor while nothing was proposed). */
  latestOutput(): Promise<OracleOutput & { index: bigint }>
  /** Minimum L2 blocks between two outputs: a proposal needs `l2Block >= latest + interval`. */
  submissionInterval(): Promise<bigint>
  /** The verifier contract the oracle calls. */
  verifier(): Promise<Address>
  /** Program / vkey id bound into every proof's public inputs. */
  programId(): Promise<Hex>
  /** Chain config hash bound into every proof's public inputs. */
  chainConfigHash(): Promise<Hex>
  /** `OutputProposed` logs between two L1 blocks (inclusive), in chain order. @default fromBlock 0n, toBlock 'latest' */
  outputProposed(range?: { fromBlock?: bigint; toBlock?: bigint }): Promise<OutputProposedEvent[]>
  /** Calldata of `proposeL2Output(outputRoot, l2BlockNumber, proof)`. */
  proposeCalldata(outputRoot: Hex, l2BlockNumber: bigint, proof: Hex): Hex
}

/** Creates an {@link OracleClient}; nothing is read until a method is called. */
export function oracleClient(opts: OracleClientOptions): OracleClient {
  const { client, address } = opts
  const read = <F extends 'latestBlockNumber' | 'latestOutputIndex' | 'submissionInterval' | 'verifier' | 'programId' | 'chainConfigHash'>(functionName: F) =>
    readContract(client, { address, abi: outputOracleAbi, functionName })
  const getL2Output = async (index: bigint): Promise<OracleOutput> => {
    const o = await readContract(client, { address, abi: outputOracleAbi, functionName: 'getL2Output', args: [index] })
    return { outputRoot: o.outputRoot, timestamp: o.timestamp, l2BlockNumber: o.l2BlockNumber }
  }
  return {
    address,
    latestBlockNumber: () => read('latestBlockNumber'),
    latestOutputIndex: () => read('latestOutputIndex'),
    getL2Output,
    async latestOutput() {
      const index = await read('latestOutputIndex')
      return { index, ...(await getL2Output(index)) }
    },
    submissionInterval: () => read('submissionInterval'),
    verifier: () => read('verifier'),
    programId: () => read('programId'),
    chainConfigHash: () => read('chainConfigHash'),
    async outputProposed(range = {}) {
      const logs = await getContractEvents(client, {
        address,
        abi: outputOracleAbi,
        eventName: 'OutputProposed',
        fromBlock: range.fromBlock ?? 0n,
        toBlock: range.toBlock ?? 'latest',
        strict: true,
      })
      return logs.map((l) => ({
        outputRoot: l.args.outputRoot,
        l2OutputIndex: l.args.l2OutputIndex,
        l2BlockNumber: l.args.l2BlockNumber,
        l1Timestamp: l.args.l1Timestamp,
        txHash: l.transactionHash,
        l1Block: l.blockNumber,
        logIndex: l.logIndex,
      }))
    },
    proposeCalldata: (outputRoot, l2BlockNumber, proof) =>
      encodeFunctionData({ abi: outputOracleAbi, functionName: 'proposeL2Output', args: [outputRoot, l2BlockNumber, proof] }),
  }
}

/** What each OutputOracle custom error means for the operator. */
const ORACLE_ERROR_HINTS: Record<string, string> = {
  NotProposer: 'the signing key is not the oracle\'s PROPOSER; configure the proposer key the oracle was deployed with',
  EmptyOutputRoot: 'the output root is zero',
  L2BlockNumberTooLow: 'the proposal does not reach latestBlockNumber() + SUBMISSION_INTERVAL (another proposal landed, or the interval is not met)',
  L2BlockNumberOverflow: 'the L2 block number does not fit in uint128',
  MockVerifierOnNonDevChain: 'the oracle\'s verifier is a mock and this L1 is not a dev chain; deploy the oracle with a real verifier',
  InvalidProof:
    'the verifier rejected the proof for these public inputs (wrong proof, program id or chain config hash, or a proof that does not start at the latest output; a MockVerifier in public-inputs-commitment mode wants keccak256(publicInputs))',
}

/**
 * Decodes an OutputOracle revert inside a viem error, with a hint of what it
 * means, e.g. `InvalidProof() — the verifier rejected the proof …`. Undefined when `err` carries
 * no decodable revert data.
 */
export function describeOracleRevert(err: unknown): { errorName: string; args: readonly unknown[]; message: string } | undefined {
  let cur: unknown = err
  for (let depth = 0; cur !== undefined && cur !== null && depth < 8; depth++) {
    const decoded = decodeRevert(cur, outputOracleAbi)
    if (decoded !== null) {
      const hint = ORACLE_ERROR_HINTS[decoded.errorName]
      const call = `${decoded.errorName}(${decoded.args.map(String).join(', ')})`
      return { ...decoded, message: hint === undefined ? call : `${call} — ${hint}` }
    }
    cur = (cur as { cause?: unknown }).cause
  }
  return undefined
}
