export type { ArtifactStore } from './types.js'
export { DEFAULT_ARTIFACT_PREFIX, SHA256_HEX, artifactKey, checkKey, checkPrefix, checkRef } from './keys.js'
export { type FsArtifactsOptions, fsArtifacts } from './fs/fs-artifacts.js'
// The conformance suite imports vitest; import it from './conformance.js' in tests only.
