#!/usr/bin/env node
// lying-prover.mjs — a HOSTILE test prover (process protocol, files mode). It runs the honest
// mock prover (examples/mock-prover.mjs) and then lies about every job, alternating between two
// ways from one call to the next of the same worker (a counter file per worker process), so
// even a worker that gets only two jobs tells both lies:
//   - 1st, 3rd, … call: a well-formed proof for the WRONG RANGE (the statement of first..last+1);
//   - 2nd, 4th, … call: an INVALID proof (the right range, a commitment with one digit changed).
// The orchestrator must reject both, record them, retry the job on another worker, and never
// propose them (test/e2e/untrusted-workers.test.ts).
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const MOCK = fileURLToPath(new URL('../../examples/mock-prover.mjs', import.meta.url))
const argv = process.argv.slice(2)
const at = (flag) => argv[argv.indexOf(flag) + 1]
const inputPath = at('--input-path')
const outputPath = at('--output-path')
const doc = JSON.parse(readFileSync(inputPath, 'utf8'))
const counterFile = join(tmpdir(), `lying-prover-${process.ppid}.count`)
const calls = existsSync(counterFile) ? Number(readFileSync(counterFile, 'utf8')) || 0 : 0
writeFileSync(counterFile, String(calls + 1))
const wrongRange = calls % 2 === 0
let proveFrom = inputPath
if (wrongRange) {
  proveFrom = `${inputPath}.lie.json`
  writeFileSync(proveFrom, JSON.stringify({ ...doc, job: { ...doc.job, last: doc.job.last + 1 } }))
}
const r = spawnSync(process.execPath, [MOCK, '--input-path', proveFrom, '--output-path', outputPath], { stdio: ['ignore', 'inherit', 'inherit'] })
if (r.status !== 0) process.exit(r.status ?? 1)
if (!wrongRange) {
  const out = JSON.parse(readFileSync(outputPath, 'utf8'))
  const c = out.output.commitment
  out.output.commitment = `${c.slice(0, -1)}${c.endsWith('0') ? '1' : '0'}`
  writeFileSync(outputPath, JSON.stringify(out))
}
process.stderr.write(`lying-prover: job ${doc.job.id}: answered with ${wrongRange ? 'a proof for the wrong range' : 'an invalid proof'}\n`)
