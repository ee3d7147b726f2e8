import { createCipheriv, createDecipheriv, pbkdf2, randomBytes, randomUUID, scrypt, timingSafeEqual } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { inspect } from 'node:util'
import { bytesToHex, hexToBytes, keccak256, type Hex, type LocalAccount } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { ProoflineError } from '../core/errors.js'

/**
 * The proposer's signing key: a raw private key from the environment, or an encrypted JSON
 * keystore (Web3 Secret Storage v3, as written by geth, foundry's `cast wallet` and ethers).
 * The key never leaves the returned account's closures: the account's `toString`, `toJSON`
 * and `util.inspect` show the address only, and no error message quotes it.
 */

/** Env var holding a raw private key (hex, `0x` optional). Not `PROOFLINE_*`: those are config overrides. */
export const PRIVATE_KEY_ENV = 'PROPOSER_PRIVATE_KEY'
/** Default env var holding the keystore's password. */
export const KEYSTORE_PASSWORD_ENV = 'PROPOSER_KEYSTORE_PASSWORD'

/** Options of {@link loadSigner}. */
export interface LoadSignerOptions {
  /** Where env vars are read from. @default process.env */
  env?: Record<string, string | undefined>
  /** A Web3 Secret Storage v3 JSON file; when set, `PROPOSER_PRIVATE_KEY` must be unset. */
  keystorePath?: string
  /** The env var holding the keystore's password. @default 'PROPOSER_KEYSTORE_PASSWORD' */
  passwordEnv?: string
}

/** Signer errors. None is retryable: each needs an operator's fix. */
export class SignerError extends ProoflineError {
  constructor(
    code: 'SIGNER_MISSING' | 'SIGNER_AMBIGUOUS' | 'SIGNER_KEY_INVALID' | 'KEYSTORE_UNREADABLE' | 'KEYSTORE_INVALID' | 'KEYSTORE_PASSWORD_MISSING' | 'KEYSTORE_WRONG_PASSWORD',
    message: string,
    details: Record<string, unknown> = {},
  ) {
    // No `cause`: a cause from a key parser could quote the key.
    super(code, message, { retryable: false, details })
  }
}

/**
 * Loads the proposer's account from `keystorePath` (password from `passwordEnv`) or from
 * `PROPOSER_PRIVATE_KEY`. Exactly one source must be configured.
 */
export async function loadSigner(opts: LoadSignerOptions = {}): Promise<LocalAccount> {
  const env = opts.env ?? process.env
  const rawKey = env[PRIVATE_KEY_ENV]
  const hasEnvKey = rawKey !== undefined && rawKey.trim() !== ''
  if (opts.keystorePath !== undefined) {
    if (hasEnvKey) {
      throw new SignerError('SIGNER_AMBIGUOUS', `both ${PRIVATE_KEY_ENV} and a keystore (${opts.keystorePath}) are set; unset one of them`)
    }
    const passwordEnv = opts.passwordEnv ?? KEYSTORE_PASSWORD_ENV
    const password = env[passwordEnv]
    if (password === undefined) {
      throw new SignerError('KEYSTORE_PASSWORD_MISSING', `the keystore ${opts.keystorePath} needs its password in the env var ${passwordEnv}`, { passwordEnv })
    }
    let text: string
    try {
      text = await readFile(opts.keystorePath, 'utf8')
    } catch (err) {
      throw new SignerError('KEYSTORE_UNREADABLE', `cannot read the keystore ${opts.keystorePath}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, {
        path: opts.keystorePath,
      })
    }
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch {
      throw new SignerError('KEYSTORE_INVALID', `the keystore ${opts.keystorePath} is not JSON`, { path: opts.keystorePath })
    }
    return redacted(privateKeyToAccount(await decryptKeystore(json, password)))
  }
  if (!hasEnvKey) {
    throw new SignerError('SIGNER_MISSING', `no proposer key: set ${PRIVATE_KEY_ENV}, or give a keystore path (proposer.keystorePath) and its password in ${KEYSTORE_PASSWORD_ENV}`)
  }
  const key = rawKey.trim()
  if (!/^(0x)?[0-9a-fA-F]{64}$/.test(key)) {
    throw new SignerError('SIGNER_KEY_INVALID', `${PRIVATE_KEY_ENV} must be 32 bytes of hex (64 hex digits, 0x optional); its value is not shown`)
  }
  const hex = (key.startsWith('0x') ? key : `0x${key}`).toLowerCase() as Hex
  try {
    return redacted(privateKeyToAccount(hex))
  } catch {
    throw new SignerError('SIGNER_KEY_INVALID', `${PRIVATE_KEY_ENV} is not a valid secp256k1 private key; its value is not shown`)
  }
}

/** Makes every printable view of the account show its address only. */
function redacted(account: LocalAccount): LocalAccount {
  const view = { address: account.address }
  const hidden = (value: unknown): PropertyDescriptor => ({ value, enumerable: false, writable: false, configurable: false })
  Object.defineProperties(account, {
    toJSON: hidden(() => view),
    toString: hidden(() => `Signer(${account.address})`),
    [inspect.custom]: hidden(() => `Signer { address: '${account.address}' }`),
  })
  return account
}

/** A Web3 Secret Storage v3 keystore. */
export interface KeystoreV3 {
  version: 3
  id: string
  address?: string
  crypto: {
    cipher: 'aes-128-ctr'
    cipherparams: { iv: string }
    ciphertext: string
    kdf: 'scrypt' | 'pbkdf2'
    kdfparams: ScryptParams | Pbkdf2Params
    mac: string
  }
}

interface ScryptParams {
  dklen: number
  n: number
  r: number
  p: number
  salt: string
}

interface Pbkdf2Params {
  dklen: number
  c: number
  prf: 'hmac-sha256'
  salt: string
}

const strip = (h: string): string => (h.startsWith('0x') ? h.slice(2) : h)
const buf = (h: string): Buffer => Buffer.from(strip(h), 'hex')

function deriveKey(password: string, kdf: string, params: Record<string, unknown>): Promise<Buffer> {
  const invalid = (what: string): SignerError => new SignerError('KEYSTORE_INVALID', `keystore ${what}`)
  const int = (name: string): number => {
    const v = params[name]
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw invalid(`kdfparams.${name} must be a positive integer`)
    return v
  }
  if (typeof params.salt !== 'string') throw invalid('kdfparams.salt is missing')
  const salt = buf(params.salt)
  const dklen = int('dklen')
  if (dklen < 32) throw invalid('kdfparams.dklen must be at least 32')
  const secret = Buffer.from(password, 'utf8')
  if (kdf === 'scrypt') {
    const N = int('n')
    const r = int('r')
    const p = int('p')
    return new Promise((resolve, reject) => {
      // maxmem above scrypt's 128·N·r + 128·r·p working set (geth's default N = 2^18, r = 8 needs 256 MiB).
      // OpenSSL enforces RFC 7914's N < 2^(16·r), which geth does not: such a (rare) keystore
      // is refused here; re-encrypt it with `cast wallet` or geth's defaults.
      const done = (err: Error | null, key: Buffer): void => (err ? reject(invalid(`scrypt parameters rejected: ${err.message}`)) : resolve(key))
      try {
        scrypt(secret, salt, dklen, { N, r, p, maxmem: 128 * r * (N + p + 2) + 64 * 1024 * 1024 }, done)
      } catch (err) {
        reject(invalid(`scrypt parameters (n ${N}, r ${r}, p ${p}) rejected: ${(err as Error).message}`))
      }
    })
  }
  if (kdf === 'pbkdf2') {
    if (params.prf !== 'hmac-sha256') throw invalid('pbkdf2 prf must be hmac-sha256')
    const c = int('c')
    return new Promise((resolve, reject) => {
      pbkdf2(secret, salt, c, dklen, 'sha256', (err, key) => (err ? reject(invalid(`pbkdf2 failed: ${err.message}`)) : resolve(key)))
    })
  }
  throw invalid(`kdf ${JSON.stringify(kdf)} is not supported (scrypt or pbkdf2)`)
}

const macOf = (derived: Buffer, ciphertext: Buffer): Buffer => Buffer.from(hexToBytes(keccak256(Buffer.concat([derived.subarray(16, 32), ciphertext]))))

/**
 * Decrypts a v3 keystore. Rejects with `KEYSTORE_WRONG_PASSWORD` when the MAC does not match
 * and `KEYSTORE_INVALID` when the file is not a v3 keystore or its address is not the key's.
 */
export async function decryptKeystore(json: unknown, password: string): Promise<Hex> {
  const invalid = (what: string): SignerError => new SignerError('KEYSTORE_INVALID', `keystore ${what}`)
  if (typeof json !== 'object' || json === null) throw invalid('is not a JSON object')
  const ks = json as Record<string, unknown>
  if (ks.version !== 3) throw invalid(`version ${String(ks.version)} is not supported (3)`)
  const c = (ks.crypto ?? ks.Crypto) as Record<string, unknown> | undefined
  if (typeof c !== 'object' || c === null) throw invalid('has no crypto section')
  if (c.cipher !== 'aes-128-ctr') throw invalid(`cipher ${JSON.stringify(c.cipher)} is not supported (aes-128-ctr)`)
  const iv = (c.cipherparams as { iv?: unknown } | undefined)?.iv
  if (typeof iv !== 'string' || typeof c.ciphertext !== 'string' || typeof c.mac !== 'string' || typeof c.kdf !== 'string') {
    throw invalid('is missing iv, ciphertext, mac or kdf')
  }
  const derived = await deriveKey(password, c.kdf, (c.kdfparams ?? {}) as Record<string, unknown>)
  const ciphertext = buf(c.ciphertext)
  const expected = buf(c.mac)
  const mac = macOf(derived, ciphertext)
  if (expected.length !== mac.length || !timingSafeEqual(expected, mac)) {
    throw new SignerError('KEYSTORE_WRONG_PASSWORD', `wrong keystore password (MAC mismatch); check the password env var`)
  }
  const decipher = createDecipheriv('aes-128-ctr', derived.subarray(0, 16), buf(iv))
  const key = Buffer.concat([decipher.update(ciphertext), decipher.final()])
  if (key.length !== 32) throw invalid('does not hold a 32-byte key')
  const hex = bytesToHex(key)
  if (typeof ks.address === 'string' && ks.address !== '') {
    let address: string
    try {
      address = privateKeyToAccount(hex).address
    } catch {
      throw invalid('holds an invalid secp256k1 key')
    }
    if (strip(ks.address).toLowerCase() !== strip(address).toLowerCase()) throw invalid(`address ${ks.address} is not the address of the key it holds`)
  }
  return hex
}

/**
 * Encrypts a private key into a v3 keystore (scrypt + aes-128-ctr). The defaults are geth's
 * "standard" parameters; tests pass a small `n`.
 */
export async function encryptKeystore(privateKey: Hex, password: string, opts: { n?: number; r?: number; p?: number } = {}): Promise<KeystoreV3> {
  const kdfparams: ScryptParams = { dklen: 32, n: opts.n ?? 262_144, r: opts.r ?? 8, p: opts.p ?? 1, salt: randomBytes(32).toString('hex') }
  const derived = await deriveKey(password, 'scrypt', { ...kdfparams })
  const iv = randomBytes(16)
  const cipher = createCipheriv('aes-128-ctr', derived.subarray(0, 16), iv)
  const ciphertext = Buffer.concat([cipher.update(buf(privateKey)), cipher.final()])
  return {
    version: 3,
    id: randomUUID(),
    address: strip(privateKeyToAccount(privateKey).address).toLowerCase(),
    crypto: {
      cipher: 'aes-128-ctr',
      cipherparams: { iv: iv.toString('hex') },
      ciphertext: ciphertext.toString('hex'),
      kdf: 'scrypt',
      kdfparams,
      mac: macOf(derived, ciphertext).toString('hex'),
    },
  }
}
