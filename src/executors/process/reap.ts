import { readFile, readdir } from 'node:fs/promises'
import { OWNER_ENV } from './protocol.js'

/**
 * Finding processes by an environment marker, through Linux `/proc`. Env vars are inherited, so
 * a marker set on a prover reaches every process it starts, including ones that left its
 * process group (`setsid`) — which is what makes "no prover survives its owner" enforceable.
 * On systems without `/proc` these functions find nothing.
 */

/** Whether `/proc/<pid>/environ` holds exactly the entry `name=value`. */
async function hasEnvEntry(pid: number, entry: string): Promise<boolean> {
  try {
    const environ = await readFile(`/proc/${pid}/environ`)
    // Entries are NUL-separated; compare whole entries so `tag` never matches `tag-2`.
    let start = 0
    for (let i = 0; i <= environ.length; i++) {
      if (i === environ.length || environ[i] === 0) {
        if (i - start === entry.length && environ.toString('utf8', start, i) === entry) return true
        start = i + 1
      }
    }
    return false
  } catch {
    // Gone, a kernel thread, or another user's process: not ours to kill.
    return false
  }
}

/** `ppid` and `pgrp` of a process, from `/proc/<pid>/stat` (the command name may contain spaces and parentheses). */
async function procStat(pid: number): Promise<{ ppid: number; pgrp: number; state: string } | null> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return { state: fields[0] ?? '?', ppid: Number(fields[1]), pgrp: Number(fields[2]) }
  } catch {
    return null
  }
}

/** Our own pid and every ancestor's: never killed, even if they carry the marker. */
async function selfAndAncestors(): Promise<Set<number>> {
  const keep = new Set<number>([process.pid])
  let pid = process.ppid
  while (pid > 1 && !keep.has(pid)) {
    keep.add(pid)
    pid = (await procStat(pid))?.ppid ?? 0
  }
  keep.add(1)
  return keep
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig)
  } catch {
    // ESRCH: already gone. EPERM: not ours.
  }
}

/**
 * SIGKILLs every process whose environment holds `name=value` exactly, and the process
 * groups they lead or belong to (unless that is our own group). Skips the current process and
 * its ancestors. Resolves with the pids that carried the marker and were signalled.
 */
export async function killProcessesWithEnv(name: string, value: string): Promise<number[]> {
  const entry = `${name}=${value}`
  let names: string[]
  try {
    names = await readdir('/proc')
  } catch {
    return []
  }
  const keep = await selfAndAncestors()
  const ownGroup = (await procStat(process.pid))?.pgrp
  // Find first, then kill: killing a group as soon as it is found would hide its other
  // members from the scan and from the result.
  const found: { pid: number; pgrp: number }[] = []
  for (const n of names) {
    if (!/^\d+$/.test(n)) continue
    const pid = Number(n)
    if (keep.has(pid) || !(await hasEnvEntry(pid, entry))) continue
    const st = await procStat(pid)
    if (st === null || st.state === 'Z') continue
    found.push({ pid, pgrp: st.pgrp })
  }
  const killed: number[] = []
  for (const { pid, pgrp } of found) {
    if (pgrp > 1 && pgrp !== ownGroup && !keep.has(pgrp)) signal(-pgrp, 'SIGKILL')
    signal(pid, 'SIGKILL')
    killed.push(pid)
  }
  return killed
}

/**
 * Kills prover processes left behind by a previous run of the instance `ownerTag` (the
 * orchestrator or worker was SIGKILLed, so it could not stop its children): every process whose
 * environment holds `PROOFLINE_OWNER=<ownerTag>` exactly, with its process group. Call it at
 * start-up, before running any executor with the same `ownerTag`. Linux only (`/proc`);
 * elsewhere it finds nothing. Resolves with the pids killed.
 */
export async function reapOrphans(ownerTag: string): Promise<number[]> {
  if (ownerTag.length === 0) return []
  return killProcessesWithEnv(OWNER_ENV, ownerTag)
}
