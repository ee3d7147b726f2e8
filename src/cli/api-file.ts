import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { ResolvedConfig } from '../config/load.js'

/** Written to `<dataDir>/api.json` while an orchestrator runs, so other commands find it. */
export interface ApiFile {
  url: string
  token: string
  pid: number
  startedAt: number
}

/** Where the running orchestrator's API location is written. */
export function apiFilePath(config: ResolvedConfig): string {
  return join(config.dataDir, 'api.json')
}

/** Reads the running orchestrator's API location, if any. */
export async function readApiFile(config: ResolvedConfig): Promise<ApiFile | undefined> {
  try {
    return JSON.parse(await readFile(apiFilePath(config), 'utf8')) as ApiFile
  } catch {
    return undefined
  }
}

