import { createHash, randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { open, rename, rm } from 'node:fs/promises'
import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'
import { buildBn128 } from 'ffjavascript'
import { ProoflineError } from '../../core/errors.js'
import type { G2Point } from './types.js'

/**
 * A development CRS: powers of a random tau, [tau^i]·G1 for i = 0..points-1, in the file
 * format native `bb` reads from `<crs dir>/bn254_g1.dat` (64 bytes per point: x then y,
 * big-endian, standard form), and [tau]·G2.
 *
 * Whoever knows tau can forge proofs, so a development CRS is for dev chains only (see
 * `resolveCrs`). tau lives in this process's memory while the points are computed and is not
 * written anywhere.
 *
 * Speed: each point is a fixed-base multiplication with a 16-bit comb table of G1 (16 windows
 * of 65,535 affine points, built once per worker thread), so 16 mixed additions per point
 * instead of a 254-bit double-and-add; the field arithmetic is ffjavascript's BN254 wasm.
 */

/** Order of the BN254 scalar field. */
export const BN254_R = 21888242871839275222246405745257275088548364400416034343698204186575808495617n

/** Options of {@link generateDevCrs}. */
export interface GenerateDevCrsOptions {
  /** Number of G1 points, e.g. 2^21 + 1. */
  points: number
  /** Where `bn254_g1.dat` is written (atomically: a temporary file renamed at the end). */
  g1Path: string
  /** Worker threads. @default available parallelism */
  threads?: number
  /** Called as batches complete. */
  onProgress?: (done: number, total: number) => void
  signal?: AbortSignal
  /** The secret; only tests set it (to check the output). @default 64 random bytes mod r */
  tau?: bigint
}

/** What generation produced. */
export interface GenerateDevCrsResult {
  points: number
  /** sha256 of `bn254_g1.dat`, lowercase hex. */
  g1Sha256: string
  /** [tau]·G2. */
  g2: G2Point
  durationMs: number
}

/** Generating the CRS failed (worker error, self-check mismatch, I/O). */
export class CrsError extends ProoflineError {
  constructor(code: 'CRS_GENERATION_FAILED' | 'CRS_INVALID' | 'CRS_REFUSED' | 'CRS_NOT_FOUND', message: string, opts: { retryable: boolean; details?: Record<string, unknown>; cause?: unknown }) {
    super(code, message, opts)
  }
}

// Runs inside a worker thread (CommonJS eval: no imports; the wasm bytes come in workerData).
// Computes points [start, end) as [tau^i]G1 with a 16-bit comb and posts them in batches of
// `batch`, already in bb's format. Worker 0 checks its first point against a plain scalar
// multiplication.
const WORKER_SOURCE = String.raw`
const { parentPort, workerData } = require('node:worker_threads')
const { code, pG1gen, start, end, first, tau, batch } = workerData
const memory = new WebAssembly.Memory({ initial: 2048, maximum: 32767 })
const e = new WebAssembly.Instance(new WebAssembly.Module(code), { env: { memory } }).exports
// The module's own scratch space starts at the pointer stored at address 0; bump it past
// every buffer allocated here so its batch operations never overwrite them.
function alloc(n) {
  const u32 = new Uint32Array(memory.buffer, 0, 1)
  const p = (u32[0] + 63) & ~63
  u32[0] = p + n
  const need = p + n + (1 << 24)
  if (need > memory.buffer.byteLength) memory.grow(((need - memory.buffer.byteLength) >> 16) + 1)
  return p
}
function setScalar(p, hex) {
  const u8 = new Uint8Array(memory.buffer)
  let x = BigInt('0x' + hex)
  for (let i = 0; i < 32; i++) { u8[p + i] = Number(x & 255n); x >>= 8n }
}
const W = 16, NW = 16, D = 1 << W
const table = alloc(NW * D * 64)
const jac = alloc(D * 96)
const base = alloc(96), baseA = alloc(64)
e.g1m_copy(pG1gen, base)
for (let j = 0; j < NW; j++) {
  // table[j][d] = d * 2^(16 j) * G for d = 1..65535 (index 0 unused: batch inversion needs non-zero points)
  e.g1m_toAffine(base, baseA)
  e.g1m_copy(base, jac)
  for (let d = 2; d < D; d++) e.g1m_addMixed(jac + (d - 2) * 96, baseA, jac + (d - 1) * 96)
  e.g1m_batchToAffine(jac, D - 1, table + (j * D + 1) * 64)
  for (let k = 0; k < W; k++) e.g1m_double(base, base)
}
const sM = alloc(32), tauM = alloc(32), sStd = alloc(32)
setScalar(sM, first); e.frm_toMontgomery(sM, sM)
setScalar(tauM, tau); e.frm_toMontgomery(tauM, tauM)
const accs = alloc(batch * 96), aff = alloc(batch * 64), out = alloc(batch * 64)
let checked = false
for (let i0 = start; i0 < end; i0 += batch) {
  const n = Math.min(batch, end - i0)
  for (let k = 0; k < n; k++) {
    e.frm_fromMontgomery(sM, sStd)
    const u16 = new Uint16Array(memory.buffer, sStd, 16)
    const acc = accs + k * 96
    e.g1m_zero(acc)
    for (let j = 0; j < NW; j++) { const d = u16[j]; if (d !== 0) e.g1m_addMixed(acc, table + (j * D + d) * 64, acc) }
    if (!checked) {
      // Self-check: the comb agrees with double-and-add for the first point.
      const ref = alloc(96), gA = alloc(64), a1 = alloc(64), a2 = alloc(64)
      e.g1m_toAffine(pG1gen, gA)
      e.g1m_timesScalarAffine(gA, sStd, 32, ref)
      e.g1m_toAffine(ref, a1); e.g1m_toAffine(acc, a2)
      if (!e.g1m_eqAffine(a1, a2)) throw new Error('CRS self-check failed: comb and scalar multiplication disagree')
      checked = true
    }
    e.frm_mul(sM, tauM, sM)
  }
  e.g1m_batchToAffine(accs, n, aff)
  e.g1m_batchLEMtoU(aff, n, out)
  const bytes = new Uint8Array(memory.buffer, out, n * 64).slice()
  parentPort.postMessage({ i0, n, bytes }, [bytes.buffer])
}
parentPort.postMessage({ done: true })
`

function modPow(b: bigint, e: bigint): bigint {
  let r = 1n
  b %= BN254_R
  while (e > 0n) {
    if (e & 1n) r = (r * b) % BN254_R
    b = (b * b) % BN254_R
    e >>= 1n
  }
  return r
}

function randomTau(): bigint {
  for (;;) {
    const t = BigInt(`0x${randomBytes(64).toString('hex')}`) % BN254_R
    if (t > 1n) return t
  }
}

interface WasmApi {
  Memory: new (desc: { initial: number }) => { buffer: ArrayBuffer }
  instantiate(code: Uint8Array, imports: object): Promise<{ instance: { exports: Record<string, (...args: number[]) => number> } }>
}

const hex32 = (b: Uint8Array, at: number): `0x${string}` => `0x${Buffer.from(b.subarray(at, at + 32)).toString('hex')}`

/** [tau]·G2 computed with the same wasm module, returned as (c0, c1) coordinates. */
async function g2Power(code: Uint8Array, pG2gen: number, tau: bigint): Promise<G2Point> {
  // The project's lib settings have no WebAssembly types; this is the subset used.
  const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly
  const memory = new wasm.Memory({ initial: 64 })
  const { instance } = await wasm.instantiate(code, { env: { memory } })
  const e = instance.exports
  // Reserve our buffers past the module's free-memory pointer (address 0), which its own
  // scratch allocations start from.
  const u32 = new Uint32Array(memory.buffer, 0, 1)
  const at = ((u32[0] as number) + 63) & ~63
  u32[0] = at + 2048
  const [gA, scalar, outJ, outA, outU] = [at, at + 256, at + 512, at + 768, at + 1024]
  const u8 = new Uint8Array(memory.buffer)
  let x = tau
  for (let i = 0; i < 32; i++) {
    u8[scalar + i] = Number(x & 255n)
    x >>= 8n
  }
  e.g2m_toAffine?.(pG2gen, gA)
  e.g2m_timesScalarAffine?.(gA, scalar, 32, outJ)
  e.g2m_toAffine?.(outJ, outA)
  e.g2m_LEMtoU?.(outA, outU)
  // ffjavascript's uncompressed G2 is x.c1 ‖ x.c0 ‖ y.c1 ‖ y.c0 (the EVM precompile order).
  const u = new Uint8Array(memory.buffer).slice(outU, outU + 128)
  return { x: [hex32(u, 32), hex32(u, 0)], y: [hex32(u, 96), hex32(u, 64)] }
}

/**
 * The check every KZG verifier relies on: e([tau]G1, G2) = e(G1, [tau]G2), with the file's
 * second point and the computed G2. Catches a G2 that does not belong to the G1 points.
 */
export async function checkCrsPairing(g1Path: string, g2: G2Point): Promise<void> {
  const head = Buffer.alloc(128)
  const fh = await open(g1Path, 'r')
  try {
    await fh.read(head, 0, 128, 0)
  } finally {
    await fh.close()
  }
  const curve = await buildBn128(true)
  try {
    const tauG1 = curve.G1.fromRprUncompressed(head, 64)
    const words = [g2.x[1], g2.x[0], g2.y[1], g2.y[0]].map((w) => Buffer.from(w.slice(2), 'hex'))
    const tauG2 = curve.G2.fromRprUncompressed(Buffer.concat(words), 0)
    if (!(await curve.pairingEq(tauG1, curve.G2.g, curve.G1.neg(curve.G1.g), tauG2))) {
      throw new CrsError('CRS_GENERATION_FAILED', 'the development CRS failed its pairing check: e([tau]G1, G2) != e(G1, [tau]G2)', { retryable: false })
    }
  } finally {
    await curve.terminate()
  }
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

/**
 * Generates a development CRS of `points` G1 points into `g1Path` and returns its sha256 and
 * [tau]·G2. Progress goes to `onProgress`; abort with `signal`.
 */
export async function generateDevCrs(opts: GenerateDevCrsOptions): Promise<GenerateDevCrsResult> {
  const started = performance.now()
  const { points } = opts
  if (!Number.isSafeInteger(points) || points < 2) throw new CrsError('CRS_GENERATION_FAILED', `a CRS needs at least 2 points (got ${points})`, { retryable: false })
  const engine = await buildBn128(true)
  const code = engine.tm.code.slice()
  const { pG1gen, pG2gen } = engine.tm
  await engine.terminate()
  const tau = opts.tau ?? randomTau()
  const threads = Math.max(1, Math.min(opts.threads ?? availableParallelism(), 16, Math.ceil(points / 4096)))
  const tmp = `${opts.g1Path}.${process.pid}.tmp`
  const file = await open(tmp, 'w')
  const workers: Worker[] = []
  let written = 0
  try {
    await file.truncate(points * 64)
    await new Promise<void>((resolve, reject) => {
      let finished = 0
      let failed = false
      const fail = (err: unknown): void => {
        if (failed) return
        failed = true
        reject(err instanceof Error ? err : new Error(String(err)))
      }
      const onAbort = (): void => fail(opts.signal?.reason ?? new Error('aborted'))
      opts.signal?.addEventListener('abort', onAbort, { once: true })
      // Positional writes are queued so they complete in order of arrival, one at a time.
      let writes: Promise<unknown> = Promise.resolve()
      for (let w = 0; w < threads; w++) {
        const start = Math.floor((points * w) / threads)
        const end = Math.floor((points * (w + 1)) / threads)
        const worker = new Worker(WORKER_SOURCE, {
          eval: true,
          workerData: { code, pG1gen, start, end, first: modPow(tau, BigInt(start)).toString(16), tau: tau.toString(16), batch: 8192 },
        })
        workers.push(worker)
        worker.on('message', (m: { done?: boolean; i0: number; n: number; bytes: Uint8Array }) => {
          if (m.done) {
            writes = writes.then(() => {
              if (++finished === threads) {
                opts.signal?.removeEventListener('abort', onAbort)
                resolve()
              }
            })
            return
          }
          writes = writes.then(async () => {
            await file.write(m.bytes, 0, m.bytes.length, m.i0 * 64)
            written += m.n
            opts.onProgress?.(written, points)
          })
          writes.catch(fail)
        })
        worker.on('error', fail)
        worker.on('exit', (code) => {
          if (code !== 0) fail(new Error(`CRS worker exited with code ${code}`))
        })
      }
    })
    await file.sync()
  } catch (err) {
    await file.close()
    await rm(tmp, { force: true })
    throw new CrsError('CRS_GENERATION_FAILED', `generating the development CRS failed: ${err instanceof Error ? err.message : String(err)}`, { retryable: false, cause: err })
  } finally {
    await Promise.all(workers.map((w) => w.terminate()))
  }
  await file.close()
  const g2 = await g2Power(code, pG2gen, tau)
  await checkCrsPairing(tmp, g2)
  const g1Sha256 = await sha256File(tmp)
  await rename(tmp, opts.g1Path)
  return { points, g1Sha256, g2, durationMs: Math.round(performance.now() - started) }
}
