// Runs a processExecutor attempt on a prover that sleeps (with a grandchild) and never returns.
// The reapOrphans test SIGKILLs this process to leave the prover orphaned.
// Run with: node --import tsx run-executor.mjs OWNER_TAG PID_FILE WORK_DIR
import { fileURLToPath } from 'node:url'
import { processExecutor } from '../process-executor.ts'

const [ownerTag, pidFile, workDir] = process.argv.slice(2)
const fakeProver = fileURLToPath(new URL('./fake-prover.mjs', import.meta.url))
const executor = processExecutor({
  command: [process.execPath, fakeProver, '--mode', 'spawn-sleep', '--pid-file', pidFile],
  timeoutMs: 600_000,
  workDir,
  ownerTag,
})
const job = { id: 'range:1-1:orphan', stage: 'range', attempt: 1, first: 1, last: 1, lastHash: '0x01', programId: 'mock-v1' }
await executor.execute({ job, inputs: [], signal: new AbortController().signal })
