export { type ExecuteRequest, type ExecuteResult, type Executor, type ExecutorObservation, DetachReason, isDetach } from './types.js'
export { type ProcessExecutorOptions, processExecutor } from './process/process-executor.js'
export {
  ATTEMPT_ENV,
  EXECUTOR_PROTOCOL,
  EXIT_SUCCESS,
  EXIT_TOO_BIG,
  EXIT_UNPROVABLE,
  OWNER_ENV,
  type ExecutorInputDocument,
  type ExecutorOutputDocument,
  inputDocument,
  parseOutputDocument,
} from './process/protocol.js'
export { reapOrphans } from './process/reap.js'
export { type MockExecutorOptions, hostileCommitment, mockDraw, mockExecutor, mockStatement } from './mock/mock-executor.js'
