/** Group commit lives in core (the state store uses it too); re-exported for the bus adapters. */
export { GroupCommit, type Rejectable } from '../core/group-commit.js'
