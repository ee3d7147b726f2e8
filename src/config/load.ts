import { readFile } from 'node:fs/promises'
import { dirname, isAbsolute, resolve } from 'node:path'
import { parseDocument } from 'yaml'
import type { z } from 'zod'
import { ConfigError, errorMessage } from '../core/errors.js'
import { applyEnvOverrides } from './env.js'
import { configSchema, type ParsedConfig, type StageConfig } from './schema.js'

/** A stage with every derived value filled in. */
export type ResolvedStage = StageConfig & { output: string }

/** The config after validation and resolution: absolute paths, derived names. */
export interface ResolvedConfig extends Omit<ParsedConfig, 'stages'> {
  /** The file it came from (absolute). */
  file: string
  /** Absolute data folder. */
  dataDir: string
  stages: ResolvedStage[]
  /** Env overrides that were applied. */
  envOverrides: string[]
}

export interface LoadConfigOptions {
  /** Environment to read overrides from. Pass `process.env` explicitly; it is never read implicitly. */
  env?: Record<string, string | undefined>
}

/** Reads, validates and resolves a pipeline file. Throws `ConfigError` naming the file and key path. */
export async function loadConfig(file: string, opts: LoadConfigOptions = {}): Promise<ResolvedConfig> {
  const path = resolve(file)
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw new ConfigError(`${path}: cannot read the pipeline file (${(err as NodeJS.ErrnoException).code ?? 'error'})`, { file: path }, err)
  }
  return parseConfig(text, path, opts)
}

/** Validates and resolves pipeline YAML text; `file` is used for messages and relative paths. */
export function parseConfig(text: string, file: string, opts: LoadConfigOptions = {}): ResolvedConfig {
  const doc = parseDocument(text, { prettyErrors: true })
  if (doc.errors.length > 0) {
    const first = doc.errors[0]
    const pos = first?.linePos?.[0]
    throw new ConfigError(`${file}${pos ? `:${pos.line}:${pos.col}` : ''}: invalid YAML: ${first?.message.split('\n')[0] ?? ''}`, { file })
  }
  let raw: unknown
  try {
    // Aliases are resolved here: an unresolved one, or an alias bomb, throws (found by fuzzing).
    raw = doc.toJS({ maxAliasCount: 1000 })
  } catch (err) {
    throw new ConfigError(`${file}: invalid YAML: ${errorMessage(err).split('\n')[0] ?? ''}`, { file }, err)
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError(`${file}: the pipeline file must be a YAML mapping (got ${raw === null ? 'nothing' : Array.isArray(raw) ? 'a list' : typeof raw})`, { file })
  }
  const envOverrides = applyEnvOverrides(raw as Record<string, unknown>, opts.env ?? {})
  const result = configSchema.safeParse(raw)
  if (!result.success) {
    const lines = formatIssues(result.error.issues)
    const source = envOverrides.length > 0 ? `${file} (with env overrides ${envOverrides.join(', ')})` : file
    throw new ConfigError(`invalid pipeline file ${source}:\n${lines.map((l) => `  - ${l}`).join('\n')}`, { file, issues: lines })
  }
  return resolveConfig(result.data, file, envOverrides)
}

/** One line per problem: `stages[0].executor.timeoutMs: expected number, received string`. */
export function formatIssues(issues: z.core.$ZodIssue[]): string[] {
  const lines: string[] = []
  for (const issue of issues) {
    const path = formatPath(issue.path)
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) lines.push(`${formatPath([...issue.path, key])}: unknown key (check the spelling; see docs/config.md)`)
    } else if (issue.code === 'invalid_union' && issue.errors.length > 0 && 'discriminator' in issue) {
      lines.push(`${path || '(root)'}: ${issue.message}`)
    } else {
      lines.push(`${path || '(root)'}: ${issue.message}`)
    }
  }
  return lines
}

function formatPath(path: PropertyKey[]): string {
  let out = ''
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`
    else out += out ? `.${String(seg)}` : String(seg)
  }
  return out
}

/** Paths in an executor's config, resolved against the config file's folder: `./` and `../` command arguments, a zkVM program's ELF. */
function resolveExecutorPaths<E extends StageConfig['executor']>(e: E, abs: (p: string) => string): E {
  const command = (argv: string[]): string[] => argv.map((arg, i) => (i > 0 && /^\.{1,2}\//.test(arg) ? abs(arg) : arg))
  switch (e.type) {
    case 'process':
      return { ...e, command: command(e.command) }
    case 'zkvm':
      return { ...e, command: command(e.command), program: { ...e.program, ...(e.program.elf === undefined ? {} : { elf: abs(e.program.elf) }) } }
    case 'shadow':
      return { ...e, primary: resolveExecutorPaths(e.primary, abs), shadow: resolveExecutorPaths(e.shadow, abs) }
    default:
      return e
  }
}

function resolveConfig(cfg: ParsedConfig, file: string, envOverrides: string[]): ResolvedConfig {
  const base = dirname(file)
  const abs = (p: string): string => (isAbsolute(p) ? p : resolve(base, p))
  const dataDir = abs(cfg.dataDir)
  const stages: ResolvedStage[] = cfg.stages.map((s) => ({ ...s, executor: resolveExecutorPaths(s.executor, abs), output: s.output ?? `proofs.${s.name}` }))
  const state = cfg.state.type === 'embedded' ? { ...cfg.state, dir: abs(cfg.state.dir ?? `${dataDir}/postgres`) } : cfg.state
  const artifacts = cfg.artifacts.type === 'fs' ? { ...cfg.artifacts, dir: abs(cfg.artifacts.dir ?? `${dataDir}/artifacts`) } : cfg.artifacts
  // The prover's folders, relative to the file like every other path.
  const p = cfg.prover
  const prover =
    p === undefined
      ? undefined
      : { ...p, ...(p.cacheDir === undefined ? {} : { cacheDir: abs(p.cacheDir) }), crs: { ...p.crs, ...(p.crs.path === undefined ? {} : { path: abs(p.crs.path) }) } }
  return { ...cfg, file, dataDir, state, artifacts, stages, envOverrides, ...(prover === undefined ? {} : { prover }) }
}
