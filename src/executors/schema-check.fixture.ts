/**
 * A JSON Schema checker for the keywords docs/executor-protocol.schema.json uses (type,
 * required, properties, items, const, pattern, minimum, minLength, $ref, anyOf) — no JSON
 * Schema package. Shared by the protocol tests, which keep the docs and the code from drifting.
 */
export type Schema = Record<string, unknown>

const KNOWN = new Set(['$schema', '$id', '$defs', '$ref', 'title', 'description', 'type', 'required', 'properties', 'items', 'const', 'pattern', 'minimum', 'minLength', 'anyOf'])

function typeOf(v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'array'
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number'
  return typeof v
}

/** A checker over a root schema's `$defs`: returns the violations of `value` as `path: problem` strings. */
export function schemaChecker(root: Schema): (s: Schema, value: unknown, path?: string) => string[] {
  const defs = (root['$defs'] ?? {}) as Record<string, Schema>
  const check = (s: Schema, value: unknown, path = '$'): string[] => {
    for (const k of Object.keys(s)) if (!KNOWN.has(k)) throw new Error(`schema keyword ${k} at ${path} is not supported by this checker`)
    const errors: string[] = []
    if (typeof s['$ref'] === 'string') {
      const name = /^#\/\$defs\/(.+)$/.exec(s['$ref'])?.[1]
      const target = name === undefined ? undefined : defs[name]
      if (target === undefined) return [`${path}: unresolved $ref ${s['$ref']}`]
      errors.push(...check(target, value, path))
    }
    if (Array.isArray(s['anyOf']) && !(s['anyOf'] as Schema[]).some((sub) => check(sub, value, path).length === 0)) {
      errors.push(`${path}: matches none of anyOf`)
    }
    if (typeof s['type'] === 'string') {
      const t = typeOf(value)
      if (!(t === s['type'] || (s['type'] === 'number' && t === 'integer'))) return [...errors, `${path}: expected ${s['type']}, got ${t}`]
    }
    if ('const' in s && value !== s['const']) errors.push(`${path}: expected ${JSON.stringify(s['const'])}`)
    if (typeof s['pattern'] === 'string' && typeof value === 'string' && !new RegExp(s['pattern']).test(value)) errors.push(`${path}: does not match ${s['pattern']}`)
    if (typeof s['minLength'] === 'number' && typeof value === 'string' && value.length < s['minLength']) errors.push(`${path}: shorter than ${s['minLength']}`)
    if (typeof s['minimum'] === 'number' && typeof value === 'number' && value < s['minimum']) errors.push(`${path}: below ${s['minimum']}`)
    if (typeOf(value) === 'object') {
      const obj = value as Record<string, unknown>
      for (const r of (s['required'] as string[] | undefined) ?? []) if (!(r in obj)) errors.push(`${path}: missing required ${r}`)
      for (const [k, sub] of Object.entries((s['properties'] as Record<string, Schema> | undefined) ?? {})) {
        if (k in obj) errors.push(...check(sub, obj[k], `${path}.${k}`))
      }
    }
    if (Array.isArray(value) && s['items'] !== undefined) value.forEach((v, i) => errors.push(...check(s['items'] as Schema, v, `${path}[${i}]`)))
    return errors
  }
  return check
}
