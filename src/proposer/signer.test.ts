import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { inspect } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { privateKeyToAccount } from 'viem/accounts'
import { decryptKeystore, encryptKeystore, loadSigner, SignerError } from './signer.js'

const KEY = '0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318'
const ADDRESS = privateKeyToAccount(KEY).address
const BARE = KEY.slice(2)

/** Every way a secret could leak through a printed account or error. */
function leaks(text: string): boolean {
  return text.toLowerCase().includes(BARE.toLowerCase())
}

describe('loadSigner', () => {
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'proofline-signer-'))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('behavior: a private key from PROPOSER_PRIVATE_KEY gives its account (0x optional, whitespace trimmed)', async () => {
    const a = await loadSigner({ env: { PROPOSER_PRIVATE_KEY: KEY } })
    expect(a.address).toBe(ADDRESS)
    const b = await loadSigner({ env: { PROPOSER_PRIVATE_KEY: ` ${BARE}\n` } })
    expect(b.address).toBe(ADDRESS)
    // It signs like the key it holds.
    const sig = await a.signMessage({ message: 'hi' })
    expect(sig).toBe(await privateKeyToAccount(KEY).signMessage({ message: 'hi' }))
  })

  it('behavior: the key never appears in JSON.stringify, String, util.inspect or a logged object', async () => {
    const a = await loadSigner({ env: { PROPOSER_PRIVATE_KEY: KEY } })
    const views = [JSON.stringify(a), String(a), `${a as unknown as string}`, inspect(a), inspect({ signer: a }, { depth: 10, showHidden: true }), JSON.stringify({ signer: a })]
    for (const v of views) {
      expect(leaks(v)).toBe(false)
    }
    expect(JSON.parse(JSON.stringify(a))).toEqual({ address: ADDRESS })
    expect(inspect(a)).toContain(ADDRESS)
    // A pino-style logger serialises with JSON.stringify.
    const lines: string[] = []
    const logger = { info: (obj: object, msg: string) => lines.push(JSON.stringify({ ...obj, msg })) }
    logger.info({ signer: a }, 'loaded')
    expect(lines.join('\n')).toContain(ADDRESS)
    expect(leaks(lines.join('\n'))).toBe(false)
  })

  it('behavior: a malformed key is refused without quoting it', async () => {
    const bad = `${BARE.slice(0, 60)}zzzz`
    const err = await loadSigner({ env: { PROPOSER_PRIVATE_KEY: bad } }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(SignerError)
    expect((err as SignerError).code).toBe('SIGNER_KEY_INVALID')
    expect(leaks(JSON.stringify(err) + String(err) + inspect(err))).toBe(false)
    expect(String(err)).not.toContain(BARE.slice(0, 60))
    // Zero is hex of the right length but not a valid secp256k1 key.
    const zero = await loadSigner({ env: { PROPOSER_PRIVATE_KEY: `0x${'0'.repeat(64)}` } }).catch((e: unknown) => e)
    expect((zero as SignerError).code).toBe('SIGNER_KEY_INVALID')
  })

  it('behavior: no key configured says which env var to set', async () => {
    await expect(loadSigner({ env: {} })).rejects.toMatchObject({ code: 'SIGNER_MISSING', message: expect.stringContaining('PROPOSER_PRIVATE_KEY') })
  })

  it('behavior: a keystore this test encrypts decrypts to the same key with its password', async () => {
    const ks = await encryptKeystore(KEY, 'correct horse', { n: 1024 })
    expect(ks.crypto.ciphertext).not.toContain(BARE)
    const path = join(dir, 'ks.json')
    await writeFile(path, JSON.stringify(ks))
    const a = await loadSigner({ env: { PROPOSER_KEYSTORE_PASSWORD: 'correct horse' }, keystorePath: path })
    expect(a.address).toBe(ADDRESS)
    expect(leaks(JSON.stringify(a) + inspect(a))).toBe(false)
    const b = await loadSigner({ env: { MY_PW: 'correct horse' }, keystorePath: path, passwordEnv: 'MY_PW' })
    expect(b.address).toBe(ADDRESS)
  })

  it('behavior: a wrong keystore password is KEYSTORE_WRONG_PASSWORD, a missing one names the env var', async () => {
    const path = join(dir, 'ks2.json')
    await writeFile(path, JSON.stringify(await encryptKeystore(KEY, 'right', { n: 1024 })))
    await expect(loadSigner({ env: { PROPOSER_KEYSTORE_PASSWORD: 'wrong' }, keystorePath: path })).rejects.toMatchObject({ code: 'KEYSTORE_WRONG_PASSWORD' })
    await expect(loadSigner({ env: {}, keystorePath: path })).rejects.toMatchObject({
      code: 'KEYSTORE_PASSWORD_MISSING',
      message: expect.stringContaining('PROPOSER_KEYSTORE_PASSWORD'),
    })
  })

  it('behavior: a keystore and an env key at once are refused as ambiguous', async () => {
    const path = join(dir, 'ks3.json')
    await writeFile(path, JSON.stringify(await encryptKeystore(KEY, 'pw', { n: 1024 })))
    await expect(loadSigner({ env: { PROPOSER_PRIVATE_KEY: KEY, PROPOSER_KEYSTORE_PASSWORD: 'pw' }, keystorePath: path })).rejects.toMatchObject({
      code: 'SIGNER_AMBIGUOUS',
    })
  })

  it('behavior: a keystore whose address is not its key\'s, or that is not v3, is KEYSTORE_INVALID', async () => {
    const ks = await encryptKeystore(KEY, 'pw', { n: 1024 })
    await expect(decryptKeystore({ ...ks, address: '00'.repeat(20) }, 'pw')).rejects.toMatchObject({ code: 'KEYSTORE_INVALID' })
    await expect(decryptKeystore({ ...ks, version: 1 }, 'pw')).rejects.toMatchObject({ code: 'KEYSTORE_INVALID' })
    await expect(decryptKeystore('nope', 'pw')).rejects.toMatchObject({ code: 'KEYSTORE_INVALID' })
    const path = join(dir, 'garbage.json')
    await writeFile(path, '{not json')
    await expect(loadSigner({ env: { PROPOSER_KEYSTORE_PASSWORD: 'pw' }, keystorePath: path })).rejects.toMatchObject({ code: 'KEYSTORE_INVALID' })
    await expect(loadSigner({ env: { PROPOSER_KEYSTORE_PASSWORD: 'pw' }, keystorePath: join(dir, 'absent.json') })).rejects.toMatchObject({
      code: 'KEYSTORE_UNREADABLE',
    })
  })

  it('behavior: the Web3 Secret Storage spec pbkdf2 vector decrypts; geth-standard scrypt parameters decrypt', async () => {
    const expected = '0x7a28b5ba57c53603b0b07b56bba752f7784bf506fa95edc395f5cf6c7514fe9d'
    const scryptVector = {
      crypto: {
        cipher: 'aes-128-ctr',
        cipherparams: { iv: '83dbcc02d8ccb40e466191a123791e0e' },
        ciphertext: 'd172bf743a674da9cdad04534d56926ef8358534d458fffccd4e6ad2fbde479c',
        kdf: 'scrypt',
        kdfparams: { dklen: 32, n: 262144, p: 8, r: 1, salt: 'ab0c7876052600dd703518d6fc3fe8984592145b591fc8fb5c6d43190334ba19' },
        mac: '2103ac29920d71da29f15d75b4a16dbe95cfd7ff8faea1056c33131d846e3097',
      },
      id: '3198bc9c-6672-5ab3-d995-4942343ae5b6',
      version: 3,
    }
    // The spec's scrypt vector has r = 1 with n = 2^18, which breaks RFC 7914's n < 2^(16·r);
    // OpenSSL refuses it (geth's Go scrypt does not). It must be refused clearly, not crash.
    await expect(decryptKeystore(scryptVector, 'testpassword')).rejects.toMatchObject({ code: 'KEYSTORE_INVALID', message: expect.stringContaining('scrypt') })
    // The same vector re-encrypted with geth's standard parameters (r = 8) decrypts.
    expect(await decryptKeystore(await encryptKeystore(expected, 'testpassword'), 'testpassword')).toBe(expected)
    const pbkdf2Vector = {
      crypto: {
        cipher: 'aes-128-ctr',
        cipherparams: { iv: '6087dab2f9fdbbfaddc31a909735c1e6' },
        ciphertext: '5318b4d5bcd28de64ee5559e671353e16f075ecae9f99c7a79a38af5f869aa46',
        kdf: 'pbkdf2',
        kdfparams: { c: 262144, dklen: 32, prf: 'hmac-sha256', salt: 'ae3cd4e7013836a3df6bd7241b12db061dbe2c6785853cce422d148a624ce0bd' },
        mac: '517ead924a9d0dc3124507e3393d175ce3ff7c1e96529c6c555ce9e51205e9b2',
      },
      id: '3198bc9c-6672-5ab3-d995-4942343ae5b6',
      version: 3,
    }
    expect(await decryptKeystore(pbkdf2Vector, 'testpassword')).toBe(expected)
  })
})
