import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'
import { ExecutorError } from '../../core/errors.js'

/**
 * Witness generation with noir_js (the ACVM in wasm), in a worker thread so a long execution
 * does not stall the event loop. An assertion the inputs violate fails here — that is the
 * guest rejecting its input, reported as `ExecutorError('unprovable')` with the circuit's
 * assertion message.
 */

/** A Noir input map: field values as decimal or 0x-hex strings, arrays, structs. */
export type NoirInputs = Record<string, unknown>

/** A generated witness. */
export interface Witness {
  /** The gzipped witness stack, as `bb prove -w` reads it. */
  bytes: Uint8Array
  durationMs: number
}

const EXECUTE_WORKER = String.raw`
const { parentPort, workerData } = require('node:worker_threads')
const { Noir } = require(workerData.entry)
const noir = new Noir(JSON.parse(workerData.program))
noir.execute(JSON.parse(workerData.inputs)).then(
  ({ witness }) => parentPort.postMessage({ ok: true, witness }, [witness.buffer]),
  (err) => parentPort.postMessage({ ok: false, message: String((err && err.message) || err) }),
)
`

let entry: string | undefined
function noirJsEntry(): string {
  entry ??= createRequire(import.meta.url).resolve('@noir-lang/noir_js')
  return entry
}

/**
 * Executes `program` (its JSON text) on `inputs`. Throws `ExecutorError('unprovable')` when the
 * circuit rejects the inputs (the message says which assertion), `ExecutorError('transient')`
 * when the worker itself failed.
 */
export async function executeNoir(program: string, inputs: NoirInputs, opts: { signal?: AbortSignal; what?: string } = {}): Promise<Witness> {
  const started = performance.now()
  const what = opts.what ?? 'circuit'
  opts.signal?.throwIfAborted()
  return new Promise((resolve, reject) => {
    const worker = new Worker(EXECUTE_WORKER, { eval: true, workerData: { entry: noirJsEntry(), program, inputs: JSON.stringify(inputs) } })
    const onAbort = (): void => {
      void worker.terminate()
      reject(new ExecutorError('transient', `${what}: witness generation aborted`, { aborted: true }, opts.signal?.reason))
    }
    opts.signal?.addEventListener('abort', onAbort, { once: true })
    worker.once('message', (m: { ok: boolean; witness?: Uint8Array; message?: string }) => {
      opts.signal?.removeEventListener('abort', onAbort)
      void worker.terminate()
      if (m.ok && m.witness) {
        resolve({ bytes: m.witness, durationMs: Math.round(performance.now() - started) })
        return
      }
      reject(new ExecutorError('unprovable', `${what}: the circuit rejects its input during witness execution: ${m.message ?? 'unknown failure'}`, { phase: 'witness' }))
    })
    worker.once('error', (err) => {
      opts.signal?.removeEventListener('abort', onAbort)
      reject(new ExecutorError('transient', `${what}: witness generation crashed: ${err.message}`, { phase: 'witness' }, err))
    })
  })
}
