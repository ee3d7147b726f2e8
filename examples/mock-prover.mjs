#!/usr/bin/env node
// mock-prover.mjs — a DEVELOPMENT prover speaking proofline's executor process protocol
// (docs/executor-protocol.md). It proves nothing: it returns the mock proof commitment
//
//   statement  = { program, stage, first, last, lastHash, inputs }
//                inputs: block hashes (blocks) or inner results' output.commitment (results), in input order
//   commitment = sha256(canonical JSON of statement), lowercase hex
//
// which shows the prover saw the right inputs in the right order. It is standalone on purpose
// (no project imports) so it shows what a prover binary must do; a test checks it agrees with
// src/backends/mock/mock-proof.ts and src/executors/mock/mock-executor.ts.
//
// Usage:
//   mock-prover.mjs [--input-path IN.json --output-path OUT.json]   (absent: stdin → stdout)
//                   [--fail-rate R] [--hostile-rate R] [--too-big-above COST]
//                   [--latency-ms MIN:MAX] [--seed S]
// Exit codes: 0 success · 10 too big, split me · 11 unprovable · 1 injected transient failure · 2 bad usage/input
import { createHash } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'

const EXIT_TRANSIENT = 1
const EXIT_USAGE = 2
const EXIT_TOO_BIG = 10
const EXIT_UNPROVABLE = 11

const log = (line) => process.stderr.write(`mock-prover: ${line}\n`)
const die = (code, why) => {
  log(why)
  process.exit(code)
}

function parseArgs(argv) {
  const known = new Set(['--input-path', '--output-path', '--fail-rate', '--hostile-rate', '--too-big-above', '--latency-ms', '--seed'])
  const flags = {}
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i]
    const value = argv[i + 1]
    if (!known.has(name) || value === undefined) die(EXIT_USAGE, `unknown flag or missing value: ${name}`)
    flags[name.slice(2)] = value
  }
  const num = (name, dflt) => {
    if (flags[name] === undefined) return dflt
    const n = Number(flags[name])
    if (!Number.isFinite(n)) die(EXIT_USAGE, `--${name} must be a number`)
    return n
  }
  let latency
  if (flags['latency-ms'] !== undefined) {
    const m = /^(\d+):(\d+)$/.exec(flags['latency-ms'])
    if (m === null) die(EXIT_USAGE, '--latency-ms must be MIN:MAX in milliseconds')
    latency = { min: Number(m[1]), max: Number(m[2]) }
  }
  if ((flags['input-path'] === undefined) !== (flags['output-path'] === undefined)) {
    die(EXIT_USAGE, '--input-path and --output-path go together')
  }
  return {
    inputPath: flags['input-path'],
    outputPath: flags['output-path'],
    failRate: num('fail-rate', 0),
    hostileRate: num('hostile-rate', 0),
    tooBigAbove: num('too-big-above', undefined),
    seed: num('seed', 0),
    latency,
  }
}

const sha256 = (s) => createHash('sha256').update(s).digest('hex')

/** JSON with object keys sorted recursively: equal content, equal bytes. */
function canonicalJson(value) {
  const sort = (v) => {
    if (Array.isArray(v)) return v.map(sort)
    if (v !== null && typeof v === 'object') {
      const out = {}
      for (const k of Object.keys(v).sort()) out[k] = sort(v[k])
      return out
    }
    return v
  }
  return JSON.stringify(sort(value))
}

/** Uniform draw in [0, 1) for one purpose of one attempt; the same formula as mockDraw in TypeScript. */
const draw = (job, seed, purpose) => parseInt(sha256(`${job.id}:${job.attempt}:${seed}:${purpose}`).slice(0, 8), 16) / 2 ** 32

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v)
function inputKind(data) {
  if (!isObject(data)) return 'unknown'
  if (isObject(data.output) && typeof data.output.commitment === 'string') return 'result'
  if (typeof data.hash === 'string' && data.output === undefined) return 'block'
  return 'unknown'
}

async function main() {
  const args = parseArgs(process.argv.slice(2))
  let doc
  try {
    doc = JSON.parse(args.inputPath !== undefined ? readFileSync(args.inputPath, 'utf8') : readFileSync(0, 'utf8'))
  } catch (err) {
    die(EXIT_USAGE, `cannot read the input document: ${err.message}`)
  }
  if (doc?.protocol !== 'proofline.executor/v1' || !isObject(doc.job) || !Array.isArray(doc.inputs)) {
    die(EXIT_USAGE, 'input is not a proofline.executor/v1 document')
  }
  const { job, inputs } = doc
  log(`job ${job.id} attempt ${job.attempt}: ${inputs.length} input(s), blocks ${job.first}-${job.last}`)

  const cost = inputs.reduce((sum, i) => sum + (typeof i?.data?.cost === 'number' ? i.data.cost : 0), 0)
  if (args.tooBigAbove !== undefined && inputs.length > 1 && cost > args.tooBigAbove) {
    die(EXIT_TOO_BIG, `cost ${cost} is above ${args.tooBigAbove}: split the job`)
  }

  const kinds = new Set(inputs.map((i) => inputKind(i?.data)))
  if (inputs.length === 0) die(EXIT_UNPROVABLE, 'the job has no inputs')
  if (kinds.has('unknown')) die(EXIT_UNPROVABLE, 'an input is neither a block (data.hash) nor a stage result (data.output.commitment)')
  if (kinds.size > 1) die(EXIT_UNPROVABLE, 'the job mixes blocks and stage results')
  let values
  if (kinds.has('block')) {
    for (let n = 1; n < inputs.length; n++) {
      const prev = inputs[n - 1].data
      const cur = inputs[n].data
      if (cur.parentHash !== prev.hash) die(EXIT_UNPROVABLE, `block ${cur.hash} does not extend ${prev.hash} (parentHash ${cur.parentHash})`)
    }
    values = inputs.map((i) => i.data.hash)
  } else {
    values = inputs.map((i) => i.data.output.commitment)
  }

  if (args.latency !== undefined) {
    const ms = Math.round(args.latency.min + draw(job, args.seed, 'latency') * Math.max(0, args.latency.max - args.latency.min))
    log(`proving for ${ms} ms`)
    const started = Date.now()
    const progress = setInterval(() => log(`progress ${Math.min(99, Math.floor(((Date.now() - started) / ms) * 100))}%`), 1000)
    await new Promise((r) => setTimeout(r, ms))
    clearInterval(progress)
  }
  if (draw(job, args.seed, 'fail') < args.failRate) die(EXIT_TRANSIENT, 'injected transient failure')

  const statement = { program: job.programId, stage: job.stage, first: job.first, last: job.last, lastHash: job.lastHash, inputs: values }
  let commitment = sha256(canonicalJson(statement))
  if (draw(job, args.seed, 'hostile') < args.hostileRate) {
    log('HOSTILE: writing a wrong commitment')
    commitment = sha256(`hostile:${commitment}`)
  }
  const out = JSON.stringify({ output: { commitment, first: job.first, last: job.last, lastHash: job.lastHash, program: job.programId } })
  if (args.outputPath !== undefined) writeFileSync(args.outputPath, out)
  else process.stdout.write(out)
  log(`done: commitment ${commitment}`)
}

main().catch((err) => die(EXIT_TRANSIENT, `unexpected error: ${err?.stack ?? err}`))
