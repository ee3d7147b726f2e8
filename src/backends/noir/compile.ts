import { createHash } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { cp, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { join, relative, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { ProoflineError } from '../../core/errors.js'
import { withCacheLock } from '../crs/cache-lock.js'

/**
 * Compiling Noir in JavaScript (noir_wasm, offline), cached by source hash.
 *
 * The circuits live in `src/backends/noir/circuits/` (one Nargo package per folder; the `ethlib`
 * library is a path dependency). A program is compiled from a copy of that tree with
 * generated files laid over it (e.g. `range/src/constants.nr` with the slot count), under
 * `<cacheDir>/noir/<hash>/`, where `hash` covers the compiler version, every source file and
 * every generated file. A second compile of the same sources reads `program.json` from there.
 * Compilation runs in a worker thread: it takes seconds to minutes, and the event loop keeps
 * serving heartbeats meanwhile.
 */

/** The circuits folder (the same path from `src/` and from `dist/`). */
export const CIRCUITS_DIR = fileURLToPath(new URL('../../../src/backends/noir/circuits/', import.meta.url))

/** A compiled Noir program (what `bb -b` and noir_js read). */
export interface CompiledProgram {
  /** Path of `program.json` (the artifact: `{ noir_version, hash, abi, bytecode, … }`). */
  path: string
  /** The parsed artifact. */
  artifact: NoirProgramArtifact
  /** Hash of everything it was compiled from: the cache key. */
  sourceHash: string
  /** Whether it came from the cache. */
  cached: boolean
  durationMs: number
}

/** The fields of a noir_wasm program artifact that proofline reads. */
export interface NoirProgramArtifact {
  noir_version: string
  hash?: string | number
  abi: unknown
  bytecode: string
  [key: string]: unknown
}

/** Compilation failed (a Noir error: a bug in the circuit or in the generated constants). */
export class NoirCompileError extends ProoflineError {
  constructor(message: string, details: Record<string, unknown> = {}, cause?: unknown) {
    super('NOIR_COMPILE_FAILED', message, { retryable: false, details, cause })
  }
}

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = []
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name)
    if (entry.isDirectory()) {
      if (entry.name === 'target') continue
      out.push(...(await listFiles(p)))
    } else if (entry.name.endsWith('.nr') || entry.name === 'Nargo.toml') {
      out.push(p)
    }
  }
  return out.sort()
}

let wasmEntry: { path: string; version: string } | undefined
function noirWasmEntry(): { path: string; version: string } {
  if (wasmEntry) return wasmEntry
  const path = createRequire(import.meta.url).resolve('@noir-lang/noir_wasm')
  // The package does not export its package.json; it sits above dist/.
  const pkgFile = join(path.slice(0, path.lastIndexOf(`${sep}dist${sep}`)), 'package.json')
  const version = (JSON.parse(readFileSync(pkgFile, 'utf8')) as { version: string }).version
  wasmEntry = { path, version }
  return wasmEntry
}

/** Hash of the compiler version, the circuit sources and the generated files. */
export async function sourceHash(generated: Record<string, string>, root: string = CIRCUITS_DIR): Promise<string> {
  const h = createHash('sha256')
  h.update(`noir_wasm ${noirWasmEntry().version}\n`)
  for (const file of await listFiles(root)) {
    const rel = relative(root, file)
    h.update(`file ${rel}\n`)
    h.update(generated[rel] ?? (await readFile(file)))
  }
  for (const [rel, content] of Object.entries(generated).sort(([a], [b]) => a.localeCompare(b))) {
    h.update(`generated ${rel}\n${content}`)
  }
  return h.digest('hex')
}

// Runs in a worker thread (CommonJS eval); compiles one package with noir_wasm's node build.
const COMPILE_WORKER = String.raw`
const { parentPort, workerData } = require('node:worker_threads')
const { compile, createFileManager } = require(workerData.entry)
const quiet = () => {}
const log = console.log
console.log = quiet
compile(createFileManager(workerData.root), workerData.project, quiet, quiet).then(
  (art) => { console.log = log; parentPort.postMessage({ ok: true, program: JSON.stringify(art.program) }) },
  (err) => { console.log = log; parentPort.postMessage({ ok: false, message: String(err && err.message || err), diagnostics: JSON.stringify((err && err.cause && err.cause.diagnostics) || (err && err.diagnostics) || null) }) },
)
`

/** Options of {@link compileNoir}. */
export interface CompileNoirOptions {
  /** The package folder name under the circuits folder, e.g. `range`. */
  project: string
  /** Files (relative to the circuits folder) replaced by generated content. */
  generated?: Record<string, string>
  cacheDir: string
  /** @default {@link CIRCUITS_DIR} */
  circuitsDir?: string
  signal?: AbortSignal
}

/** Compiles `project` (or reads it from the cache). Throws `NoirCompileError` with the compiler's message. */
export async function compileNoir(opts: CompileNoirOptions): Promise<CompiledProgram> {
  const started = performance.now()
  const root = opts.circuitsDir ?? CIRCUITS_DIR
  const generated = opts.generated ?? {}
  const hash = await sourceHash(generated, root)
  const dir = join(opts.cacheDir, 'noir', `${opts.project}-${hash.slice(0, 32)}`)
  const programPath = join(dir, 'program.json')
  const read = async (cached: boolean): Promise<CompiledProgram> => ({
    path: programPath,
    artifact: JSON.parse(await readFile(programPath, 'utf8')) as NoirProgramArtifact,
    sourceHash: hash,
    cached,
    durationMs: Math.round(performance.now() - started),
  })
  if (existsSync(programPath)) return read(true)
  return withCacheLock(dir, async () => {
    if (existsSync(programPath)) return read(true)
    const src = join(dir, 'src')
    await rm(src, { recursive: true, force: true })
    await mkdir(dir, { recursive: true })
    await cp(root, src, { recursive: true, filter: (p) => !p.split('/').includes('target') })
    for (const [rel, content] of Object.entries(generated)) await writeFile(join(src, rel), content)
    const entry = noirWasmEntry().path
    const program = await new Promise<string>((resolve, reject) => {
      const worker = new Worker(COMPILE_WORKER, { eval: true, workerData: { entry, root: src, project: join(src, opts.project) } })
      const onAbort = (): void => {
        void worker.terminate()
        reject(new NoirCompileError(`compiling ${opts.project} was aborted`, {}, opts.signal?.reason))
      }
      opts.signal?.addEventListener('abort', onAbort, { once: true })
      worker.once('message', (m: { ok: boolean; program?: string; message?: string; diagnostics?: string }) => {
        opts.signal?.removeEventListener('abort', onAbort)
        void worker.terminate()
        if (m.ok && m.program !== undefined) resolve(m.program)
        else reject(new NoirCompileError(`Noir compilation of ${opts.project} failed: ${m.message ?? 'unknown error'}`, { project: opts.project, diagnostics: m.diagnostics }))
      })
      worker.once('error', (err) => {
        opts.signal?.removeEventListener('abort', onAbort)
        reject(new NoirCompileError(`the Noir compiler crashed on ${opts.project}: ${err.message}`, { project: opts.project }, err))
      })
    })
    const tmp = `${programPath}.${process.pid}.tmp`
    await writeFile(tmp, program)
    await rename(tmp, programPath)
    await rm(src, { recursive: true, force: true })
    return read(false)
  }, opts.signal ? { signal: opts.signal } : {})
}
