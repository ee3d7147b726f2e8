/**
 * Test fixture: a private nats-server with JetStream on a free port and its own store
 * directory, which a test can SIGKILL and start again on the same port and directory.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { connect as tcpConnect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from '../../core/net.js'

/** The nats-server binary; override with PROOFLINE_NATS_SERVER. */
export const NATS_SERVER_BIN = process.env.PROOFLINE_NATS_SERVER ?? '/usr/sbin/nats-server'

/** A private server. */
export interface PrivateNatsServer {
  readonly url: string
  readonly port: number
  readonly storeDir: string
  /** Starts the server (again) on the same port and store dir; resolves once it accepts connections. */
  start(): Promise<void>
  /** SIGKILLs the server and waits for it to exit. */
  kill(): Promise<void>
  /** Kills the server and removes its store dir. */
  dispose(): Promise<void>
}


function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tcpConnect({ host: '127.0.0.1', port })
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
}

/** Creates (does not start) a private server. */
export async function privateNatsServer(): Promise<PrivateNatsServer> {
  const port = await freePort()
  const storeDir = await mkdtemp(join(tmpdir(), 'proofline-nats-'))
  let child: ChildProcess | null = null
  let stderr = ''

  const kill = async () => {
    const c = child
    child = null
    if (c === null || c.exitCode !== null || c.signalCode !== null) return
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()))
    c.kill('SIGKILL')
    await exited
  }

  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    storeDir,
    async start() {
      if (child !== null) throw new Error('nats-server already running')
      stderr = ''
      const c = spawn(NATS_SERVER_BIN, ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', storeDir], { stdio: ['ignore', 'ignore', 'pipe'] })
      child = c
      c.stderr?.on('data', (b: Buffer) => {
        stderr = (stderr + b.toString()).slice(-4_000)
      })
      const deadline = Date.now() + 15_000
      for (;;) {
        if (c.exitCode !== null) throw new Error(`nats-server exited with ${c.exitCode}: ${stderr}`)
        if (await accepts(port)) return
        if (Date.now() > deadline) throw new Error(`nats-server did not listen on ${port} within 15 s: ${stderr}`)
        await new Promise((r) => setTimeout(r, 50))
      }
    },
    kill,
    async dispose() {
      await kill()
      await rm(storeDir, { recursive: true, force: true })
    },
  }
}
