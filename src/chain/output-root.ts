import { concatHex, fromRlp, keccak256, size, type Address, type Client, type Hex } from 'viem'
import { ProoflineError, errorMessage } from '../core/errors.js'
import { headerHashMatches } from './header.js'

/**
 * OP Stack output roots (version 0), as op-node's `optimism_outputAtBlock` and the
 * L2OutputOracle define them:
 *
 *   outputRoot = keccak256(version ‖ stateRoot ‖ messagePasserStorageRoot ‖ blockHash)
 *
 * with `version` = bytes32(0) and `messagePasserStorageRoot` the storage root of the
 * L2ToL1MessagePasser predeploy in that block's state. Spec:
 * https://specs.optimism.io/protocol/proposals.html#l2-output-commitment-construction
 */

/** OP's L2ToL1MessagePasser predeploy; its storage root goes into the output root. */
export const L2_TO_L1_MESSAGE_PASSER: Address = '0x4200000000000000000000000000000000000016'

/** Output root version 0. */
export const OUTPUT_VERSION_V0: Hex = '0x0000000000000000000000000000000000000000000000000000000000000000'

/** Storage root of an account with no storage (keccak256 of the RLP of an empty trie). */
export const EMPTY_STORAGE_ROOT: Hex = '0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421'

/** The three commitments a v0 output root hashes. */
export interface OutputV0 {
  stateRoot: Hex
  messagePasserStorageRoot: Hex
  blockHash: Hex
}

/** An output root with what it was computed from. */
export interface OutputRootResult extends OutputV0 {
  version: Hex
  blockNumber: bigint
  outputRoot: Hex
}

/** An L2 node answered without what an output root needs (missing block, proof, or pruned state). */
export class OutputRootError extends ProoflineError {
  constructor(code: 'OUTPUT_BLOCK_NOT_FOUND' | 'OUTPUT_HEADER_INVALID' | 'OUTPUT_PROOF_UNAVAILABLE' | 'OUTPUT_PROOF_INVALID', message: string, opts: { retryable: boolean; details?: Record<string, unknown>; cause?: unknown }) {
    super(code, message, opts)
  }
}

/** keccak256(bytes32(0) ‖ stateRoot ‖ messagePasserStorageRoot ‖ blockHash). Throws unless each part is 32 bytes. */
export function outputRootV0(output: OutputV0): Hex {
  for (const [name, value] of Object.entries(output)) {
    if (size(value as Hex) !== 32) throw new TypeError(`${name} must be 32 bytes, got ${String(value)}`)
  }
  return keccak256(concatHex([OUTPUT_VERSION_V0, output.stateRoot, output.messagePasserStorageRoot, output.blockHash]))
}

/** Options of `outputRootAt` / `outputRootOfBlock`. */
export interface OutputRootOptions {
  /** Contract whose storage root is committed. @default L2_TO_L1_MESSAGE_PASSER */
  messagePasser?: Address
  /**
   * Check `eth_getProof`'s account proof against the block's state root. Turn off only for a
   * node whose header state roots are not real: anvil reports the empty-trie root as its
   * genesis block's state root (mined blocks are fine). @default true
   */
  verifyAccountProof?: boolean
  /**
   * `outputRootAt`: check that the block's hash is its header's (keccak256 of the RLP), so a
   * node cannot make the root commit to a made-up hash. Off only for headers with fields
   * proofline does not know. @default true
   */
  verifyHeaderHash?: boolean
  signal?: AbortSignal
}

/**
 * The output root of L2 block `blockNumber`: fetches the block (state root, hash) and then the
 * message passer's storage root with `eth_getProof` at that block's hash (EIP-1898), so both
 * parts come from the same block even if the chain reorgs between the two calls.
 */
export async function outputRootAt(client: Client, blockNumber: bigint, opts: OutputRootOptions = {}): Promise<OutputRootResult> {
  opts.signal?.throwIfAborted()
  const notFound = (why: string, cause?: unknown): OutputRootError =>
    new OutputRootError('OUTPUT_BLOCK_NOT_FOUND', `L2 block ${blockNumber} ${why}; is the L2 node synced to it?`, {
      retryable: true,
      details: { blockNumber: blockNumber.toString() },
      cause,
    })
  let raw: unknown
  try {
    // The raw JSON-RPC block (not viem's formatted one): its header is re-hashed below.
    const request = client.request as unknown as (args: { method: string; params: unknown[] }) => Promise<unknown>
    raw = await request({ method: 'eth_getBlockByNumber', params: [`0x${blockNumber.toString(16)}`, false] })
  } catch (cause) {
    // Say why: a node that does not answer (timeout, refused) is not a node without the block.
    const short = (cause as { shortMessage?: unknown } | null)?.shortMessage
    throw notFound(`could not be read (eth_getBlockByNumber failed: ${typeof short === 'string' ? short : (errorMessage(cause).split('\n')[0] ?? '')})`, cause)
  }
  if (raw === null || typeof raw !== 'object') throw notFound('does not exist on the L2 node (eth_getBlockByNumber returned null)')
  const block = raw as Record<string, unknown>
  if (typeof block.hash !== 'string' || typeof block.stateRoot !== 'string' || !/^0x[0-9a-fA-F]{64}$/.test(block.stateRoot)) {
    throw notFound('is pending or was returned without hash and state root')
  }
  if (opts.verifyHeaderHash !== false) {
    const check = headerHashMatches(block)
    if (!check.ok) {
      throw new OutputRootError('OUTPUT_HEADER_INVALID', `the L2 node's block ${blockNumber} is not what its hash says (${check.reason}); the node or a proxy in front of it is broken or hostile`, {
        retryable: false,
        details: { blockNumber: blockNumber.toString(), hash: block.hash },
      })
    }
  }
  return outputRootOfBlock(client, { number: blockNumber, hash: block.hash.toLowerCase() as Hex, stateRoot: block.stateRoot.toLowerCase() as Hex }, opts)
}

/** The output root of a block the caller already has (e.g. the watcher); fetches only the storage root. */
export async function outputRootOfBlock(
  client: Client,
  block: { number: bigint; hash: Hex; stateRoot: Hex },
  opts: OutputRootOptions = {},
): Promise<OutputRootResult> {
  opts.signal?.throwIfAborted()
  const messagePasserStorageRoot = await messagePasserStorageRootAt(client, block, opts.messagePasser ?? L2_TO_L1_MESSAGE_PASSER, {
    verifyAccountProof: opts.verifyAccountProof ?? true,
  })
  const output: OutputV0 = { stateRoot: block.stateRoot, messagePasserStorageRoot, blockHash: block.hash }
  return { version: OUTPUT_VERSION_V0, blockNumber: block.number, ...output, outputRoot: outputRootV0(output) }
}

/**
 * Storage root of `address` in the state of `block`, from `eth_getProof` at the block's hash.
 * The account proof is checked against the block's state root (as op-node does), so a node
 * cannot hand out a storage root that is not in that state.
 */
export async function messagePasserStorageRootAt(
  client: Client,
  block: { hash: Hex; stateRoot: Hex },
  address: Address = L2_TO_L1_MESSAGE_PASSER,
  opts: { verifyAccountProof?: boolean } = {},
): Promise<Hex> {
  let proof: unknown
  try {
    // viem's getProof takes a number or tag only; a block hash (EIP-1898) pins the exact block.
    const request = client.request as unknown as (args: { method: string; params: unknown[] }) => Promise<unknown>
    proof = await request({ method: 'eth_getProof', params: [address, [], { blockHash: block.hash }] })
  } catch (cause) {
    throw new OutputRootError(
      'OUTPUT_PROOF_UNAVAILABLE',
      `eth_getProof(${address}) at block ${block.hash} failed; the L2 node must serve eth_getProof for recent blocks (an archive node, or state not yet pruned)`,
      { retryable: true, details: { address, blockHash: block.hash }, cause },
    )
  }
  const p = proof as { storageHash?: unknown; accountProof?: unknown } | null
  const storageHash = p?.storageHash
  if (typeof storageHash !== 'string' || !/^0x[0-9a-fA-F]{64}$/.test(storageHash) || !Array.isArray(p?.accountProof)) {
    throw new OutputRootError('OUTPUT_PROOF_UNAVAILABLE', `eth_getProof at ${block.hash} returned no storageHash or accountProof`, {
      retryable: true,
      details: { address, blockHash: block.hash, answer: proof },
    })
  }
  const claimed = storageHash.toLowerCase() as Hex
  if (opts.verifyAccountProof === false) return claimed
  let proven: Hex
  try {
    proven = verifyAccountStorageRoot(block.stateRoot, address, p.accountProof as Hex[])
  } catch (cause) {
    const quirk =
      block.stateRoot.toLowerCase() === EMPTY_STORAGE_ROOT
        ? ' (the node reports the empty-trie root as this block\'s state root, as anvil does for its genesis block: anchor at a mined block, or pass verifyAccountProof: false for such a dev chain)'
        : ''
    throw new OutputRootError('OUTPUT_PROOF_INVALID', `eth_getProof(${address}) at ${block.hash} does not prove against state root ${block.stateRoot}: ${(cause as Error).message}${quirk}`, {
      retryable: false,
      details: { address, blockHash: block.hash, stateRoot: block.stateRoot },
      cause,
    })
  }
  if (proven !== claimed) {
    throw new OutputRootError('OUTPUT_PROOF_INVALID', `eth_getProof(${address}) at ${block.hash} claims storage root ${claimed} but its account proof gives ${proven}`, {
      retryable: false,
      details: { address, blockHash: block.hash, claimed, proven },
    })
  }
  return proven
}

/**
 * Walks a Merkle-Patricia account proof from `stateRoot` to `address` and returns the account's
 * storage root (`EMPTY_STORAGE_ROOT` for an account the proof shows absent). Throws if the proof
 * is malformed or does not hash up to `stateRoot`.
 */
export function verifyAccountStorageRoot(stateRoot: Hex, address: Address, accountProof: readonly Hex[]): Hex {
  const key = keccak256(address).slice(2) // 64 nibbles as hex chars
  let expected: Hex = stateRoot.toLowerCase() as Hex
  let at = 0
  for (let i = 0; i < accountProof.length; i++) {
    const raw = accountProof[i] as Hex
    const node = fromRlp(raw, 'hex') as unknown as (Hex | Hex[])[]
    if (keccak256(raw) !== expected) throw new Error(`proof node ${i} does not hash to its reference`)
    let next: Hex | Hex[]
    if (node.length === 17) {
      if (at === key.length) throw new Error('branch value at a full key is not an account')
      next = node[parseInt(key[at] as string, 16)] as Hex | Hex[]
      at += 1
    } else if (node.length === 2) {
      const [encodedPath, value] = node as [Hex, Hex | Hex[]]
      const flags = parseInt(encodedPath.slice(2, 3), 16)
      const path = encodedPath.slice(flags & 1 ? 3 : 4)
      const isLeaf = (flags & 2) !== 0
      if (key.slice(at, at + path.length) !== path.toLowerCase()) return EMPTY_STORAGE_ROOT // diverges: absent
      at += path.length
      if (isLeaf) {
        if (at !== key.length || typeof value !== 'string') throw new Error('leaf does not end at the account key')
        if (i !== accountProof.length - 1) throw new Error('proof continues past a leaf')
        const account = fromRlp(value, 'hex') as unknown as Hex[]
        const storageRoot = account[2]
        if (account.length !== 4 || !storageRoot || size(storageRoot) !== 32) throw new Error('leaf is not an account')
        return storageRoot.toLowerCase() as Hex
      }
      next = value
    } else {
      throw new Error(`proof node ${i} has ${node.length} items`)
    }
    if (next === '0x' || (Array.isArray(next) && next.length === 0)) {
      if (i !== accountProof.length - 1) throw new Error('proof continues past an empty slot')
      return EMPTY_STORAGE_ROOT // absent
    }
    // Account leaves are longer than 32 bytes, so the account trie never embeds nodes inline.
    if (Array.isArray(next)) throw new Error(`proof node ${i} embeds a child node, impossible in the account trie`)
    expected = next.toLowerCase() as Hex
  }
  throw new Error('proof ends before reaching the account')
}
