import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { keccak256, type Abi, type Hex } from 'viem'
import { ProoflineError } from '../../core/errors.js'
import { withCacheLock } from '../crs/cache-lock.js'
import { g2EvmWords, IGNITION_G2, type ResolvedCrs } from '../crs/types.js'
import { runBb } from '../noir/bb.js'

/**
 * The UltraHonk Solidity verifier of a program, for the CRS in use.
 *
 * `bb write_solidity_verifier --optimized -t evm` writes a verifier whose pairing check
 * hard-codes Ignition's [x]_2 as four 32-byte words. Under a development CRS those four words
 * are replaced by the CRS's own [tau]_2 (each must occur exactly once, or generation fails),
 * so the contract verifies proofs made over that CRS — on the dev L1 and in an in-process EVM
 * alike. The source is compiled with the bundled solc-js (offline) and cached by the sha256 of
 * the patched source.
 */

/** The solc settings of the generated verifier (the same EVM version as the project's contracts). */
export const VERIFIER_SOLC_SETTINGS = { evmVersion: 'cancun', optimizer: { enabled: true, runs: 200 } } as const

/** A compiled verifier contract. */
export interface HonkVerifierArtifact {
  /** The contract name in the source (`HonkVerifier`). */
  contractName: string
  /** The patched Solidity source's sha256 (hex). */
  sourceSha256: string
  /** Where the patched source is kept. */
  sourcePath: string
  abi: Abi
  bytecode: Hex
  deployedBytecode: Hex
  /** keccak256 of the runtime code: what `extcodehash` of a deployed verifier must equal. */
  codeHash: Hex
  /** The CRS whose G2 the contract checks against. */
  crs: { kind: ResolvedCrs['kind']; g1Sha256: string }
  compiler: string
}

/** Building the verifier failed. */
export class VerifierBuildError extends ProoflineError {
  constructor(message: string, details: Record<string, unknown> = {}, cause?: unknown) {
    super('VERIFIER_BUILD_FAILED', message, { retryable: false, details, cause })
  }
}

/**
 * Replaces Ignition's [x]_2 in a generated verifier by `crs`'s own. Throws unless each of the
 * four words occurs exactly once (a different bb would need a look at its template first).
 */
export function patchVerifierG2(source: string, crs: Pick<ResolvedCrs, 'kind' | 'g2'>): string {
  const from = g2EvmWords(IGNITION_G2)
  for (const [i, w] of from.entries()) {
    const n = source.split(w).length - 1
    if (n !== 1) throw new VerifierBuildError(`the generated verifier holds Ignition's G2 word ${i} ${n} times (expected once): this bb version's template is not the one proofline patches`, { word: w, count: n })
  }
  if (crs.kind === 'ignition') return source
  if (crs.g2 === null) throw new VerifierBuildError('the CRS in use has no known G2 point on this machine (it was fetched only to prove): build the verifier where the CRS was generated')
  const to = g2EvmWords(crs.g2)
  let out = source
  for (const [i, w] of from.entries()) out = out.replace(w, to[i] as string)
  return out
}

interface SolcOutput {
  errors?: { severity: string; formattedMessage: string }[]
  contracts?: Record<string, Record<string, { abi: Abi; evm: { bytecode: { object: string }; deployedBytecode: { object: string } } }>>
}

/** Compiles one Solidity source with the bundled solc-js. */
export function compileSolidity(source: string, file: string, contractName: string): { abi: Abi; bytecode: Hex; deployedBytecode: Hex; compiler: string } {
  const require = createRequire(import.meta.url)
  const solc = require('solc') as { compile(input: string): string; version(): string }
  const input = {
    language: 'Solidity',
    sources: { [file]: { content: source } },
    settings: { ...VERIFIER_SOLC_SETTINGS, outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } } },
  }
  const out = JSON.parse(solc.compile(JSON.stringify(input))) as SolcOutput
  const errors = (out.errors ?? []).filter((e) => e.severity === 'error')
  if (errors.length > 0) throw new VerifierBuildError(`solc failed on ${file}: ${errors.map((e) => e.formattedMessage).join('\n')}`)
  const c = out.contracts?.[file]?.[contractName]
  if (!c) throw new VerifierBuildError(`solc produced no contract ${contractName} from ${file}`)
  return { abi: c.abi, bytecode: `0x${c.evm.bytecode.object}`, deployedBytecode: `0x${c.evm.deployedBytecode.object}`, compiler: `solc-js ${solc.version()}` }
}

/** Options of {@link buildHonkVerifier}. */
export interface BuildHonkVerifierOptions {
  bbPath: string
  /** The program's verification key, written with `-t evm`. */
  vkPath: string
  crs: Pick<ResolvedCrs, 'kind' | 'g2' | 'g1Sha256'>
  cacheDir: string
  signal?: AbortSignal
}

/** Generates, patches and compiles the verifier for a verification key and a CRS (cached). */
export async function buildHonkVerifier(opts: BuildHonkVerifierOptions): Promise<HonkVerifierArtifact> {
  const vk = await readFile(opts.vkPath)
  const key = createHash('sha256').update(vk).update(opts.crs.g1Sha256).update(JSON.stringify(opts.crs.g2)).update(JSON.stringify(VERIFIER_SOLC_SETTINGS)).digest('hex')
  const dir = join(opts.cacheDir, 'verifiers', key.slice(0, 32))
  const artifactPath = join(dir, 'verifier.json')
  if (existsSync(artifactPath)) return JSON.parse(await readFile(artifactPath, 'utf8')) as HonkVerifierArtifact
  return withCacheLock(dir, async () => {
    if (existsSync(artifactPath)) return JSON.parse(await readFile(artifactPath, 'utf8')) as HonkVerifierArtifact
    await mkdir(dir, { recursive: true })
    const generated = join(dir, 'HonkVerifier.generated.sol')
    await runBb(opts.bbPath, ['write_solidity_verifier', '-k', opts.vkPath, '-o', generated, '-t', 'evm', '--optimized'], opts.signal ? { signal: opts.signal } : {})
    const source = patchVerifierG2(await readFile(generated, 'utf8'), opts.crs)
    const sourcePath = join(dir, 'HonkVerifier.sol')
    await writeFile(sourcePath, source)
    const compiled = compileSolidity(source, 'HonkVerifier.sol', 'HonkVerifier')
    const artifact: HonkVerifierArtifact = {
      contractName: 'HonkVerifier',
      sourceSha256: createHash('sha256').update(source).digest('hex'),
      sourcePath,
      abi: compiled.abi,
      bytecode: compiled.bytecode,
      deployedBytecode: compiled.deployedBytecode,
      codeHash: keccak256(compiled.deployedBytecode),
      crs: { kind: opts.crs.kind, g1Sha256: opts.crs.g1Sha256 },
      compiler: compiled.compiler,
    }
    const tmp = `${artifactPath}.${process.pid}.tmp`
    await writeFile(tmp, JSON.stringify(artifact))
    await rename(tmp, artifactPath)
    return artifact
  }, opts.signal ? { signal: opts.signal } : {})
}
