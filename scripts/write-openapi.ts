// Writes docs/openapi.json from src/api/openapi.ts (the document GET /openapi.json serves).
// Run after changing the API: npx tsx scripts/write-openapi.ts
import { writeFile } from 'node:fs/promises'
import { openApiDocument } from '../src/api/openapi.js'

await writeFile(new URL('../docs/openapi.json', import.meta.url), `${JSON.stringify(openApiDocument(), null, 2)}\n`)
