import type { FailureClass } from '../../core/errors.js'

/** A zkVM family; picks the stderr patterns an unmodified host's failures are recognised by. */
export type ZkvmKind = 'sp1' | 'risc0' | 'custom'

/** A stderr pattern (a case-insensitive regular expression) and the failure class it means. */
export interface ErrorPattern {
  match: string
  class: FailureClass
}

/** Any host: an ELF the VM cannot load can never be proven with this config (dead-letter, alert). */
const BAD_ELF: ErrorPattern = {
  match: String.raw`(invalid|malformed|bad|corrupt)[^\n]{0,40}\belf\b|\belf\b[^\n]{0,40}(magic|header|parse|decode)|not an? elf`,
  class: 'unprovable',
}

/**
 * Recognised failures of unmodified hosts, checked on a non-zero exit after the config's own
 * `errorPatterns` and `exitCodes`. Rust hosts usually `unwrap()` the prover's error, so they
 * exit 101 (a panic) or 1 (`main` returned `Err`) with the error text on stderr; the text, not
 * the code, says what happened. The texts are those of SP1's `ExecutionError` (sp1-core-executor:
 * "exceeded cycle limit of N", "execution failed with exit code N") and RISC Zero's executor
 * ("Session limit exceeded", "Guest panicked: …"); check them against your host's stderr.
 *
 * A guest that fails (non-zero exit, panic) on an input fails on it every time: `unprovable`.
 * If your host builds the guest's input from RPC nodes that can serve bad data, map that text
 * to `transient` in `errorPatterns` (checked first).
 */
export const VM_ERROR_PATTERNS: Readonly<Record<ZkvmKind, readonly ErrorPattern[]>> = {
  sp1: [
    { match: String.raw`exceeded cycle limit|ExceededCycleLimit`, class: 'too-big' },
    { match: String.raw`execution failed with exit code [1-9]|HaltWithNonZeroExitCode`, class: 'unprovable' },
    BAD_ELF,
  ],
  risc0: [
    { match: String.raw`session limit exceeded`, class: 'too-big' },
    { match: String.raw`guest panicked`, class: 'unprovable' },
    BAD_ELF,
  ],
  custom: [BAD_ELF],
}
