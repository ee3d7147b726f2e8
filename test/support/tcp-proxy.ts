/**
 * Test fixture: a TCP proxy on a free port of 127.0.0.1 in front of another address, which a
 * test can take down (listener closed, every open connection reset) and bring up again on the
 * same port — an RPC endpoint that goes away and comes back.
 */
import { createServer, connect, type Server, type Socket } from 'node:net'
import { freePort } from '../../src/core/net.js'

/** A proxy that can be taken down and up. */
export interface TcpProxy {
  /** `http://127.0.0.1:<port>` (the proxy is protocol-agnostic; this is for HTTP targets). */
  readonly url: string
  readonly port: number
  /** Whether it accepts connections now. */
  readonly up: boolean
  /** Listens (again) on the same port. */
  start(): Promise<void>
  /** Closes the listener and resets every open connection: clients see refused or reset connections. */
  stop(): Promise<void>
}

/** Creates (and starts) a proxy to `target` (`host:port`). */
export async function tcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const port = await freePort()
  const sockets = new Set<Socket>()
  let server: Server | undefined

  const start = async (): Promise<void> => {
    if (server) return
    const s = createServer((client) => {
      const upstream = connect(target.port, target.host)
      sockets.add(client)
      sockets.add(upstream)
      const drop = (): void => {
        client.destroy()
        upstream.destroy()
        sockets.delete(client)
        sockets.delete(upstream)
      }
      client.on('error', drop)
      upstream.on('error', drop)
      client.on('close', drop)
      upstream.on('close', drop)
      client.pipe(upstream)
      upstream.pipe(client)
    })
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject)
      s.listen(port, '127.0.0.1', () => resolve())
    })
    server = s
  }

  await start()
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    get up() {
      return server !== undefined
    },
    start,
    async stop() {
      const s = server
      server = undefined
      if (!s) return
      const closed = new Promise<void>((resolve) => s.close(() => resolve()))
      for (const sock of sockets) sock.resetAndDestroy()
      sockets.clear()
      await closed
    },
  }
}
