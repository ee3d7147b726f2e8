import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import type { Readable } from 'node:stream'
import { ConfigError, ExecutorError, errorMessage, type FailureClass } from '../../core/errors.js'
import type { ArtifactRef } from '../../core/types.js'
import type { ExecuteRequest, ExecuteResult, Executor } from '../types.js'
import {
  ATTEMPT_ENV,
  EXIT_SUCCESS,
  EXIT_TOO_BIG,
  EXIT_UNPROVABLE,
  OWNER_ENV,
  inputDocument,
  parseOutputDocument,
  serializeInputDocument,
} from './protocol.js'
import { killProcessesWithEnv } from './reap.js'
import { TailBuffer } from './tail.js'

/** Options of `processExecutor`. */
export interface ProcessExecutorOptions {
  /** The program and its fixed arguments (argv; the first element is the program, no shell). */
  command: string[]
  /**
   * How the input and output documents travel: `files` appends
   * `--input-path IN.json --output-path OUT.json`; `stdio` writes the input to stdin and reads
   * the output from stdout.
   * @default 'files'
   */
  protocol?: 'files' | 'stdio'
  /** Deadline of one attempt; past it the whole process group is killed (failure class `timeout`). */
  timeoutMs: number
  /**
   * Time between SIGTERM and SIGKILL when a group is killed.
   * @default 2000
   */
  killGraceMs?: number
  /** Variables added to (or, with value `undefined`, removed from) the child's environment. */
  env?: Record<string, string | undefined>
  /**
   * Whether the child starts from this process's environment. Turn off on machines whose
   * environment holds secrets (an L1 key) that a third-party prover must not see.
   * @default true
   */
  inheritEnv?: boolean
  /** Working directory of the child. @default the current directory */
  cwd?: string
  /** Folder for per-attempt folders (IN.json, OUT.json); each is removed when its attempt ends. Created if missing. */
  workDir: string
  /**
   * Identifies the owning orchestrator/worker instance (e.g. a hash of its data dir); set as
   * `PROOFLINE_OWNER` on every child so `reapOrphans(ownerTag)` can find them after a crash.
   * Must be unique per instance; `[A-Za-z0-9._:-]`, 1–128 characters.
   */
  ownerTag: string
  /**
   * How many trailing bytes of stderr are kept with the attempt.
   * @default 8192
   */
  stderrTailBytes?: number
  /**
   * Interval of `req.onHeartbeat` calls while the child runs.
   * @default 5000
   */
  heartbeatMs?: number
  /**
   * Largest output document accepted (stdout in `stdio`, OUT.json in `files`); bigger is `invalid-output`.
   * @default 67_108_864 (64 MiB)
   */
  maxOutputBytes?: number
  /**
   * How an attempt talks to the binary, when it does not speak the process protocol itself
   * (the zkVM adapter, `src/executors/zkvm/`). `protocol` is ignored when set.
   * @default the process protocol (`protocol`)
   */
  dialect?: ProcessDialect
}

/**
 * How one attempt talks to a binary: its arguments and input, how its exit is classified, how
 * its result is read. The process protocol is one dialect; the zkVM adapter is another. Process
 * handling (groups, deadlines, kills, heartbeats, stderr tails, attempt folders) is shared.
 */
export interface ProcessDialect {
  /** Writes the attempt's input into `attemptDir`; returns the arguments appended to `command`, stdin text, and whether stdout is the result. */
  prepare(req: ExecuteRequest, attemptDir: string): Promise<{ args: string[]; stdin?: string; stdoutIsResult?: boolean }>
  /**
   * Classifies a non-zero exit or a signal before the defaults (`EXIT_TOO_BIG` → `too-big`,
   * `EXIT_UNPROVABLE` → `unprovable`, anything else → `transient`); `undefined` keeps the default.
   */
  classifyExit?(exit: { code: number | null; signal: NodeJS.Signals | null; stderrTail: string }): { failureClass: FailureClass; reason: string } | undefined
  /** Reads the result after exit 0; throws `ExecutorError('invalid-output')` when it is missing or bad. */
  readResult(req: ExecuteRequest, attempt: { dir: string; stdout: Buffer; details: Record<string, unknown> }): Promise<{ output: Record<string, unknown>; proof?: ArtifactRef }>
}

type Ending = 'timeout' | 'abort' | 'closed' | 'output-too-large'

interface ChildRun {
  exitCode: number | null
  signal: NodeJS.Signals | null
  ending: Ending | null
  spawnError: Error | null
  stdout: Buffer
  stderr: TailBuffer
  /** In `files` mode stdout is diagnostics only; its tail goes into error details. */
  stdoutTail: TailBuffer
}

const OWNER_TAG = /^[A-Za-z0-9._:-]{1,128}$/

/**
 * Runs any binary that speaks the process protocol (`docs/executor-protocol.md`): one child
 * per attempt, leading its own process group, killed as a group on timeout, abort or `close()`.
 *
 * Exit 0 → success (the output document is parsed and checked), `EXIT_TOO_BIG` (10) →
 * `too-big`, `EXIT_UNPROVABLE` (11) → `unprovable`, any other exit or a signal → `transient`,
 * deadline → `timeout`, a bad document → `invalid-output`. An aborted `req.signal` or `close()`
 * rejects with a `transient` error whose `details.aborted` is true. Every error carries
 * `details.stderrTail`.
 */
export function processExecutor(opts: ProcessExecutorOptions): Executor {
  const program = opts.command[0]
  if (program === undefined || program === '') {
    throw new ConfigError('process executor: `command` must name a program (argv, first element is the program)', { option: 'command' })
  }
  if (!(opts.timeoutMs > 0) || !Number.isFinite(opts.timeoutMs)) {
    throw new ConfigError('process executor: `timeoutMs` must be a positive number of milliseconds', { option: 'timeoutMs' })
  }
  if (!OWNER_TAG.test(opts.ownerTag)) {
    throw new ConfigError('process executor: `ownerTag` must be 1–128 characters of [A-Za-z0-9._:-]', { option: 'ownerTag' })
  }
  const protocol = opts.protocol ?? 'files'
  const killGraceMs = opts.killGraceMs ?? 2000
  const stderrTailBytes = opts.stderrTailBytes ?? 8192
  const heartbeatMs = opts.heartbeatMs ?? 5000
  const maxOutputBytes = opts.maxOutputBytes ?? 64 * 1024 * 1024
  const workDir = resolve(opts.workDir)
  const args = opts.command.slice(1)
  const dialect = opts.dialect ?? processProtocolDialect(protocol, maxOutputBytes)

  /** Kill switches of running attempts, so `close()` can stop them. */
  const active = new Map<symbol, { kill: (why: Ending) => void; done: Promise<unknown> }>()
  let closed = false
  let workDirReady: Promise<void> | undefined

  function childEnv(attemptToken: string): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = opts.inheritEnv === false ? {} : { ...process.env }
    for (const [k, v] of Object.entries(opts.env ?? {})) {
      if (v === undefined) delete env[k]
      else env[k] = v
    }
    // Set last: the markers are how stragglers and orphans are found, so config cannot override them.
    env[OWNER_ENV] = opts.ownerTag
    env[ATTEMPT_ENV] = attemptToken
    return env
  }

  async function prepareWorkDir(): Promise<void> {
    await mkdir(workDir, { recursive: true })
    // Attempt folders of a previous run that was killed before it could remove them.
    const staleMs = Math.max(3_600_000, 2 * (opts.timeoutMs + killGraceMs))
    for (const name of await readdir(workDir)) {
      if (!name.startsWith('attempt-')) continue
      const path = join(workDir, name)
      const st = await stat(path).catch(() => null)
      if (st !== null && Date.now() - st.mtimeMs > staleMs) await rm(path, { recursive: true, force: true })
    }
  }

  function run(req: ExecuteRequest, prepared: { args: string[]; stdin?: string; stdoutIsResult?: boolean }, attemptToken: string): Promise<ChildRun> {
    const argv = [...args, ...prepared.args]
    const captureStdout = prepared.stdoutIsResult === true
    const result: ChildRun = {
      exitCode: null,
      signal: null,
      ending: null,
      spawnError: null,
      stdout: Buffer.alloc(0),
      stderr: new TailBuffer(stderrTailBytes),
      stdoutTail: new TailBuffer(stderrTailBytes),
    }
    const child = spawn(program as string, argv, {
      // The child leads its own process group (setsid), so the whole group can be signalled.
      detached: true,
      stdio: [prepared.stdin !== undefined ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      env: childEnv(attemptToken),
      ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }),
    })
    const pid = child.pid
    // Both are 'pipe' above, so never null.
    const { stdout, stderr } = child as { stdout: Readable; stderr: Readable }
    let exited = false
    let graceTimer: NodeJS.Timeout | undefined

    const signalGroup = (sig: NodeJS.Signals): void => {
      if (pid === undefined) return
      try {
        process.kill(-pid, sig)
      } catch {
        // ESRCH: the group is already empty.
      }
    }
    const kill = (why: Ending): void => {
      if (result.ending !== null || exited) return
      result.ending = why
      signalGroup('SIGTERM')
      graceTimer = setTimeout(() => signalGroup('SIGKILL'), killGraceMs)
    }

    const stdoutChunks: Buffer[] = []
    let stdoutBytes = 0
    stdout.on('data', (chunk: Buffer) => {
      if (!captureStdout) {
        result.stdoutTail.push(chunk)
        return
      }
      stdoutBytes += chunk.length
      if (stdoutBytes > maxOutputBytes) kill('output-too-large')
      else stdoutChunks.push(chunk)
    })
    stderr.on('data', (chunk: Buffer) => result.stderr.push(chunk))
    if (child.stdin !== null) {
      // EPIPE when the child exits without reading its input: its exit status tells the story.
      child.stdin.on('error', () => undefined)
      child.stdin.end(prepared.stdin)
    }

    const timeout = setTimeout(() => kill('timeout'), opts.timeoutMs)
    const onAbort = (): void => kill('abort')
    req.signal.addEventListener('abort', onAbort, { once: true })
    // The signal may have fired while the attempt folder was being prepared.
    if (req.signal.aborted) kill('abort')
    const heartbeat =
      req.onHeartbeat === undefined
        ? undefined
        : setInterval(() => {
            try {
              req.onHeartbeat?.()
            } catch {
              // A failing lease extension is the caller's business; the attempt goes on.
            }
          }, heartbeatMs)

    const done = new Promise<ChildRun>((resolveRun) => {
      let settled = false
      const finish = async (): Promise<void> => {
        if (settled) return
        settled = true
        exited = true
        clearTimeout(timeout)
        clearTimeout(graceTimer)
        clearInterval(heartbeat)
        req.signal.removeEventListener('abort', onAbort)
        // Whatever the outcome, nothing of the attempt outlives it: the rest of its group, then
        // anything that left the group (setsid) but still carries the attempt marker.
        signalGroup('SIGKILL')
        await killProcessesWithEnv(ATTEMPT_ENV, attemptToken).catch(() => [])
        await streamsClosed(stdout, stderr, 1000)
        result.stdout = Buffer.concat(stdoutChunks)
        resolveRun(result)
      }
      child.once('exit', (code, sig) => {
        result.exitCode = code
        result.signal = sig
        void finish()
      })
      child.once('error', (err) => {
        // Spawn failed (no such program, not executable); no 'exit' follows. With a pid, the
        // error is about signalling or stdio and 'exit' still comes.
        if (pid === undefined) {
          result.spawnError = err
          void finish()
        }
      })
    })
    const key = Symbol(req.job.id)
    active.set(key, { kill, done })
    return done.finally(() => active.delete(key))
  }

  async function execute(req: ExecuteRequest): Promise<ExecuteResult> {
    const started = performance.now()
    const base = { command: program, jobId: req.job.id, attempt: req.job.attempt }
    if (closed) throw new ExecutorError('transient', 'process executor is closed', { ...base, aborted: true })
    if (req.signal.aborted) {
      throw new ExecutorError('transient', 'attempt aborted before it started', { ...base, aborted: true }, req.signal.reason)
    }
    const safeId = req.job.id.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 80)
    let attemptDir: string
    try {
      workDirReady ??= prepareWorkDir().catch((err: unknown) => {
        workDirReady = undefined // try again on the next attempt
        throw err
      })
      await workDirReady
      attemptDir = await mkdtemp(join(workDir, `attempt-${safeId}-a${req.job.attempt}-`))
    } catch (err) {
      throw new ExecutorError('transient', `could not create an attempt folder in ${workDir}: ${errorMessage(err)}; check the executor's workDir`, base, err)
    }
    try {
      const prepared = await dialect.prepare(req, attemptDir).catch((err: unknown) => {
        if (err instanceof ExecutorError) throw err
        throw new ExecutorError('transient', `could not prepare the attempt's input: ${errorMessage(err)}`, base, err)
      })
      const r = await run(req, prepared, `${opts.ownerTag}/${randomUUID()}`)
      const durationMs = Math.round(performance.now() - started)
      const stderrTail = r.stderr.text()
      const details: Record<string, unknown> = {
        ...base,
        exitCode: r.exitCode,
        signal: r.signal,
        durationMs,
        stderrTail,
        stderrBytes: r.stderr.total,
        ...(prepared.stdoutIsResult !== true && r.stdoutTail.total > 0 ? { stdoutTail: r.stdoutTail.text() } : {}),
      }
      const hint = lastLine(stderrTail)
      const said = hint === '' ? '' : ` (last stderr line: ${JSON.stringify(hint)})`

      if (r.spawnError !== null) {
        throw new ExecutorError(
          'transient',
          `could not start prover ${JSON.stringify(program)}: ${r.spawnError.message}; check the executor's command in the pipeline config`,
          details,
          r.spawnError,
        )
      }
      switch (r.ending) {
        case 'abort':
          throw new ExecutorError('transient', 'attempt aborted; prover process group killed', { ...details, aborted: true }, req.signal.reason)
        case 'closed':
          throw new ExecutorError('transient', 'process executor closed; prover process group killed', { ...details, aborted: true })
        case 'timeout':
          throw new ExecutorError('timeout', `prover ran past its ${opts.timeoutMs} ms deadline; process group killed${said}`, details)
        case 'output-too-large':
          throw new ExecutorError('invalid-output', `prover wrote more than ${maxOutputBytes} bytes to stdout`, details)
        case null:
          break
      }
      if (r.exitCode !== EXIT_SUCCESS || r.signal !== null) {
        const mapped = dialect.classifyExit?.({ code: r.exitCode, signal: r.signal, stderrTail })
        if (mapped !== undefined) throw new ExecutorError(mapped.failureClass, `${mapped.reason}${said}`, { ...details, mappedBy: 'dialect' })
      }
      if (r.signal !== null) throw new ExecutorError('transient', `prover was killed by ${r.signal}${said}`, details)
      if (r.exitCode === EXIT_TOO_BIG) throw new ExecutorError('too-big', `prover says the job is too big: split it${said}`, details)
      if (r.exitCode === EXIT_UNPROVABLE) throw new ExecutorError('unprovable', `prover says the input is unprovable${said}`, details)
      if (r.exitCode !== EXIT_SUCCESS) throw new ExecutorError('transient', `prover exited with code ${String(r.exitCode)}${said}`, details)

      const doc = await dialect.readResult(req, { dir: attemptDir, stdout: r.stdout, details }).catch((err: unknown) => {
        if (err instanceof ExecutorError) throw err
        throw new ExecutorError('transient', `could not read the prover's result: ${errorMessage(err)}`, details, err)
      })
      return { output: doc.output, ...(doc.proof === undefined ? {} : { proof: doc.proof }), stderrTail, durationMs }
    } finally {
      await rm(attemptDir, { recursive: true, force: true }).catch(() => undefined)
    }
  }

  return {
    kind: 'process',
    execute,
    async close() {
      closed = true
      const running = [...active.values()]
      for (const a of running) a.kill('closed')
      await Promise.allSettled(running.map((a) => a.done))
    },
  }
}

function lastLine(text: string): string {
  const lines = text.trimEnd().split('\n')
  return (lines[lines.length - 1] ?? '').slice(0, 300)
}

/** Resolves when both streams closed, or after `ms` (a process that escaped our kills may hold a pipe open). */
function streamsClosed(a: Readable, b: Readable, ms: number): Promise<void> {
  const closedP = (s: Readable): Promise<void> =>
    s.closed === true ? Promise.resolve() : new Promise<void>((r) => s.once('close', () => r()))
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    Promise.all([closedP(a), closedP(b)]).then(() => undefined),
    new Promise<void>((r) => {
      timer = setTimeout(() => {
        a.destroy()
        b.destroy()
        r()
      }, ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

/**
 * The process protocol as a dialect: `files` writes IN.json and appends
 * `--input-path IN.json --output-path OUT.json`; `stdio` writes the document to stdin and reads
 * the result from stdout. Exit codes are the protocol's (10, 11), so no `classifyExit`.
 */
export function processProtocolDialect(protocol: 'files' | 'stdio', maxOutputBytes: number): ProcessDialect {
  return {
    async prepare(req, attemptDir) {
      const input = serializeInputDocument(inputDocument(req))
      if (protocol === 'stdio') return { args: [], stdin: input, stdoutIsResult: true }
      const inPath = join(attemptDir, 'IN.json')
      await writeFile(inPath, input).catch((err: unknown) => {
        throw new ExecutorError('transient', `could not write IN.json: ${errorMessage(err)}`, { jobId: req.job.id, attempt: req.job.attempt }, err)
      })
      return { args: ['--input-path', inPath, '--output-path', join(attemptDir, 'OUT.json')] }
    },
    async readResult(_req, attempt) {
      const { details } = attempt
      let text: string
      if (protocol === 'stdio') {
        text = attempt.stdout.toString('utf8')
      } else {
        const outPath = join(attempt.dir, 'OUT.json')
        try {
          const st = await stat(outPath)
          if (st.size > maxOutputBytes) {
            throw new ExecutorError('invalid-output', `prover wrote an output file of ${st.size} bytes, more than ${maxOutputBytes}`, details)
          }
          text = await readFile(outPath, 'utf8')
        } catch (err) {
          if (err instanceof ExecutorError) throw err
          throw new ExecutorError('invalid-output', 'prover exited 0 but wrote no output file', { ...details, reason: 'missing output file' }, err)
        }
      }
      return parseOutputDocument(text, details)
    },
  }
}
