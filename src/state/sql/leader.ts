/**
 * Leader election with a fencing token, on the state database (see docs/state.md, "Leader
 * election and fencing").
 *
 * One row of `state_leader` per elected role holds the holder, a fencing `epoch` that grows by
 * one on every change of leadership, and the lease's expiry. Every time comparison is made by
 * Postgres (`statement_timestamp()`), so the callers' clocks never matter. A leader renews its
 * lease every `renewEveryMs`; one that cannot renew within `leaseMs` (paused, partitioned) has
 * lost, and its `onLost` callbacks run when it notices. The state store, given the leader's
 * fence, refuses any write whose epoch is no longer current ({@link assertFence}).
 *
 * Lock protocol (the reason it is safe):
 * - a fenced write transaction starts with `SELECT … FOR KEY SHARE` of the leader row, matching
 *   its name, holder and epoch and an unexpired lease;
 * - a takeover locks the row `FOR UPDATE` in the same statement that bumps the epoch;
 *   `FOR UPDATE` conflicts with `FOR KEY SHARE`, so the takeover waits until the old epoch's
 *   in-flight transactions have committed or rolled back, and a check that comes later waits
 *   for the takeover and then sees the new epoch. No write of an old epoch commits after a
 *   new epoch exists;
 * - a renewal is a plain `UPDATE` of non-key columns (`FOR NO KEY UPDATE`), which does not
 *   conflict with `FOR KEY SHARE`: a leader's own writes never delay its renewal. (With
 *   `FOR SHARE` they would, and a steady stream of overlapping writes could starve it.)
 *
 * This is the pairing Postgres itself uses for foreign keys (the referencing insert takes
 * `FOR KEY SHARE`, a delete of the referenced row needs `FOR UPDATE`, and non-key updates pass).
 */
import { type Kysely, sql } from 'kysely'
import { StateError, errorMessage } from '../../core/errors.js'
import type { SqlDatabase } from './database.js'
import { migrateState } from './migrations.js'

/** Proof of leadership handed to the state store: its writes carry it and are refused once it is stale. */
export interface Fence {
  /** The elected role, e.g. `orchestrator`. */
  readonly name: string
  /** The fencing token: grows by one on every change of leadership of `name`. */
  readonly epoch: number
  readonly holderId: string
}

/** The subset of a logger (pino's) the election uses. */
export interface LeaderLog {
  info(obj: Record<string, unknown>, msg: string): void
  warn(obj: Record<string, unknown>, msg: string): void
  error(obj: Record<string, unknown>, msg: string): void
}

/** Options of {@link leaderElection}. */
export interface LeaderElectionOptions {
  /** The role to elect; processes campaigning for the same name in the same schema compete. @default 'orchestrator' */
  name?: string
  /**
   * Who this process is, shown to operators (e.g. `host:pid:random`). Must be unique per
   * process: a campaign by a holder that already holds the row takes it over (a new epoch).
   */
  holderId: string
  /** How long a lease lasts without renewal; also how long a paused leader can block a takeover. @default 15000 */
  leaseMs?: number
  /** How often the leader renews. @default leaseMs / 3 */
  renewEveryMs?: number
  /** How often a standby checks whether the lease is free (sooner when it is about to expire). @default min(renewEveryMs, 1000) */
  pollEveryMs?: number
  log?: LeaderLog
}

/** Why leadership was lost, as given to `onLost` callbacks. */
export interface LeaderLost {
  /** The fence that is no longer valid. */
  fence: Fence
  reason: string
  /** The leader row as last read, when it could be read. */
  current?: LeaderInfo
}

/**
 * - `idle`: never campaigned; `campaigning`: waiting for the lease; `leader`: holds it and
 *   renews it; `lost`: held it and failed to renew (final for this fence; campaign again for a
 *   new one); `resigned`: gave it up with `resign()`.
 */
export type LeaderElectionState = 'idle' | 'campaigning' | 'leader' | 'lost' | 'resigned'

/** A lease-based election for one role. */
export interface LeaderElection {
  /**
   * Resolves with this process's fence once it becomes leader (at once if it already is).
   * Waits as long as another holder renews its lease; rejects if `signal` aborts or
   * `resign()` is called first. Database errors while waiting are logged and retried.
   */
  campaign(opts?: { signal?: AbortSignal }): Promise<Fence>
  /**
   * The current fence while this process is leader and its lease, by its own monotonic clock,
   * cannot have expired yet; otherwise undefined. Pass `() => election.fence` to the store.
   */
  readonly fence: Fence | undefined
  readonly state: LeaderElectionState
  /**
   * Called once when leadership is lost (a renewal found another holder or epoch, or no renewal
   * succeeded within `leaseMs`). The caller should stop acting and exit; its writes are refused
   * anyway. A callback registered after the loss is called on the next microtask.
   */
  onLost(cb: (lost: LeaderLost) => void): void
  /**
   * Stops renewing and expires the lease if it is still ours, so a standby takes over without
   * waiting for it to run out. Aborts a campaign in progress. Never throws on database errors
   * (the lease then simply expires). Call it on clean shutdown, after the last write.
   */
  resign(): Promise<void>
}

/** The leader row of a role as the database sees it now. */
export interface LeaderInfo {
  name: string
  holder: string
  epoch: number
  expiresAt: Date
  acquiredAt: Date
  renewedAt: Date
  /** Whether the lease ran out (by the database's clock). */
  expired: boolean
  /** Milliseconds left on the lease by the database's clock (negative once expired). */
  remainingMs: number
}

interface LeaderRow {
  name: string
  holder: string
  epoch: string | number
  expires_at: Date
  acquired_at: Date
  renewed_at: Date
  expired: boolean
  remaining_ms: number | string
}

/** The leader row of `name` (undefined if nobody ever held it). Reads only; `database` must be migrated. */
export async function readLeader(db: Kysely<any> | SqlDatabase, name = 'orchestrator'): Promise<LeaderInfo | undefined> {
  const k = 'destroy' in db ? db : db.db
  const r = await sql<LeaderRow>`
    select name, holder, epoch, expires_at, acquired_at, renewed_at,
      expires_at <= statement_timestamp() as expired,
      (extract(epoch from (expires_at - statement_timestamp())) * 1000)::float8 as remaining_ms
    from state_leader where name = ${name}`.execute(k)
  const row = r.rows[0]
  if (!row) return undefined
  return {
    name: row.name,
    holder: row.holder,
    epoch: Number(row.epoch),
    expiresAt: row.expires_at,
    acquiredAt: row.acquired_at,
    renewedAt: row.renewed_at,
    expired: row.expired,
    remainingMs: Math.round(Number(row.remaining_ms)),
  }
}

/** Options of {@link assertFence}. */
export interface AssertFenceOptions {
  /**
   * Postgres ends the session of a fenced transaction left idle (its process paused) this long,
   * releasing its lock on the leader row so a takeover is not blocked by it forever.
   */
  idleTimeoutMs: number
}

/**
 * Checks, inside the transaction `trx`, that `fence` is the current unexpired leadership of its
 * role, and locks the leader row `FOR KEY SHARE` until the transaction ends, so no takeover can
 * commit before it does. Throws `STATE_FENCED` (not retryable) otherwise, or when `fence` is
 * undefined (this process is not, or no longer, the leader).
 */
export async function assertFence(trx: Kysely<any>, fence: Fence | undefined, opts: AssertFenceOptions): Promise<void> {
  if (!fence) {
    throw new StateError('STATE_FENCED', 'this process is not the leader (it lost or never took the lease); its writes are refused. Stop it and let the current leader act.', {
      retryable: false,
    })
  }
  const r = await sql<{ ok: string }>`
    select set_config('idle_in_transaction_session_timeout', ${`${Math.max(1, Math.round(opts.idleTimeoutMs))}ms`}, true) as ok
    from state_leader
    where name = ${fence.name} and holder = ${fence.holderId} and epoch = ${fence.epoch} and expires_at > statement_timestamp()
    for key share`.execute(trx)
  if (r.rows.length === 1) return
  throw fencedError(fence, await readLeader(trx, fence.name))
}

/** The error of a write refused because `fence` is stale; `current` is the leader row now. */
export function fencedError(fence: Fence, current: LeaderInfo | undefined): StateError {
  const details = {
    name: fence.name,
    epoch: fence.epoch,
    holderId: fence.holderId,
    ...(current ? { currentEpoch: current.epoch, currentHolder: current.holder, currentExpired: current.expired } : {}),
  }
  let why: string
  if (!current) why = `no leader row for ${fence.name} exists`
  else if (current.epoch !== fence.epoch || current.holder !== fence.holderId) {
    why = `another orchestrator took over: ${fence.name} is held by ${current.holder} at epoch ${current.epoch}, this process has epoch ${fence.epoch}`
  } else why = `the lease of epoch ${fence.epoch} expired ${-current.remainingMs} ms ago without renewal (paused process or unreachable database)`
  return new StateError('STATE_FENCED', `write refused: ${why}. This process is no longer the leader and must stop.`, { retryable: false, details })
}

const noLog: LeaderLog = { info() {}, warn() {}, error() {} }

/**
 * A lease-based election for `opts.name` on `database` (the state tables are migrated on the
 * first campaign). See the module comment for the protocol.
 */
export function leaderElection(database: SqlDatabase, opts: LeaderElectionOptions): LeaderElection {
  const leaseMs = opts.leaseMs ?? 15_000
  const renewEveryMs = opts.renewEveryMs ?? Math.max(1, Math.floor(leaseMs / 3))
  if (!(leaseMs > 0) || !(renewEveryMs > 0) || renewEveryMs >= leaseMs) {
    throw new StateError('STATE_LEADER_OPTIONS', `leader election needs 0 < renewEveryMs (${renewEveryMs}) < leaseMs (${leaseMs})`, { retryable: false })
  }
  if (opts.holderId.length === 0) throw new StateError('STATE_LEADER_OPTIONS', 'leader election needs a non-empty holderId', { retryable: false })
  return new Election(database, {
    name: opts.name ?? 'orchestrator',
    holderId: opts.holderId,
    leaseMs,
    renewEveryMs,
    pollEveryMs: opts.pollEveryMs ?? Math.min(renewEveryMs, 1000),
    log: opts.log ?? noLog,
  })
}

interface ResolvedOptions {
  name: string
  holderId: string
  leaseMs: number
  renewEveryMs: number
  pollEveryMs: number
  log: LeaderLog
}

class Election implements LeaderElection {
  #state: LeaderElectionState = 'idle'
  #fence: Fence | undefined
  /** performance.now() before which our lease cannot have expired (last successful acquire/renew was sent at deadline - leaseMs). */
  #deadline = 0
  #timer: NodeJS.Timeout | undefined
  #renewing: Promise<void> | undefined
  #renewFailed = false
  #campaign: { promise: Promise<Fence>; abort: AbortController } | undefined
  #migrated: Promise<unknown> | undefined
  #lost: LeaderLost | undefined
  readonly #lostCallbacks: ((lost: LeaderLost) => void)[] = []
  readonly #db: Kysely<any>

  constructor(
    private readonly database: SqlDatabase,
    private readonly o: ResolvedOptions,
  ) {
    this.#db = database.db
  }

  get state(): LeaderElectionState {
    return this.#state
  }

  get fence(): Fence | undefined {
    return this.#state === 'leader' && performance.now() < this.#deadline ? this.#fence : undefined
  }

  onLost(cb: (lost: LeaderLost) => void): void {
    this.#lostCallbacks.push(cb)
    const lost = this.#lost
    if (this.#state === 'lost' && lost) queueMicrotask(() => this.#call(cb, lost))
  }

  campaign(opts: { signal?: AbortSignal } = {}): Promise<Fence> {
    if (this.#state === 'leader' && this.#fence) return Promise.resolve(this.#fence)
    if (this.#campaign) return this.#campaign.promise
    const abort = new AbortController()
    const onAbort = (): void => abort.abort(opts.signal?.reason)
    if (opts.signal?.aborted) onAbort()
    opts.signal?.addEventListener('abort', onAbort, { once: true })
    this.#state = 'campaigning'
    const promise = this.#run(abort.signal).finally(() => {
      opts.signal?.removeEventListener('abort', onAbort)
      this.#campaign = undefined
      if (this.#state === 'campaigning') this.#state = 'idle'
    })
    this.#campaign = { promise, abort }
    return promise
  }

  async resign(): Promise<void> {
    const campaign = this.#campaign
    if (campaign) {
      campaign.abort.abort(new StateError('STATE_LEADER_RESIGNED', 'the campaign was cancelled by resign()', { retryable: false }))
      await campaign.promise.catch(() => {})
    }
    const fence = this.#state === 'leader' ? this.#fence : undefined
    this.#stopRenewing()
    this.#state = 'resigned'
    this.#fence = undefined
    if (this.#renewing) await this.#renewing
    if (!fence) return
    try {
      await this.#expire(fence)
      this.o.log.info({ name: fence.name, epoch: fence.epoch, holder: fence.holderId }, 'resigned leadership')
    } catch (err) {
      this.o.log.warn({ name: fence.name, epoch: fence.epoch, err: errorMessage(err) }, `could not release the lease; it expires within ${this.o.leaseMs} ms`)
    }
  }

  // -- campaign -------------------------------------------------------------------------------

  async #run(signal: AbortSignal): Promise<Fence> {
    const { name, holderId, log } = this.o
    this.#migrated ??= migrateState(this.database).catch((err: unknown) => {
      this.#migrated = undefined
      throw err
    })
    await this.#migrated
    let waitingFor = ''
    for (;;) {
      signal.throwIfAborted()
      let waitMs = this.o.pollEveryMs
      try {
        const cur = await readLeader(this.#db, name)
        if (!cur || cur.expired || cur.holder === holderId) {
          const sentAt = performance.now()
          // Not abortable once sent: if it won, we must know, and give the lease back.
          const epoch = await this.#acquire()
          if (epoch !== undefined) {
            const fence: Fence = { name, epoch, holderId }
            if (signal.aborted) {
              await this.#expire(fence).catch(() => {})
              signal.throwIfAborted()
            }
            this.#becomeLeader(fence, sentAt, cur)
            return fence
          }
        } else {
          const key = `${cur.holder}@${cur.epoch}`
          if (key !== waitingFor) {
            waitingFor = key
            log.info(
              { name, holder: holderId, leader: cur.holder, epoch: cur.epoch, expiresAt: cur.expiresAt.toISOString() },
              `standing by: ${name} is held by ${cur.holder} (epoch ${cur.epoch}); taking over if its lease expires`,
            )
          }
          // Wake up just after the lease would run out, in case the leader stopped renewing.
          waitMs = Math.max(1, Math.min(this.o.pollEveryMs, cur.remainingMs + 5))
        }
      } catch (err) {
        if (signal.aborted) signal.throwIfAborted()
        log.warn({ name, holder: holderId, err: errorMessage(err) }, 'leader election: database error while campaigning; retrying')
      }
      await sleep(waitMs, signal)
    }
  }

  /**
   * One statement: takes the row if it is absent, expired, or already ours, bumping the epoch.
   * The CTE locks an expired row FOR UPDATE first (count(*) forces it to run before the insert),
   * which waits for the old epoch's in-flight fenced transactions (they hold FOR KEY SHARE). A
   * live row of another holder is not locked by it, so polling standbys never stall the leader.
   */
  async #acquire(): Promise<number | undefined> {
    const { name, holderId, leaseMs } = this.o
    const r = await sql<{ epoch: string | number }>`
      with takeover as materialized (
        select epoch from state_leader
        where name = ${name} and (expires_at <= statement_timestamp() or holder = ${holderId})
        for update
      )
      insert into state_leader as l (name, holder, epoch, expires_at, acquired_at, renewed_at)
      select ${name}, ${holderId}, 1, statement_timestamp() + ${leaseMs}::float8 * interval '1 millisecond', statement_timestamp(), statement_timestamp()
      from (select count(*) from takeover) as waited
      on conflict (name) do update set
        holder = excluded.holder,
        epoch = l.epoch + 1,
        expires_at = excluded.expires_at,
        acquired_at = excluded.acquired_at,
        renewed_at = excluded.renewed_at
      where l.expires_at <= statement_timestamp() or l.holder = ${holderId}
      returning epoch`.execute(this.#db)
    const row = r.rows[0]
    return row === undefined ? undefined : Number(row.epoch)
  }

  #becomeLeader(fence: Fence, sentAt: number, previous: LeaderInfo | undefined): void {
    this.#fence = fence
    this.#deadline = sentAt + this.o.leaseMs
    this.#state = 'leader'
    this.#lost = undefined
    this.#renewFailed = false
    this.o.log.info(
      {
        name: fence.name,
        holder: fence.holderId,
        epoch: fence.epoch,
        leaseMs: this.o.leaseMs,
        ...(previous ? { previousHolder: previous.holder, previousEpoch: previous.epoch } : {}),
      },
      `became leader of ${fence.name} (epoch ${fence.epoch})`,
    )
    this.#schedule(this.o.renewEveryMs)
  }

  // -- renewal --------------------------------------------------------------------------------

  #schedule(ms: number): void {
    this.#timer = setTimeout(() => this.#tick(), Math.max(1, ms))
  }

  #stopRenewing(): void {
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = undefined
  }

  #tick(): void {
    this.#timer = undefined
    if (this.#state !== 'leader') return
    const now = performance.now()
    if (now >= this.#deadline) {
      this.#lose(`the lease was not renewed within ${this.o.leaseMs} ms (the process was paused, or the database was unreachable)`)
      return
    }
    if (!this.#renewing) {
      this.#renewing = this.#renew().finally(() => {
        this.#renewing = undefined
      })
    }
    // Wake at the deadline at the latest, so a hanging renewal is noticed; retry sooner after a failure.
    const every = this.#renewFailed ? Math.min(this.o.renewEveryMs, 1000) : this.o.renewEveryMs
    this.#schedule(Math.min(every, this.#deadline - now))
  }

  async #renew(): Promise<void> {
    const fence = this.#fence
    if (!fence) return
    const sentAt = performance.now()
    try {
      const r = await sql<{ epoch: string }>`
        update state_leader
        set expires_at = statement_timestamp() + ${this.o.leaseMs}::float8 * interval '1 millisecond', renewed_at = statement_timestamp()
        where name = ${fence.name} and holder = ${fence.holderId} and epoch = ${fence.epoch} and expires_at > statement_timestamp()
        returning epoch`.execute(this.#db)
      if (this.#state !== 'leader' || this.#fence !== fence) return
      if (r.rows.length === 1) {
        this.#deadline = Math.max(this.#deadline, sentAt + this.o.leaseMs)
        if (this.#renewFailed) this.o.log.info({ name: fence.name, epoch: fence.epoch }, 'lease renewed again')
        this.#renewFailed = false
        return
      }
      const current = await readLeader(this.#db, fence.name).catch(() => undefined)
      this.#lose(fencedError(fence, current).message.replace(/^write refused: /, ''), current)
    } catch (err) {
      if (this.#state !== 'leader' || this.#fence !== fence) return
      this.#renewFailed = true
      this.o.log.warn(
        { name: fence.name, epoch: fence.epoch, err: errorMessage(err), msLeft: Math.round(this.#deadline - performance.now()) },
        'could not renew the leader lease; retrying until it runs out',
      )
    }
  }

  #lose(reason: string, current?: LeaderInfo): void {
    const fence = this.#fence
    if (this.#state !== 'leader' || !fence) return
    this.#stopRenewing()
    this.#state = 'lost'
    this.#fence = undefined
    const lost: LeaderLost = { fence, reason, ...(current ? { current } : {}) }
    this.#lost = lost
    this.o.log.error(
      { name: fence.name, holder: fence.holderId, epoch: fence.epoch, ...(current ? { leader: current.holder, leaderEpoch: current.epoch } : {}) },
      `lost leadership of ${fence.name} (epoch ${fence.epoch}): ${reason}`,
    )
    for (const cb of this.#lostCallbacks) this.#call(cb, lost)
  }

  #call(cb: (lost: LeaderLost) => void, lost: LeaderLost): void {
    try {
      cb(lost)
    } catch (err) {
      this.o.log.error({ err: errorMessage(err) }, 'an onLost callback threw')
    }
  }

  /** Ends the lease of `fence` now if it is still ours. */
  async #expire(fence: Fence): Promise<void> {
    await sql`
      update state_leader set expires_at = statement_timestamp() - interval '1 millisecond'
      where name = ${fence.name} and holder = ${fence.holderId} and epoch = ${fence.epoch} and expires_at > statement_timestamp()`.execute(this.#db)
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason as Error)
      return
    }
    const onAbort = (): void => {
      clearTimeout(timer)
      reject(signal.reason as Error)
    }
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal.addEventListener('abort', onAbort, { once: true })
  })
}
