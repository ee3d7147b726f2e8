import type { Hex } from 'viem'

/**
 * The zkVM abstraction (ports). A **Program** is what a proof is a proof of, identified by
 * its verification-key hash. It has two halves:
 *
 * - its **Guest**: the code that runs inside the proof system and commits the public values
 *   (for the built-in backend a Noir circuit; for SP1 / RISC Zero an ELF);
 * - its **Host**: what runs outside — setup (compile, keys), and turning the pipeline's
 *   artifacts (block traces, inner proofs) into the guest's input.
 *
 * A **Backend** proves, verifies and aggregates for its programs; executors call it. Every
 * proof of a pipeline commits to the same kind of statement, {@link PublicValues}, whatever
 * backend made it, so stages and the proposer never look inside a backend.
 */

/** The statement a range or aggregate proof commits to (the OutputOracle's transition). */
export interface PublicValues {
  /** Output root the proven blocks start from (of block `firstBlock - 1`). */
  previousOutputRoot: Hex
  /** Output root of block `lastBlock`. */
  outputRoot: Hex
  firstBlock: number
  lastBlock: number
  /** The L2 chain configuration the proof is for. */
  chainConfigHash: Hex
}

/** What identifies a program and what its circuit costs. */
export interface ProgramInfo {
  /** `range`, `aggregate`, … */
  name: string
  /** Hash of the verification key: the program's identity. */
  vkHash: Hex
  /** Gates (or cycles, for a zkVM) of one proof, and the proving size (log2). */
  gates: number
  log2Size: number
  /** Items one proof covers at most: blocks per range, inner proofs per aggregate. */
  capacity: number
}

/** A proof and the statement it proves. */
export interface Proof {
  /** The program's name and vkey hash. */
  program: string
  vkHash: Hex
  /** The proof bytes, as the proof system wrote them. */
  bytes: Uint8Array
  /** The public inputs as field elements (32-byte words), in the circuit's order. */
  publicInputs: Hex[]
  publicValues: PublicValues
}

/**
 * How a proof was checked. `full`: the proof system's complete verifier accepted it (for an
 * aggregate, the on-chain verifier run in an in-process EVM). `deferred`: everything but the
 * final pairing was checked; the pairing is checked when the aggregate that contains it
 * verifies (a development CRS: see docs/proving.md).
 */
export type VerifyOutcome =
  | { ok: true; method: string; strength: 'full' | 'deferred'; durationMs: number }
  | { ok: false; method: string; reason: string; durationMs: number }

/** What a job will cost to prove, before proving it. */
export interface CostEstimate {
  program: string
  /** Circuit gates of the proof (fixed per program: unused slots are padded). */
  gates: number
  /** Slots the job fills, and the circuit's slots. */
  used: number
  capacity: number
  /** Share of the circuit spent on padding: 1 - used / capacity. */
  waste: number
  /** Peak memory expected, bytes (measured ranges; a planning figure). */
  memoryBytes: number
}

/** The guest half of a program: the code inside the proof system. */
export interface Guest {
  /** Where its source lives (for the built-in backend, a Noir package folder). */
  readonly source: string
  /** Public inputs it commits, in order (names), for documentation and decoding. */
  readonly publicInputs: readonly string[]
}

/** The host half of a program: setup and input preparation. */
export interface Host<Input, Prepared> {
  /** Compiles the guest and derives its keys (cached); idempotent. */
  setup(opts?: { signal?: AbortSignal }): Promise<ProgramInfo>
  /**
   * Turns artifacts into the guest's input and the statement the proof must end up with.
   * Never checks what the guest proves: a bad input must fail inside the proof system.
   */
  prepare(input: Input, opts?: { signal?: AbortSignal }): Promise<Prepared>
}

/** A program: its guest, its host, and its identity once set up. */
export interface Program<Input, Prepared> {
  readonly name: string
  readonly guest: Guest
  readonly host: Host<Input, Prepared>
}

/** Progress of a long operation (setup, proving), for heartbeats and logs. */
export type OnProgress = (message: string) => void

/**
 * A proving backend. Executors call it; `src/wiring.ts` picks it from config.
 *
 * - `setup` makes every program ready (compile, CRS, keys); safe to call again.
 * - `prove` proves one range of blocks; throws `ExecutorError('unprovable')` when the guest
 *   rejects the input (e.g. a broken header chain), `ExecutorError('too-big')` when the range
 *   exceeds the program's capacity.
 * - `aggregate` proves that K inner proofs verify and chain; fewer than K inner proofs are
 *   allowed (the tail of a run): unused slots repeat the last proof.
 * - `verify` checks a proof and says how (see {@link VerifyOutcome}).
 * - `estimateCost` prices a job before it runs (for capacity-aware collectors and routing).
 */
export interface Backend<RangeInput = unknown> {
  readonly name: string
  setup(opts?: { signal?: AbortSignal; onProgress?: OnProgress }): Promise<ProgramInfo[]>
  prove(input: RangeInput, opts?: { signal?: AbortSignal; onProgress?: OnProgress }): Promise<Proof>
  aggregate(inner: Proof[], opts?: { signal?: AbortSignal; onProgress?: OnProgress }): Promise<Proof>
  verify(proof: Proof, opts?: { signal?: AbortSignal }): Promise<VerifyOutcome>
  estimateCost(job: { program: string; items: number }): CostEstimate
  close(): Promise<void>
}
