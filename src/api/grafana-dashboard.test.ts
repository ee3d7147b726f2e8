import { readFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { parseConfig } from '../config/load.js'
import { pipelineMetrics } from './metrics.js'

const DASHBOARD = new URL('../../deploy/grafana/proofline-dashboard.json', import.meta.url)

interface Panel {
  type: string
  title: string
  targets?: { expr: string }[]
}

describe('deploy/grafana/proofline-dashboard.json', () => {
  it('behavior: every metric a panel queries is one the orchestrator exports, and every exported pipeline metric has a panel', async () => {
    const dashboard = JSON.parse(await readFile(DASHBOARD, 'utf8')) as { panels: Panel[]; templating: { list: { name: string }[] } }
    const config = parseConfig(
      `version: 1
source: { type: synthetic, startBlock: 1 }
stages:
  - { name: range, input: blocks, collector: { strategy: sequential, maxCount: 4 }, executor: { type: mock } }
`,
      '/tmp/grafana-test.yaml',
    )
    const metrics = pipelineMetrics({ config, defaultMetrics: false })
    const exported = new Map((await metrics.registry.getMetricsAsJSON()).map((m) => [m.name, String(m.type)]))
    const queried = new Set<string>()
    for (const p of dashboard.panels) {
      for (const t of p.targets ?? []) {
        const names = t.expr.match(/proofline_[a-z0-9_]+/g) ?? []
        expect(names.length, `${p.title}: ${t.expr}`).toBeGreaterThan(0)
        for (const raw of names) {
          const base = raw.replace(/_(bucket|count|sum)$/, '')
          const name = exported.has(raw) ? raw : base
          expect(exported.has(name), `panel "${p.title}" queries ${raw}, which is not exported`).toBe(true)
          if (raw !== name) expect(exported.get(name)).toBe('histogram')
          queried.add(name)
        }
      }
    }
    const unshown = [...exported.keys()].filter((n) => !queried.has(n))
    expect(unshown).toEqual([])
    expect(dashboard.templating.list.map((v) => v.name)).toEqual(['datasource', 'stage'])
  })
})
