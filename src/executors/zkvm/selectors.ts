import { ConfigError } from '../../core/errors.js'

/**
 * Selectors: how zkVM adapter config points into a document. A selector is a dotted path with
 * array steps, e.g. `job.first`, `inputs[*].data.hash`, `inputs[0].data.parentHash`,
 * `public.values[2]`. `[*]` maps the rest of the path over every element of an array.
 */
export type Step = { key: string } | { index: number } | { each: true }

/** A parsed selector. */
export interface Selector {
  text: string
  steps: Step[]
}

const KEY = /^[A-Za-z_$][A-Za-z0-9_$-]*/

/** Parses a selector; throws `ConfigError` naming `where` on bad syntax. */
export function parseSelector(text: string, where: string): Selector {
  const steps: Step[] = []
  let rest = text
  let first = true
  while (rest.length > 0) {
    if (rest.startsWith('[')) {
      const m = /^\[(\*|\d+)\]/.exec(rest)
      if (m === null) throw new ConfigError(`${where}: bad array step in selector ${JSON.stringify(text)} (use [*] or [n])`, { selector: text })
      steps.push(m[1] === '*' ? { each: true } : { index: Number(m[1]) })
      rest = rest.slice(m[0].length)
    } else {
      if (!first) {
        if (!rest.startsWith('.')) throw new ConfigError(`${where}: expected "." in selector ${JSON.stringify(text)} at ${JSON.stringify(rest)}`, { selector: text })
        rest = rest.slice(1)
      }
      const m = KEY.exec(rest)
      if (m === null) throw new ConfigError(`${where}: bad key in selector ${JSON.stringify(text)} at ${JSON.stringify(rest)}`, { selector: text })
      steps.push({ key: m[0] })
      rest = rest.slice(m[0].length)
    }
    first = false
  }
  if (steps.length === 0) throw new ConfigError(`${where}: empty selector`, { selector: text })
  return { text, steps }
}

/** Evaluates a selector; `undefined` where the path does not exist (an `[*]` over a non-array is `undefined` too). */
export function select(doc: unknown, sel: Selector): unknown {
  const walk = (value: unknown, i: number): unknown => {
    if (i === sel.steps.length) return value
    const step = sel.steps[i] as Step
    if ('each' in step) return Array.isArray(value) ? value.map((v) => walk(v, i + 1)) : undefined
    if ('index' in step) return Array.isArray(value) ? walk(value[step.index], i + 1) : undefined
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined
    return Object.hasOwn(value, step.key) ? walk((value as Record<string, unknown>)[step.key], i + 1) : undefined
  }
  return walk(doc, 0)
}
