import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

/**
 * Runs `fn` while holding a lock on `dir` (a `<dir>.lock` folder created atomically), so two
 * processes sharing a cache (parallel test workers, a worker and an orchestrator on one host)
 * never build the same entry twice at once. A lock whose owner process is gone (same host) is
 * taken over.
 */
export async function withCacheLock<T>(dir: string, fn: () => Promise<T>, opts: { signal?: AbortSignal; onWait?: (owner: string) => void } = {}): Promise<T> {
  const lock = `${dir}.lock`
  const owner = `${hostname()}:${process.pid}`
  await mkdir(dirname(lock), { recursive: true })
  let waited = false
  for (;;) {
    opts.signal?.throwIfAborted()
    try {
      await mkdir(lock)
      await writeFile(join(lock, 'owner'), owner)
      break
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const holder = await readFile(join(lock, 'owner'), 'utf8').catch(() => '')
      const [host, pid] = holder.split(':')
      if (host === hostname() && pid !== undefined && !alive(Number(pid))) {
        await rm(lock, { recursive: true, force: true })
        continue
      }
      if (!waited) opts.onWait?.(holder || 'another process')
      waited = true
      await sleep(250, undefined, opts.signal ? { signal: opts.signal } : {})
    }
  }
  try {
    return await fn()
  } finally {
    await rm(lock, { recursive: true, force: true })
  }
}

function alive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}
