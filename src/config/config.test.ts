import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { ConfigError } from '../core/errors.js'
import { loadConfig, parseConfig } from './load.js'

const base = `
version: 1
source: { type: synthetic }
stages:
  - name: range
    input: blocks
    collector: { strategy: sequential, maxCount: 4 }
    executor: { type: mock }
`

function errorOf(fn: () => unknown): ConfigError {
  try {
    fn()
  } catch (err) {
    if (err instanceof ConfigError) return err
    throw err
  }
  throw new Error('expected a ConfigError')
}

describe('config', () => {
  it('behavior: defaults are filled in one place and paths resolve against the file', () => {
    const cfg = parseConfig(base, '/srv/pipelines/p.yaml')
    expect(cfg.dataDir).toBe('/srv/pipelines/.proofline')
    expect(cfg.state).toEqual({ type: 'embedded', schema: 'proofline', dir: '/srv/pipelines/.proofline/postgres' })
    expect(cfg.bus).toEqual({ type: 'local', pollIntervalMs: 200 })
    expect(cfg.stages[0]?.output).toBe('proofs.range')
    expect(cfg.stages[0]?.retry.maxAttempts).toBe(5)
    expect(cfg.source.startBlock).toBe(1)
  })

  it('behavior: a typo names the key path and the file', () => {
    const text = base.replace('maxCount: 4', 'maxCont: 4')
    const err = errorOf(() => parseConfig(text, '/x/typo.yaml'))
    expect(err.message).toContain('/x/typo.yaml')
    expect(err.message).toContain('stages[0].collector.maxCont: unknown key')
    expect(err.retryable).toBe(false)
  })

  it('behavior: a wrong type names the path and what was expected', () => {
    const err = errorOf(() => parseConfig(base.replace('maxCount: 4', 'maxCount: "four"'), '/x/p.yaml'))
    expect(err.message).toMatch(/stages\[0\]\.collector\.maxCount: .*expected number/i)
  })

  it('behavior: a stage reading a subject nobody produces is refused', () => {
    const err = errorOf(() => parseConfig(base.replace('input: blocks', 'input: prooofs.range'), '/x/p.yaml'))
    expect(err.message).toContain('stages[0].input')
    expect(err.message).toContain('not produced')
  })

  it('behavior: invalid YAML reports line and column', () => {
    const err = errorOf(() => parseConfig('version: 1\nstages: [\n', '/x/bad.yaml'))
    expect(err.message).toMatch(/\/x\/bad\.yaml:\d+:\d+: invalid YAML/)
  })

  it('behavior: env overrides address keys and stages by name, with typed values', () => {
    const cfg = parseConfig(base, '/x/p.yaml', {
      env: {
        PROOFLINE_STAGES__RANGE__RETRY__MAX_ATTEMPTS: '9',
        PROOFLINE_DATA_DIR: '/var/lib/proofline',
        PROOFLINE_API__ENABLED: 'false',
        PROOFLINE_OWNER: 'ignored-reserved',
        PROOFLINE_NAME: '0xe7f1725e7734ce288f8367e1bb143e90bb3f0512',
        HOME: '/root',
      },
    })
    expect(cfg.stages[0]?.retry.maxAttempts).toBe(9)
    expect(cfg.dataDir).toBe('/var/lib/proofline')
    expect(cfg.api.enabled).toBe(false)
    // An address is not a hex number.
    expect(cfg.name).toBe('0xe7f1725e7734ce288f8367e1bb143e90bb3f0512')
    expect(cfg.envOverrides).toEqual(['PROOFLINE_API__ENABLED', 'PROOFLINE_DATA_DIR', 'PROOFLINE_NAME', 'PROOFLINE_STAGES__RANGE__RETRY__MAX_ATTEMPTS'])
  })

  it('behavior: a bad env override is reported with the variable name', () => {
    const err = errorOf(() => parseConfig(base, '/x/p.yaml', { env: { PROOFLINE_STAGES__NOPE__RETRY__MAX_ATTEMPTS: '3' } }))
    expect(err.message).toContain('PROOFLINE_STAGES__NOPE__RETRY__MAX_ATTEMPTS')
    const err2 = errorOf(() => parseConfig(base, '/x/p.yaml', { env: { PROOFLINE_STAGES__RANGE__RETRY__MAX_ATTEMPTS: 'many' } }))
    expect(err2.message).toContain('env overrides PROOFLINE_STAGES__RANGE__RETRY__MAX_ATTEMPTS')
    expect(err2.message).toContain('stages[0].retry.maxAttempts')
  })

  it('behavior: a missing file is a config error naming the file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pl-cfg-'))
    await expect(loadConfig(join(dir, 'nope.yaml'))).rejects.toThrow(/nope\.yaml: cannot read/)
    await writeFile(join(dir, 'ok.yaml'), base)
    await expect(loadConfig(join(dir, 'ok.yaml'))).resolves.toMatchObject({ file: join(dir, 'ok.yaml') })
  })

  it('behavior: the deployment pipeline file is valid and distributed', async () => {
    const cfg = await loadConfig(new URL('../../deploy/pipeline.yaml', import.meta.url).pathname, { env: { PROOFLINE_STATE__URL: 'postgres://x@y/z' } })
    expect([cfg.state.type, cfg.bus.type, cfg.artifacts.type]).toEqual(['postgres', 'nats', 's3'])
    expect(cfg.stages.every((s) => !s.dispatch.inProcess && s.dispatch.pools.map((p) => p.name).join() === 'own,cloud')).toBe(true)
  })

  it('behavior: a later pool without an overflow threshold is refused', () => {
    const text = base.replace('executor: { type: mock }', 'executor: { type: mock }\n    dispatch: { pools: [{ name: own }, { name: cloud }] }')
    expect(errorOf(() => parseConfig(text, '/x/p.yaml')).message).toContain('stages[0].dispatch.pools[1].overflowAfterMs')
  })

  it('behavior: the shipped example config is valid', async () => {
    const cfg = await loadConfig(new URL('../../examples/synthetic.yaml', import.meta.url).pathname)
    expect(cfg.stages.map((s) => s.name)).toEqual(['range', 'aggregate'])
    const exe = cfg.stages[0]?.executor
    expect(exe?.type === 'process' && exe.command[1]?.endsWith('examples/mock-prover.mjs')).toBe(true)
  })

  it('behavior: the http executor example is valid; token and tokenEnv together, or a PROOFLINE_ tokenEnv, are refused', async () => {
    const cfg = await loadConfig(new URL('../../examples/http-partner.yaml', import.meta.url).pathname)
    expect(cfg.stages[0]?.executor).toMatchObject({ type: 'http', tokenEnv: 'PARTNER_TOKEN', requestTimeoutMs: 30_000, maxPollErrors: 5, inlineArtifacts: true })
    const http = (extra: string): string => base.replace('executor: { type: mock }', `executor: { type: http, url: "https://p.example", ${extra} }`)
    expect(errorOf(() => parseConfig(http('token: a, tokenEnv: B'), '/x/p.yaml')).message).toContain('not both')
    expect(errorOf(() => parseConfig(http('tokenEnv: PROOFLINE_TOKEN'), '/x/p.yaml')).message).toContain('stages[0].executor.tokenEnv')
    const overridden = parseConfig(http('timeoutMs: 5000'), '/x/p.yaml', { env: { PROOFLINE_STAGES__RANGE__EXECUTOR__TOKEN: 'from-env' } })
    expect(overridden.stages[0]?.executor).toMatchObject({ type: 'http', token: 'from-env', timeoutMs: 5000 })
  })
})
