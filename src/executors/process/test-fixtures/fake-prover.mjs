#!/usr/bin/env node
// A scriptable stand-in for a prover binary, used by process-executor.test.ts.
// Usage: fake-prover.mjs --mode MODE [--pid-file F] [--ms N] [--ignore-term] [--term-file F]
//        [--input-path IN --output-path OUT]   (absent: stdin/stdout)
import { spawn } from 'node:child_process'
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs'

const argv = process.argv.slice(2)
const flag = (name) => {
  const i = argv.indexOf(name)
  return i === -1 ? undefined : argv[i + 1]
}
const mode = flag('--mode') ?? 'echo'
const inputPath = flag('--input-path')
const outputPath = flag('--output-path')
const pidFile = flag('--pid-file')
const ms = Number(flag('--ms') ?? '0')
const termFile = flag('--term-file')
if (termFile !== undefined) {
  process.on('SIGTERM', () => {
    appendFileSync(termFile, 'child\n')
    // Clean up for a moment, as a real prover would; its children got the same SIGTERM.
    setTimeout(() => process.exit(143), 300)
  })
}
if (argv.includes('--ignore-term')) process.on('SIGTERM', () => process.stderr.write('fake-prover: ignoring SIGTERM\n'))

const readInput = () => (inputPath !== undefined ? readFileSync(inputPath, 'utf8') : readFileSync(0, 'utf8'))
const writeOutput = (text) => (outputPath !== undefined ? writeFileSync(outputPath, text) : process.stdout.write(text))
const sleepForever = () => setInterval(() => undefined, 60_000)

// A node child that sleeps; `detached` puts it in a new session (it leaves our process group).
const spawnSleeper = (detached) => {
  const onTerm = argv.includes('--ignore-term')
    ? "process.on('SIGTERM', () => {});"
    : termFile !== undefined
      ? `process.on('SIGTERM', () => { require('node:fs').appendFileSync(${JSON.stringify(termFile)}, 'grandchild\\n'); process.exit(143) });`
      : ''
  const args = ['-e', `${onTerm} setInterval(() => {}, 60000)`]
  const c = spawn(process.execPath, args, { stdio: 'ignore', detached })
  c.unref()
  return c.pid
}

const input = mode === 'no-read' ? null : readInput()
const doc = input === null ? null : JSON.parse(input)
process.stderr.write(`fake-prover: mode=${mode} job=${doc?.job?.id}\n`)

switch (mode) {
  case 'echo':
    writeOutput(JSON.stringify({ output: { echo: doc, env: { owner: process.env.PROOFLINE_OWNER, attempt: process.env.PROOFLINE_ATTEMPT } } }))
    break
  case 'proof':
    writeOutput(JSON.stringify({ output: { ok: true }, proof: { key: 'proofs/' + 'a'.repeat(64), sha256: 'a'.repeat(64), size: 12 } }))
    break
  case 'bad-proof':
    writeOutput(JSON.stringify({ output: { ok: true }, proof: { key: 'x', sha256: 'nothex', size: 1 } }))
    break
  case 'garbage':
    writeOutput('this is not json {')
    break
  case 'array':
    writeOutput('[1, 2, 3]')
    break
  case 'no-output-field':
    writeOutput(JSON.stringify({ result: {} }))
    break
  case 'no-output':
    break
  case 'exit':
    process.stderr.write(`fake-prover: exiting with ${ms}\n`)
    process.exit(ms)
    break
  case 'self-kill':
    process.kill(process.pid, 'SIGKILL')
    break
  case 'stderr-flood': {
    process.stderr.write('BEGIN-MARKER\n')
    for (let i = 0; i < 2000; i++) process.stderr.write(`line ${i} ${'x'.repeat(40)} é\n`)
    process.stderr.write('END-MARKER\n')
    writeOutput(JSON.stringify({ output: { ok: true } }))
    break
  }
  case 'slow':
    setTimeout(() => writeOutput(JSON.stringify({ output: { ok: true } })), ms)
    break
  case 'big-stdout':
    process.stdout.write('x'.repeat(ms))
    break
  case 'sleep':
  case 'spawn-sleep':
  case 'spawn-escapee': {
    const pids = [process.pid]
    if (mode === 'spawn-sleep') pids.push(spawnSleeper(false))
    if (mode === 'spawn-escapee') pids.push(spawnSleeper(true))
    if (pidFile !== undefined) writeFileSync(pidFile, pids.join(' '))
    sleepForever()
    break
  }
  default:
    process.stderr.write(`fake-prover: unknown mode ${mode}\n`)
    process.exit(2)
}
