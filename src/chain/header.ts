import { keccak256, toRlp, type Hex } from 'viem'

/**
 * Block header hashing: `hash = keccak256(rlp(header))`, with the fields of the JSON-RPC block
 * in consensus order. The watcher and the output-root code recompute it so that a node (or a
 * proxy in front of it) cannot hand out a block whose `hash` is not its header's: every hash
 * the pipeline commits to (job ids, output roots) is then the real one.
 */

/** Fields every header has, in order, and how each is encoded. */
const BASE_FIELDS: readonly (readonly [string, 'bytes' | 'quantity'])[] = [
  ['parentHash', 'bytes'],
  ['sha3Uncles', 'bytes'],
  ['miner', 'bytes'],
  ['stateRoot', 'bytes'],
  ['transactionsRoot', 'bytes'],
  ['receiptsRoot', 'bytes'],
  ['logsBloom', 'bytes'],
  ['difficulty', 'quantity'],
  ['number', 'quantity'],
  ['gasLimit', 'quantity'],
  ['gasUsed', 'quantity'],
  ['timestamp', 'quantity'],
  ['extraData', 'bytes'],
  ['mixHash', 'bytes'],
  ['nonce', 'bytes'],
]

/** Fields later forks appended (London, Shanghai, Cancun, Cancun, Prague); present as a prefix of this list. */
const FORK_FIELDS: readonly (readonly [string, 'bytes' | 'quantity'])[] = [
  ['baseFeePerGas', 'quantity'],
  ['withdrawalsRoot', 'bytes'],
  ['blobGasUsed', 'quantity'],
  ['excessBlobGas', 'quantity'],
  ['parentBeaconBlockRoot', 'bytes'],
  ['requestsHash', 'bytes'],
]

const HEX = /^0x[0-9a-fA-F]*$/

function encode(name: string, value: unknown, kind: 'bytes' | 'quantity'): Hex {
  if (typeof value !== 'string' || !HEX.test(value)) throw new TypeError(`header field ${name} is not a hex string`)
  if (kind === 'bytes') {
    if (value.length % 2 !== 0) throw new TypeError(`header field ${name} has an odd number of hex digits`)
    return value.toLowerCase() as Hex
  }
  // A quantity is its minimal big-endian bytes; zero is the empty string.
  const digits = value.slice(2).replace(/^0+/, '').toLowerCase()
  if (digits === '') return '0x'
  return `0x${digits.length % 2 === 1 ? '0' : ''}${digits}`
}

/**
 * keccak256 of the RLP of a block header given as a JSON-RPC block object. Throws `TypeError`
 * when a header field is missing or malformed, or when the fork fields are not a prefix of
 * the known list (a header from a chain with fields this code does not know).
 */
export function blockHeaderHash(block: Record<string, unknown>): Hex {
  const items: Hex[] = BASE_FIELDS.map(([name, kind]) => encode(name, block[name], kind))
  let missing: string | undefined
  for (const [name, kind] of FORK_FIELDS) {
    const value = block[name]
    if (value === undefined || value === null) {
      missing ??= name
      continue
    }
    if (missing !== undefined) throw new TypeError(`header field ${name} is present but ${missing} is not: an unknown header layout`)
    items.push(encode(name, value, kind))
  }
  return keccak256(toRlp(items))
}

/** Whether `block.hash` is the hash of its header; false also when the header cannot be encoded. */
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
