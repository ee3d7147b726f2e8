import { hexToBytes, pad, toHex, type Hex } from 'viem'

/**
 * Encodings between proofline's values and Noir/bb field elements.
 * A bytes32 travels as two 128-bit limbs (high, low), the OutputOracle's public-input layout.
 */

/** A bytes32 as its two 128-bit limbs, each a 32-byte field word. */
export function toLimbs(word: Hex): [Hex, Hex] {
  const b = hexToBytes(word)
  if (b.length !== 32) throw new TypeError(`expected 32 bytes, got ${word}`)
  return [pad(toHex(b.subarray(0, 16)), { size: 32 }), pad(toHex(b.subarray(16)), { size: 32 })]
}

/** The bytes32 two 128-bit limbs stand for. Throws when a limb is 128 bits or more. */
export function fromLimbs(hi: Hex, lo: Hex): Hex {
  const h = BigInt(hi)
  const l = BigInt(lo)
  if (h >= 1n << 128n || l >= 1n << 128n) throw new RangeError(`limbs ${hi}, ${lo} exceed 128 bits`)
  return pad(toHex((h << 128n) | l), { size: 32 })
}

/** A number as a 32-byte field word. */
export function fieldWord(n: number | bigint): Hex {
  return pad(toHex(BigInt(n)), { size: 32 })
}

/** Bytes as Noir's `[u8; N]` input (decimal strings), zero-padded to `length`. */
export function byteArray(bytes: Uint8Array, length: number): string[] {
  if (bytes.length > length) throw new RangeError(`${bytes.length} bytes do not fit in [u8; ${length}]`)
  const out = new Array<string>(length).fill('0')
  bytes.forEach((b, i) => (out[i] = String(b)))
  return out
}

/** Splits bb's binary public inputs (32-byte words) into hex words. */
export function splitWords(bytes: Uint8Array): Hex[] {
  if (bytes.length % 32 !== 0) throw new RangeError(`public inputs of ${bytes.length} bytes are not whole 32-byte words`)
  const out: Hex[] = []
  for (let i = 0; i < bytes.length; i += 32) out.push(toHex(bytes.subarray(i, i + 32)))
  return out
}
