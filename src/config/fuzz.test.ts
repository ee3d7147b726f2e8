import fc from 'fast-check'
import { stringify } from 'yaml'
import { describe, expect, it } from 'vitest'
import { ConfigError } from '../core/errors.js'
import { parseConfig } from './load.js'

/**
 * The config loader under fuzzed input: any text, any value at any key, any env override ends
 * in a config or a ConfigError that names the file — never another exception — and no error
 * message quotes a secret from the file.
 */
const FILE = '/srv/fuzz/pipeline.yaml'
const SECRETS = ['NATS-TOKEN-s3cr3t-0001', 'S3-SECRET-KEY-s3cr3t-0002', 'API-TOKEN-s3cr3t-0003-xyz', 'PGPASS-s3cr3t-0004']

const valid = {
  version: 1,
  name: 'fuzz',
  state: { type: 'postgres', url: `postgres://proofline:${SECRETS[3]}@db:5432/proofline`, schema: 'proofline' },
  bus: { type: 'nats', servers: 'nats://nats:4222', token: SECRETS[0] },
  artifacts: { type: 's3', bucket: 'b', endpoint: 'http://s3:9000', accessKeyId: 'AKIA', secretAccessKey: SECRETS[1] },
  source: { type: 'l2', rpcUrl: 'http://l2:8545', startBlock: 2, safety: { kind: 'latest', confirmations: 1 } },
  stages: [
    {
      name: 'range',
      input: 'blocks',
      collector: { strategy: 'sequential', capacity: 30_000_000, maxCount: 64, timeoutMs: 2000 },
      executor: { type: 'process', command: ['node', 'prover.mjs'], timeoutMs: 30_000 },
      dispatch: { inProcess: false, pools: [{ name: 'own' }, { name: 'cloud', overflowAfterMs: 60_000 }] },
      retry: { maxAttempts: 12 },
    },
    { name: 'aggregate', input: 'proofs.range', collector: { strategy: 'sequential', maxCount: 2 }, executor: { type: 'mock' } },
  ],
  api: { token: SECRETS[2] },
  proposer: { l1RpcUrls: ['http://l1:8545'], oracle: `0x${'11'.repeat(20)}`, l2Confirmations: 65 },
}

/** Every path into a JSON value (objects and arrays), the root excluded. */
function paths(value: unknown, prefix: (string | number)[] = []): (string | number)[][] {
  if (value === null || typeof value !== 'object') return []
  const out: (string | number)[][] = []
  for (const [k, v] of Object.entries(value)) {
    const p = [...prefix, Array.isArray(value) ? Number(k) : k]
    out.push(p, ...paths(v, p))
  }
  return out
}

function setAt(root: unknown, path: (string | number)[], v: unknown): unknown {
  const copy = structuredClone(root) as Record<string | number, unknown>
  let at = copy
  for (const k of path.slice(0, -1)) at = at[k] as Record<string | number, unknown>
  const last = path[path.length - 1] as string | number
  if (v === undefined) {
    if (Array.isArray(at)) at.splice(last as number, 1)
    else delete at[last]
  } else at[last] = v
  return copy
}

/** A config or a ConfigError naming the file and quoting no secret; anything else fails. */
function load(text: string, env: Record<string, string> = {}): { ok: boolean; message?: string } {
  try {
    parseConfig(text, FILE, { env })
    return { ok: true }
  } catch (err) {
    expect(err, String(err)).toBeInstanceOf(ConfigError)
    const e = err as ConfigError
    expect(e.code).toBe('CONFIG_INVALID')
    expect(e.retryable).toBe(false)
    const shown = `${e.message}\n${JSON.stringify(e.toJSON())}`
    for (const s of SECRETS) expect(shown).not.toContain(s)
    if (!/^environment variable/.test(e.message)) expect(e.message).toContain(FILE)
    return { ok: false, message: e.message }
  }
}

describe('config loader (fuzzed)', () => {
  it('behavior: the valid base config loads', () => {
    expect(load(stringify(valid))).toEqual({ ok: true })
  })

  it('behavior: arbitrary text ends in a config or a ConfigError naming the file, never another exception', () => {
    fc.assert(fc.property(fc.string({ maxLength: 400 }), (text) => void load(text)), { numRuns: 500 })
    fc.assert(fc.property(fc.jsonValue(), (v) => void load(stringify(v))), { numRuns: 300 })
  })

  it('behavior: any key of a valid config set to any value (or removed) is accepted or refused with the key path, and no secret is quoted', () => {
    const all = paths(valid)
    fc.assert(
      fc.property(fc.constantFrom(...all), fc.option(fc.jsonValue(), { nil: undefined }), (path, value) => {
        const r = load(stringify(setAt(valid, path, value)))
        if (!r.ok) {
          // The message names where the problem is: a key path (stages[0].executor…), or the YAML position.
          expect(r.message).toMatch(/\n {2}- \S+: |invalid YAML|must be a YAML mapping/)
        }
      }),
      { numRuns: 600 },
    )
  })

  it('behavior: a secret with an invalid value is refused without quoting it', () => {
    const short = 'SHORT-s3cr3t' // api.token needs 16 characters
    const r = load(stringify(setAt(valid, ['api', 'token'], short)))
    expect(r.ok).toBe(false)
    expect(r.message).toContain('api.token')
    expect(r.message).not.toContain(short)
    const r2 = load(stringify(setAt(valid, ['bus', 'token'], { value: SECRETS[0] })))
    expect(r2.message).toContain('bus.token')
  })

  it('behavior: arbitrary PROOFLINE_ environment overrides end in a config or a ConfigError, never another exception', () => {
    const segment = fc.constantFrom('STATE', 'URL', 'BUS', 'TOKEN', 'STAGES', 'RANGE', '0', '7', 'EXECUTOR', 'TIMEOUT_MS', 'COMMAND', 'API', 'PORT', 'SOURCE', 'SAFETY', 'KIND', 'x', '')
    const name = fc.array(segment, { minLength: 1, maxLength: 4 }).map((s) => `PROOFLINE_${s.join('__')}`)
    const value = fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom('[a, b', '{', '0x12', '5000', 'true', '- x', '&a [*a]', '*x'))
    fc.assert(fc.property(fc.dictionary(name, value, { maxKeys: 4 }), (env) => void load(stringify(valid), env)), { numRuns: 500 })
  })

  it('behavior: YAML bombs and deep nesting are refused with a ConfigError', () => {
    const bomb = ['a: &a ["x","x","x","x","x","x","x","x","x"]', ...Array.from({ length: 9 }, (_, i) => `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)}]`)].join('\n')
    expect(load(bomb).ok).toBe(false)
    expect(load(`${'['.repeat(5000)}${']'.repeat(5000)}`).ok).toBe(false)
  })
})
