import { hexToBytes, keccak256, toRlp, type Hex } from 'viem'
import { ProoflineError } from '../core/errors.js'
import type { RpcBlockJson } from './traces.js'

/**
 * The RLP encoding of an Ethereum block header, rebuilt from the JSON a node returns for
 * `eth_getBlockByNumber`. `keccak256(headerRlp(block)) === block.hash` for every fork from
 * London to Prague: the optional tail fields (baseFeePerGas, withdrawalsRoot, blobGasUsed,
 * excessBlobGas, parentBeaconBlockRoot, requestsHash) are appended in fork order while present.
 *
 * Layout of a post-merge header (what the range circuit relies on, see
 * src/backends/noir/circuits/range): a list longer than 255 bytes, so a 3-byte list prefix
 * `0xf9 len_hi len_lo`; then parentHash (`0xa0` + 32 bytes) at offset 3, ommersHash at 36,
 * coinbase (`0x94` + 20 bytes) at 69, stateRoot at 90, transactionsRoot at 123, receiptsRoot at
 * 156, logsBloom (`0xb9 0x01 0x00` + 256 bytes) at 189, difficulty at 448 (`0x80`: zero after
 * the merge), and the block number — variable length — at 449.
 */

/** Quantity fields, encoded as minimal big-endian integers (zero is the empty string). */
const QUANTITY_FIELDS = new Set(['difficulty', 'number', 'gasLimit', 'gasUsed', 'timestamp', 'baseFeePerGas', 'blobGasUsed', 'excessBlobGas'])

/** Header fields in RLP order. The first 15 are always present; the rest in fork order while present. */
const REQUIRED_FIELDS = [
  'parentHash',
  'sha3Uncles',
  'miner',
  'stateRoot',
  'transactionsRoot',
  'receiptsRoot',
  'logsBloom',
  'difficulty',
  'number',
  'gasLimit',
  'gasUsed',
  'timestamp',
  'extraData',
  'mixHash',
  'nonce',
] as const
const OPTIONAL_FIELDS = ['baseFeePerGas', 'withdrawalsRoot', 'blobGasUsed', 'excessBlobGas', 'parentBeaconBlockRoot', 'requestsHash'] as const

/** The block JSON cannot be turned into its header: a field is missing or malformed, or the hash does not match. */
export class HeaderError extends ProoflineError {
  constructor(code: 'HEADER_FIELD_INVALID' | 'HEADER_HASH_MISMATCH', message: string, details: Record<string, unknown> = {}) {
    super(code, message, { retryable: false, details })
  }
}

function quantity(value: Hex, field: string): Hex {
  if (!/^0x[0-9a-fA-F]+$/.test(value)) throw new HeaderError('HEADER_FIELD_INVALID', `header field ${field} is not a hex quantity: ${value}`, { field })
  const n = BigInt(value)
  if (n === 0n) return '0x'
  const hex = n.toString(16)
  return `0x${hex.length % 2 === 1 ? '0' : ''}${hex}`
}

/** The header's RLP bytes. Throws `HeaderError` for a missing or malformed field. */
export function headerRlp(block: RpcBlockJson): Uint8Array {
  const items: Hex[] = []
  const take = (field: string, required: boolean): boolean => {
    const value = block[field]
    if (value === undefined || value === null) {
      if (required) throw new HeaderError('HEADER_FIELD_INVALID', `header field ${field} is missing`, { field })
      return false
    }
    if (typeof value !== 'string' || !/^0x([0-9a-fA-F]*)$/.test(value)) throw new HeaderError('HEADER_FIELD_INVALID', `header field ${field} is not hex`, { field })
    items.push(QUANTITY_FIELDS.has(field) ? quantity(value as Hex, field) : (value as Hex))
    return true
  }
  for (const f of REQUIRED_FIELDS) take(f, true)
  let missing: string | undefined
  for (const f of OPTIONAL_FIELDS) {
    if (missing === undefined) {
      if (!take(f, false)) missing = f
    } else if (block[f] !== undefined && block[f] !== null) {
      // Fork fields come as a prefix of the list; anything else is a layout this code does not know.
      throw new HeaderError('HEADER_FIELD_INVALID', `header field ${f} is present but ${missing} is not: an unknown header layout`, { field: f })
    }
  }
  return hexToBytes(toRlp(items))
}

/** keccak256 of the header rebuilt from a JSON-RPC block. Throws `HeaderError` when it cannot be rebuilt. */
export function blockHeaderHash(block: RpcBlockJson | Record<string, unknown>): Hex {
  return keccak256(headerRlp(block as RpcBlockJson))
}

/**
 * Whether `block.hash` is the hash of its header; false also when the header cannot be
 * rebuilt. The watcher and the output-root code check it so that a node (or a proxy in front
 * of it) cannot hand out a block whose `hash` is not its header's: every hash the pipeline
 * commits to (job ids, output roots) is then the real one.
 */
export function headerHashMatches(block: Record<string, unknown>): { ok: true } | { ok: false; reason: string } {
  let computed: Hex
  try {
    computed = blockHeaderHash(block)
  } catch (err) {
    return { ok: false, reason: (err as Error).message }
  }
  const claimed = typeof block.hash === 'string' ? block.hash.toLowerCase() : String(block.hash)
  return computed === claimed ? { ok: true } : { ok: false, reason: `the header hashes to ${computed}, the node says ${claimed}` }
}

/** Like `headerRlp`, and checks that the bytes hash to `block.hash`. */
export function checkedHeaderRlp(block: RpcBlockJson): Uint8Array {
  const rlp = headerRlp(block)
  const hash = keccak256(rlp)
  if (hash.toLowerCase() !== block.hash.toLowerCase()) {
    throw new HeaderError('HEADER_HASH_MISMATCH', `the header rebuilt from block ${block.number}'s JSON hashes to ${hash}, the node says ${block.hash}`, {
      number: block.number,
      rebuilt: hash,
      hash: block.hash,
    })
  }
  return rlp
}
