#!/usr/bin/env node
// zkvm-host-standin.mjs — a STAND-IN for a zkVM host binary (SP1 or RISC Zero), for
// development and the adapter's conformance test (docs/zkvm.md). It behaves like such a host at
// its interface — command line, input file, output files, exit codes and error texts — and
// proves nothing: its "proof" is a hash, its "program" is the mock statement of
// src/backends/mock/mock-proof.ts. Standalone on purpose (no project imports).
//
// Usage:
//   zkvm-host-standin.mjs --vm sp1|risc0 --elf PROGRAM.elf --input INPUT.json --out-dir DIR
//                         [--cycle-limit N] [--crash segv|panic]
//   zkvm-host-standin.mjs --vm sp1|risc0 --elf PROGRAM.elf --print-vkey
//
// The "guest" reads INPUT.json = { program, stage, first, last, last_hash, commitments[],
// parent_hashes[]?, gas[]? }, checks that blocks chain (parent_hashes[i] == commitments[i-1]),
// counts cycles = 1e6 + Σ gas, and commits public values
//   abi.encode(bytes32 commitment, uint64 first, uint64 last, bytes32 lastHash)
// where commitment = sha256(canonical JSON of { program, stage, first, last, lastHash, inputs }).
// The vkey is sha256("<vm>-vk:" ‖ ELF bytes).
//
// Outputs (in --out-dir), like the two hosts it imitates:
//   sp1:   output.json { proof: 0x…, public_values: 0x…, vkey: 0x…, cycles }
//   risc0: receipt.bin, journal.bin (the public values), image_id.txt
// Failures, with the texts the real zkVMs print (exit 101 = Rust panic, 1 = main returned Err):
//   bad ELF                 sp1: "Error: failed to decode elf: invalid ELF magic" (1)   risc0: "Error: Could not parse ELF: bad magic" (1)
//   cycles over the limit   sp1: panic "…ExecutionError: exceeded cycle limit of N" (101)  risc0: "Error: Session limit exceeded" (1)
//   broken block chain      sp1: panic "…HaltWithNonZeroExitCode(1)" (101)             risc0: "Error: Guest panicked: …" (1)
//   --crash panic           panic "index out of bounds" (101);  --crash segv: killed by SIGSEGV
import { createHash } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'

const { values: args } = parseArgs({
  options: {
    vm: { type: 'string' },
    elf: { type: 'string' },
    input: { type: 'string' },
    'out-dir': { type: 'string' },
    'cycle-limit': { type: 'string' },
    crash: { type: 'string' },
    'print-vkey': { type: 'boolean', default: false },
  },
})
const vm = args.vm
const log = (line) => process.stderr.write(`${line}\n`)
const fail = (code, text) => {
  log(text)
  process.exit(code)
}
const panic = (what) => fail(101, `thread 'main' panicked at script/src/bin/host.rs:88:10:\n${what}\nnote: run with \`RUST_BACKTRACE=1\` environment variable to display a backtrace`)
if (vm !== 'sp1' && vm !== 'risc0') fail(2, 'error: --vm must be sp1 or risc0')
if (args.elf === undefined) fail(2, 'error: --elf is required')

const sha256 = (data) => createHash('sha256').update(data).digest()
let elf
try {
  elf = readFileSync(args.elf)
} catch (err) {
  fail(1, `Error: could not read ${args.elf}: ${err.code}`)
}
if (elf.length < 4 || elf[0] !== 0x7f || elf.subarray(1, 4).toString('latin1') !== 'ELF') {
  fail(1, vm === 'sp1' ? 'Error: failed to decode elf: invalid ELF magic' : 'Error: Could not parse ELF: bad magic')
}
const vkey = sha256(Buffer.concat([Buffer.from(`${vm}-vk:`), elf])).toString('hex')
if (args['print-vkey']) {
  process.stdout.write(`${vm === 'sp1' ? '0x' : ''}${vkey}\n`)
  process.exit(0)
}
if (args.input === undefined || args['out-dir'] === undefined) fail(2, 'error: --input and --out-dir are required')

if (args.crash === 'segv') process.kill(process.pid, 'SIGSEGV')
if (args.crash === 'panic') panic('index out of bounds: the len is 3 but the index is 7')

const input = JSON.parse(readFileSync(args.input, 'utf8'))
log(`${vm === 'sp1' ? 'INFO sp1_sdk' : 'INFO risc0_zkvm'}: executing program ${vkey.slice(0, 16)}… for blocks ${input.first}-${input.last}`)

// The "guest".
const commitments = input.commitments ?? []
const parents = input.parent_hashes
if (Array.isArray(parents)) {
  for (let i = 1; i < commitments.length; i++) {
    if (parents[i] !== commitments[i - 1]) {
      const why = `block ${commitments[i]} does not extend ${commitments[i - 1]}`
      if (vm === 'sp1') panic(`called \`Result::unwrap()\` on an \`Err\` value: HaltWithNonZeroExitCode(1)\nguest: ${why}`)
      fail(1, `Error: Guest panicked: ${why}`)
    }
  }
}
const cycles = 1_000_000 + (input.gas ?? []).reduce((a, b) => a + Number(b), 0)
const limit = args['cycle-limit'] === undefined ? Infinity : Number(args['cycle-limit'])
if (cycles > limit) {
  if (vm === 'sp1') panic(`called \`Result::unwrap()\` on an \`Err\` value: ExecutionError: exceeded cycle limit of ${limit}`)
  fail(1, 'Error: Session limit exceeded')
}
const canonical = (v) => {
  const sort = (x) => {
    if (Array.isArray(x)) return x.map(sort)
    if (x !== null && typeof x === 'object') return Object.fromEntries(Object.keys(x).sort().map((k) => [k, sort(x[k])]))
    return x
  }
  return JSON.stringify(sort(v))
}
const statement = { program: input.program, stage: input.stage, first: input.first, last: input.last, lastHash: input.last_hash, inputs: commitments }
const commitment = sha256(canonical(statement)).toString('hex')
const word = (hex) => Buffer.from(hex.replace(/^0x/, '').padStart(64, '0'), 'hex')
const uint = (n) => word(BigInt(n).toString(16))
const publicValues = Buffer.concat([word(commitment), uint(input.first), uint(input.last), word(input.last_hash)])
const proof = Buffer.concat([Buffer.from(`STANDIN-${vm}-PROOF:`), sha256(Buffer.concat([Buffer.from(vkey, 'hex'), publicValues]))])
log(`${vm === 'sp1' ? 'INFO sp1_sdk' : 'INFO risc0_zkvm'}: ${cycles} cycles, proof ${proof.length} bytes`)

const out = args['out-dir']
if (vm === 'sp1') {
  const hex = (b) => `0x${b.toString('hex')}`
  writeFileSync(join(out, 'output.json'), JSON.stringify({ proof: hex(proof), public_values: hex(publicValues), vkey: `0x${vkey}`, cycles }))
} else {
  writeFileSync(join(out, 'receipt.bin'), proof)
  writeFileSync(join(out, 'journal.bin'), publicValues)
  writeFileSync(join(out, 'image_id.txt'), `${vkey}\n`)
}
