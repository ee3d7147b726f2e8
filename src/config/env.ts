import { parse as parseYamlValue } from 'yaml'
import { ConfigError } from '../core/errors.js'

/** The prefix of config overrides in the environment. */
export const ENV_PREFIX = 'PROOFLINE_'

/**
 * Environment variables that start with `PROOFLINE_` but are not config overrides: they
 * are set by proofline itself for its children, or are test hooks.
 */
export const RESERVED_ENV = new Set(['PROOFLINE_OWNER', 'PROOFLINE_ATTEMPT', 'PROOFLINE_CRASH_AT'])

/** `TIMEOUT_MS` → `timeoutMs`. */
function camel(segment: string): string {
  return segment.toLowerCase().replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase())
}

function normalise(key: string): string {
  return key.toLowerCase().replace(/_/g, '')
}

/**
 * Applies `PROOFLINE_A__B__C=value` overrides to a raw config object (before validation).
 * Path segments are separated by `__`; each segment matches an existing key
 * case-insensitively ignoring underscores (`DATA_DIR` → `dataDir`), or becomes a new
 * camelCase key. In arrays a segment is an index or, for `stages`, a stage name
 * (`PROOFLINE_STAGES__RANGE__EXECUTOR__TIMEOUT_MS=5000`). Values are YAML scalars
 * (`5000` is a number, `true` a boolean, `[a, b]` a list; `0x…` stays text).
 * Returns the overrides applied, for logs.
 */
export function applyEnvOverrides(raw: Record<string, unknown>, env: Record<string, string | undefined>): string[] {
  const applied: string[] = []
  for (const [name, value] of Object.entries(env).sort(([a], [b]) => a.localeCompare(b))) {
    if (!name.startsWith(ENV_PREFIX) || value === undefined || RESERVED_ENV.has(name)) continue
    const segments = name.slice(ENV_PREFIX.length).split('__')
    if (segments.some((s) => s.length === 0)) {
      throw new ConfigError(`environment variable ${name}: empty path segment; separate keys with a double underscore`, { env: name })
    }
    let target: unknown = raw
    for (let i = 0; i < segments.length; i++) {
      const seg = segments[i] as string
      const last = i === segments.length - 1
      const parsed: unknown = last ? parseEnvValue(name, value) : undefined
      if (Array.isArray(target)) {
        const index = arrayIndex(target, seg)
        if (index === undefined) {
          throw new ConfigError(`environment variable ${name}: "${seg}" is neither an index nor a stage name in the list`, { env: name })
        }
        if (last) target[index] = parsed
        else target = target[index]
        continue
      }
      if (target === null || typeof target !== 'object') {
        throw new ConfigError(`environment variable ${name}: cannot set a key inside a scalar at "${segments.slice(0, i).join('__')}"`, { env: name })
      }
      const obj = target as Record<string, unknown>
      const key = Object.keys(obj).find((k) => normalise(k) === normalise(seg)) ?? camel(seg)
      if (last) {
        obj[key] = parsed
      } else {
        if (obj[key] === undefined) obj[key] = {}
        target = obj[key]
      }
    }
    applied.push(name)
  }
  return applied
}

function arrayIndex(list: unknown[], seg: string): number | undefined {
  if (/^\d+$/.test(seg)) {
    const i = Number(seg)
    return i < list.length ? i : undefined
  }
  const i = list.findIndex((item) => item !== null && typeof item === 'object' && normalise(String((item as Record<string, unknown>).name ?? '')) === normalise(seg))
  return i >= 0 ? i : undefined
}

function parseEnvValue(name: string, value: string): unknown {
  try {
    const parsed = parseYamlValue(value) as unknown
    // YAML reads `0x…` as a number; only plain decimals become numbers (an address stays text).
    if (typeof parsed === 'number' && !/^-?\d+(\.\d+)?([eE][-+]?\d+)?$/.test(value.trim())) return value
    return parsed
  } catch (err) {
    throw new ConfigError(`environment variable ${name}: value is not a valid YAML scalar or flow list`, { env: name }, err)
  }
}
