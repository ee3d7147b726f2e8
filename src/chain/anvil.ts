import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { ProoflineError } from '../core/errors.js'

/**
 * Dev chains: anvil from npm (`@foundry-rs/anvil`), started and stopped by proofline.
 *
 * Lifetime. Each anvil runs in its own process group (so a Ctrl-C aimed at the proofline
 * process does not kill the chain under a proposer that is still waiting for a receipt) and is
 * killed with its group by `stop()`. It never outlives its parent:
 * - normal exit or `process.exit()`: an `exit` hook SIGKILLs every anvil still running;
 * - parent SIGKILLed (or killed by any signal it does not handle): on Linux anvil is started
 *   through `setpriv --pdeathsig KILL` (util-linux), so the kernel kills it when the parent
 *   dies. Where `setpriv` is missing (macOS, minimal images) nothing can catch a SIGKILL of the
 *   parent: the anvil is left running on its port with its in-memory chain until killed by
 *   hand (`kill <pid>`; the pid is in `AnvilInstance.pid`). Free ports keep a leftover from
 *   colliding with the next run.
 */

/** anvil's (and hardhat's) default chain id. */
export const ANVIL_DEFAULT_CHAIN_ID = 31337
/** The chain id `proofline up` gives its dev L1. */
export const DEV_L1_CHAIN_ID = 900
/** The chain id `proofline up` gives its dev L2. */
export const DEV_L2_CHAIN_ID = 901
/** geth `--dev` and ganache. */
export const GETH_DEV_CHAIN_ID = 1337

/**
 * Chain ids where development-only components (the mock verifier, a development CRS) are
 * allowed. The OutputOracle contract hard-codes the same list (src/contracts/DevChains.sol);
 * a test keeps them equal.
 */
export const DEV_CHAIN_IDS: readonly number[] = Object.freeze([
  ANVIL_DEFAULT_CHAIN_ID,
  DEV_L1_CHAIN_ID,
  DEV_L2_CHAIN_ID,
  GETH_DEV_CHAIN_ID,
])

/** Whether `chainId` is a dev chain id (see `DEV_CHAIN_IDS`). */
export function isDevChain(chainId: number | bigint): boolean {
  return DEV_CHAIN_IDS.includes(Number(chainId))
}

/** anvil could not be found, did not start, or died. */
export class AnvilError extends ProoflineError {
  constructor(
    code: 'ANVIL_NOT_FOUND' | 'ANVIL_START_FAILED' | 'ANVIL_WRONG_CHAIN',
    message: string,
    opts: { retryable: boolean; details?: Record<string, unknown>; cause?: unknown },
  ) {
    super(code, message, opts)
  }
}

const CACHE_PREFIX = 'proofline-anvil-'

/**
 * A fresh folder for one anvil's persisted states (`--cache-path`). Without it anvil writes
 * them under `~/.foundry/anvil/tmp` and never removes them when it is killed: a few GB per
 * busy dev chain, left behind run after run. Folders of processes that are gone (a parent
 * SIGKILLed before it could clean up) are removed on the way.
 */
export function anvilCacheDir(): string {
  const dir = tmpdir()
  for (const name of readdirSync(dir)) {
    const owner = Number(name.slice(CACHE_PREFIX.length).split('-')[0])
    if (!name.startsWith(CACHE_PREFIX) || !Number.isSafeInteger(owner) || owner === process.pid || processAlive(owner)) continue
    rmSync(join(dir, name), { recursive: true, force: true })
  }
  return mkdtempSync(join(dir, `${CACHE_PREFIX}${process.pid}-`))
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * How many past states a dev chain keeps on disk when `startAnvil` is not told otherwise.
 * anvil's own default (3,600 on disk + 500 in memory) forgets blocks and states a lagging
 * pipeline still needs (`eth_getProof` for output roots, `eth_getBlockByNumber`).
 */
export const DEFAULT_MAX_PERSISTED_STATES = 100_000

/** Options of `startAnvil`. */
export interface StartAnvilOptions {
  /** Chain id of the new chain. */
  chainId: number
  /** Port on 127.0.0.1; 0 lets the OS pick a free one. @default 0 */
  port?: number
  /** Mine a block every N seconds. Unset: a block per transaction (auto-mining). */
  blockTimeSec?: number
  /** Record struct logs so the default `debug_traceTransaction` tracer works (slower). @default false */
  stepsTracing?: boolean
  /** Past states kept on disk (in a folder removed when anvil stops). @default DEFAULT_MAX_PERSISTED_STATES */
  maxPersistedStates?: number
  /** Further anvil arguments, e.g. `['--hardfork', 'cancun']`. */
  extraArgs?: readonly string[]
  /** The anvil binary. @default the one from `@foundry-rs/anvil-<platform>-<arch>` */
  binaryPath?: string
  /** How long to wait for anvil to answer `eth_chainId`. @default 15000 */
  startTimeoutMs?: number
  /** Aborting before the chain is ready fails the start; aborting later stops the chain. */
  signal?: AbortSignal
}

/** A running dev chain. */
export interface AnvilInstance {
  /** `http://127.0.0.1:<port>` */
  rpcUrl: string
  chainId: number
  port: number
  /** Process id (also the process group id) of anvil. */
  pid: number
  /** Where anvil keeps past states (`--cache-path`); removed once anvil has exited. */
  stateDir: string
  /** Kills anvil's process group: SIGTERM, then SIGKILL after 3 s. Idempotent. */
  stop(): Promise<void>
}

const STOP_GRACE_MS = 3_000
const OUTPUT_TAIL_CHARS = 4_000
/** Running anvils and their state folders. */
const running = new Map<ChildProcess, string>()
let exitHookInstalled = false

/** Path of the anvil binary shipped by npm for this platform. */
export function anvilBinaryPath(): string {
  const arch = process.arch === 'x64' ? 'amd64' : process.arch
  const pkg = `@foundry-rs/anvil-${process.platform}-${arch}`
  const require = createRequire(import.meta.url)
  let pkgJson: string
  try {
    pkgJson = require.resolve(`${pkg}/package.json`)
  } catch (cause) {
    throw new AnvilError(
      'ANVIL_NOT_FOUND',
      `anvil binary package ${pkg} is not installed; run \`npm ci\` (it is an optional dependency of @foundry-rs/anvil) or pass binaryPath`,
      { retryable: false, details: { package: pkg }, cause },
    )
  }
  const bin = join(dirname(pkgJson), 'bin', process.platform === 'win32' ? 'anvil.exe' : 'anvil')
  if (!existsSync(bin)) {
    throw new AnvilError('ANVIL_NOT_FOUND', `${pkg} has no binary at ${bin}; reinstall it with \`npm ci\``, {
      retryable: false,
      details: { path: bin },
    })
  }
  return bin
}

let setprivPath: string | null | undefined
function findSetpriv(): string | null {
  if (setprivPath === undefined) {
    setprivPath = process.platform === 'linux' ? (['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p)) ?? null) : null
  }
  return setprivPath
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return
  try {
    process.kill(-child.pid, signal)
  } catch {
    // ESRCH: already gone.
  }
}

function unrefStream(stream: unknown): void {
  ;(stream as { unref?: () => void } | null)?.unref?.()
}

function installExitHook(): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.on('exit', () => {
    for (const [child, cacheDir] of running) {
      killGroup(child, 'SIGKILL')
      rmSync(cacheDir, { recursive: true, force: true })
    }
  })
}

/**
 * Starts anvil on 127.0.0.1 and resolves once it answers `eth_chainId` with `chainId`.
 * Rejects (leaving no process behind) if anvil exits, the port is taken, the chain id differs,
 * the timeout passes, or `signal` aborts.
 */
export async function startAnvil(opts: StartAnvilOptions): Promise<AnvilInstance> {
  opts.signal?.throwIfAborted()
  const binary = opts.binaryPath ?? anvilBinaryPath()
  const args = ['--host', '127.0.0.1', '--port', String(opts.port ?? 0), '--chain-id', String(opts.chainId)]
  if (opts.blockTimeSec !== undefined) args.push('--block-time', String(opts.blockTimeSec))
  if (opts.stepsTracing) args.push('--steps-tracing')
  const cacheDir = anvilCacheDir()
  args.push('--cache-path', cacheDir, '--max-persisted-states', String(opts.maxPersistedStates ?? DEFAULT_MAX_PERSISTED_STATES))
  if (opts.extraArgs) args.push(...opts.extraArgs)

  const setpriv = findSetpriv()
  const [command, argv] = setpriv ? [setpriv, ['--pdeathsig', 'KILL', '--', binary, ...args]] : [binary, args]
  const child = spawn(command, argv, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
  installExitHook()
  running.set(child, cacheDir)

  // Keep reading both pipes for the process's whole life: anvil logs every request and block,
  // and a full pipe would block it.
  let tail = ''
  const keep = (chunk: Buffer): void => {
    tail = (tail + chunk.toString('utf8')).slice(-OUTPUT_TAIL_CHARS)
  }
  child.stdout.on('data', keep)
  child.stderr.on('data', keep)

  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null = null
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exitInfo = { code, signal }
      running.delete(child)
      rmSync(cacheDir, { recursive: true, force: true })
      // A dev chain that dies on its own takes every client's requests with it; say so loudly.
      if (!stopping) process.stderr.write(`anvil (chain ${opts.chainId}, pid ${child.pid}) exited unexpectedly: code ${code}, signal ${signal}; its last output:\n${tail.trim().split('\n').slice(-15).join('\n')}\n`)
      resolve()
    })
  })

  let stopping: Promise<void> | null = null
  const stop = (): Promise<void> => {
    if (stopping) return stopping
    stopping = (async () => {
      if (exitInfo) return
      killGroup(child, 'SIGTERM')
      let timer: NodeJS.Timeout | undefined
      const late = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, STOP_GRACE_MS)
      })
      await Promise.race([exited, late])
      clearTimeout(timer)
      if (!exitInfo) {
        killGroup(child, 'SIGKILL')
        await exited
      }
    })()
    return stopping
  }

  const failStart = async (code: 'ANVIL_START_FAILED' | 'ANVIL_WRONG_CHAIN', message: string, cause?: unknown): Promise<never> => {
    await stop()
    throw new AnvilError(code, message, {
      retryable: code === 'ANVIL_START_FAILED',
      details: { binary, args, exit: exitInfo, output: tail.trim().split('\n').slice(-15).join('\n') },
      cause,
    })
  }

  try {
    const port = await waitForListening(child, () => tail, exited, opts)
    const rpcUrl = `http://127.0.0.1:${port}`
    const chainId = await waitForChainId(rpcUrl, exited, opts)
    if (chainId !== opts.chainId) {
      return await failStart('ANVIL_WRONG_CHAIN', `anvil at ${rpcUrl} reports chain id ${chainId}, expected ${opts.chainId}`)
    }
    // The chain never keeps the parent alive; the exit hook and pdeathsig end it with the parent.
    child.unref()
    unrefStream(child.stdout)
    unrefStream(child.stderr)
    if (opts.signal) {
      const onAbort = (): void => void stop()
      opts.signal.addEventListener('abort', onAbort, { once: true })
      void exited.then(() => opts.signal?.removeEventListener('abort', onAbort))
    }
    if (child.pid === undefined) return await failStart('ANVIL_START_FAILED', 'anvil has no pid')
    return { rpcUrl, chainId, port, pid: child.pid, stateDir: cacheDir, stop }
  } catch (err) {
    if (err instanceof AnvilError) throw err
    if (opts.signal?.aborted) {
      await stop()
      throw opts.signal.reason
    }
    return await failStart('ANVIL_START_FAILED', `anvil did not start: ${err instanceof Error ? err.message : String(err)}`, err)
  }
}

/** Resolves with the port from anvil's `Listening on 127.0.0.1:<port>` line. */
async function waitForListening(
  child: ChildProcess,
  output: () => string,
  exited: Promise<void>,
  opts: StartAnvilOptions,
): Promise<number> {
  const timeoutMs = opts.startTimeoutMs ?? 15_000
  return new Promise<number>((resolve, reject) => {
    const cleanup = (): void => {
      clearTimeout(timer)
      child.stdout?.off('data', check)
      child.off('error', onError)
      opts.signal?.removeEventListener('abort', onAbort)
    }
    const check = (): void => {
      const m = /Listening on 127\.0\.0\.1:(\d+)/.exec(output())
      if (m?.[1]) {
        cleanup()
        resolve(Number(m[1]))
      }
    }
    const onError = (err: Error): void => {
      cleanup()
      reject(err)
    }
    const onAbort = (): void => {
      cleanup()
      reject(new Error('aborted'))
    }
    const timer = setTimeout(() => {
      cleanup()
      reject(new Error(`no "Listening on" line within ${timeoutMs} ms`))
    }, timeoutMs)
    child.stdout?.on('data', check)
    child.once('error', onError)
    opts.signal?.addEventListener('abort', onAbort, { once: true })
    void exited.then(() => {
      cleanup()
      reject(new Error('anvil exited before listening'))
    })
    check()
  })
}

/** Polls `eth_chainId` until anvil answers. */
async function waitForChainId(rpcUrl: string, exited: Promise<void>, opts: StartAnvilOptions): Promise<number> {
  const deadline = Date.now() + (opts.startTimeoutMs ?? 15_000)
  let gone = false
  void exited.then(() => {
    gone = true
  })
  let lastError: unknown
  while (Date.now() < deadline) {
    opts.signal?.throwIfAborted()
    if (gone) throw new Error('anvil exited before answering eth_chainId')
    try {
      const res = await fetch(rpcUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_chainId', params: [] }),
        signal: AbortSignal.timeout(1_000),
      })
      const body = (await res.json()) as { result?: string }
      if (typeof body.result === 'string') return Number(BigInt(body.result))
      lastError = new Error(`unexpected eth_chainId answer ${JSON.stringify(body)}`)
    } catch (err) {
      lastError = err
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`eth_chainId not answered: ${lastError instanceof Error ? lastError.message : String(lastError)}`)
}
