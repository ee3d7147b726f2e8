import { execFile } from 'node:child_process'
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { outputOracleAbi } from './abis.js'
import { outputOracleBytecode, outputOracleDeployedBytecode } from './bytecode.js'

const run = promisify(execFile)
const repo = fileURLToPath(new URL('../..', import.meta.url))
const script = join(repo, 'scripts', 'build-contracts.mjs')

async function check(root: string): Promise<{ code: number; stderr: string }> {
  try {
    await run(process.execPath, [script, '--check', '--root', root])
    return { code: 0, stderr: '' }
  } catch (err) {
    const e = err as { code?: number; stderr?: string }
    return { code: e.code ?? -1, stderr: e.stderr ?? '' }
  }
}

describe('contract artifacts', () => {
  it('behavior: recompiling the sources offline gives byte-identical committed artifacts', async () => {
    expect(await check(repo)).toEqual({ code: 0, stderr: '' })
  })

  it('behavior: a source edit without a rebuild is reported as drift', async () => {
    const root = mkdtempSync(join(tmpdir(), 'proofline-contracts-'))
    cpSync(join(repo, 'src', 'contracts'), join(root, 'src', 'contracts'), { recursive: true })
    const sol = join(root, 'src', 'contracts', 'OutputOracle.sol')
    writeFileSync(sol, readFileSync(sol, 'utf8').replace('PUBLIC_INPUTS_LENGTH = 12', 'PUBLIC_INPUTS_LENGTH = 13'))
    const result = await check(root)
    expect(result.code).toBe(1)
    expect(result.stderr).toContain('src/contracts/artifacts/OutputOracle.json')
    expect(result.stderr).toContain('src/contracts/bytecode.ts')
  })

  it('behavior: the typed exports agree with the JSON artifact', () => {
    const artifact = JSON.parse(readFileSync(join(repo, 'src/contracts/artifacts/OutputOracle.json'), 'utf8')) as Record<string, unknown>
    expect(artifact.abi).toEqual(outputOracleAbi)
    expect(artifact.bytecode).toBe(outputOracleBytecode)
    expect(artifact.deployedBytecode).toBe(outputOracleDeployedBytecode)
    expect(artifact.compiler).toMatchObject({ settings: { evmVersion: 'cancun', optimizer: { enabled: true } } })
  })
})
