import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { chmod, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type Browser, type Page } from 'playwright-core'
import { afterAll, describe, expect, it } from 'vitest'
import { startAnvil } from '../../src/chain/anvil.js'
import { BIN, ROOT } from '../support/cli.js'
import { GiveUp, until as pollUntil } from '../support/poll.js'

/**
 * The dashboard in a real browser: Debian's chromium driven by playwright-core (no browser
 * download), against `proofline up` on dev chains. Without chromium this test FAILS (it never
 * skips): install it with `apt-get install -y chromium`.
 */
const CHROMIUM = '/usr/bin/chromium'
const INSTALL_LINE = 'apt-get install -y chromium'
const OUT = join(ROOT, 'test-output')

const cleanups: (() => Promise<void>)[] = []
afterAll(async () => {
  for (const c of cleanups.reverse()) {
    try {
      await c()
    } catch {
      // best effort: the next cleanup still runs
    }
  }
})

/** The page's own refreshes are slower than a run's steps: wait up to 2 minutes, every 250 ms. */
const until = <T>(what: string, fn: () => Promise<T | undefined>, ms = 120_000): Promise<T> => pollUntil(what, fn, ms, 250)

interface RangeRow {
  range: string
  progress: number
  cells: Record<string, string>
}

/** The ranges table as the page shows it (read in the page; the tests compile without DOM types). */
function rangeRows(page: Page): Promise<RangeRow[]> {
  return page.evaluate<RangeRow[]>(`[...document.querySelectorAll('#ranges tbody tr[data-range]')].map((r) => ({
    range: r.dataset.range,
    progress: Number(r.dataset.progress),
    cells: Object.fromEntries([...r.querySelectorAll('td[data-cell]')].map((td) => [td.dataset.cell, td.textContent.trim()])),
  }))`)
}

/** The block timeline's bars: lane, block range and state. */
function timelineBars(page: Page): Promise<{ lane: string; range: string; state: string }[]> {
  return page.evaluate<{ lane: string; range: string; state: string }[]>(
    `[...document.querySelectorAll('#timeline rect[data-lane]')].map((r) => ({ lane: r.dataset.lane, range: r.dataset.range, state: r.dataset.state }))`,
  )
}

/** A number the page shows as a data attribute (null when empty or absent). */
async function shown(page: Page, selector: string, attr: string): Promise<number | null> {
  const v = await page.locator(selector).first().getAttribute(attr, { timeout: 5_000 })
  return v === null || v === '' ? null : Number(v)
}

async function waitExit(child: ChildProcess, ms: number): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      child.kill('SIGKILL')
    }, ms)
    child.once('close', (code) => {
      clearTimeout(t)
      resolve(code)
    })
  })
}

describe('dashboard (headless chromium)', () => {
  it('behavior: `proofline up` prints the dashboard URL; the page shows a range moving seen → proven → aggregated → proposed; pausing a stage from the page with the token holds its jobs back, resuming releases them', { timeout: 480_000 }, async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`the dashboard browser test needs Debian's chromium at ${CHROMIUM}; install it with: ${INSTALL_LINE}`)
    }
    const l1 = await startAnvil({ chainId: 900 })
    cleanups.push(() => l1.stop())
    const l2 = await startAnvil({ chainId: 901 })
    cleanups.push(() => l2.stop())
    const dir = await mkdtemp(join(tmpdir(), 'pl-dash-'))
    await chmod(dir, 0o755) // the embedded Postgres runs as an unprivileged user
    cleanups.push(() => rm(dir, { recursive: true, force: true }))
    const dataDir = join(dir, 'up')
    await mkdir(OUT, { recursive: true })

    const child = spawn(process.execPath, [BIN, 'up', '--l1-rpc', l1.rpcUrl, '--l2-rpc', l2.rpcUrl, '--data-dir', dataDir, '--block-time-ms', '500', '--propose-every-ms', '1000', '--mock'], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stderr = ''
    let stdout = ''
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    cleanups.push(async () => {
      child.kill('SIGKILL')
      await waitExit(child, 1_000)
    })

    // The URL is printed at start-up, before any proposal.
    const dashboardUrl = await until('the dashboard URL on stderr', () => {
      if (child.exitCode !== null) throw new GiveUp(`up exited early (${child.exitCode}): ${stderr.slice(-2000)}`)
      return Promise.resolve(/dashboard (http:\/\/\S+\/dashboard\/)/.exec(stderr)?.[1])
    })
    const api = JSON.parse(await readFile(join(dataDir, 'api.json'), 'utf8')) as { url: string; token: string }
    expect(dashboardUrl).toBe(`${api.url}/dashboard/`)

    const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, headless: true })
    cleanups.push(() => browser.close())
    const page = await browser.newPage({ viewport: { width: 1500, height: 1300 } })
    const pageErrors: string[] = []
    page.on('pageerror', (e) => pageErrors.push(e.message))
    await page.goto(dashboardUrl)
    await page.locator('#orchestrator', { hasText: 'running' }).waitFor({ timeout: 60_000 })
    expect(await page.locator('#name').textContent()).toBe('up')

    // -- a range moving through the stages ------------------------------------------------------
    // Follow the oldest range the page shows before it is proposed (the table lists the newest
    // first), until the page shows it proven (range succeeded), aggregated and proposed; note
    // every state it was shown in.
    const followed = await until('a range shown before it is proposed', async () => (await rangeRows(page)).filter((r) => r.progress < 3).pop())
    const seenStates = new Set<string>([JSON.stringify(followed.cells) + followed.progress])
    const progressSeen = new Set<number>([followed.progress])
    const done = await until(`range ${followed.range} shown proposed`, async () => {
      const row = (await rangeRows(page)).find((r) => r.range === followed.range)
      if (!row) return undefined
      progressSeen.add(row.progress)
      seenStates.add(JSON.stringify(row.cells) + row.progress)
      return row.progress === 3 ? row : undefined
    })
    expect(progressSeen.size, `states shown: ${[...seenStates].join(' / ')}`).toBeGreaterThanOrEqual(2)
    expect(done.cells).toEqual({ range: 'succeeded', aggregate: 'succeeded' })
    const [first, last] = followed.range.split('-').map(Number) as [number, number]
    // The block timeline has every lane, and the followed range's blocks in each of them.
    const lanes = await timelineBars(page)
    const covers = (lane: string): boolean => {
      const bars = lanes.filter((l) => l.lane === lane).map((l) => l.range.split('-').map(Number) as [number, number])
      for (let n = first; n <= last; n++) if (!bars.some(([a, b]) => a <= n && b >= n)) return false
      return true
    }
    for (const lane of ['seen', 'range', 'aggregate', 'proposed']) expect(covers(lane), `timeline lane ${lane} covers ${followed.range}`).toBe(true)
    // The heights panel refreshes on its own poll: it reaches the proposal in its next update.
    await until(`proposed height shown at ${last} or more`, async () =>
      Number(await page.locator('[data-height="proposed"]').getAttribute('data-value')) >= last ? true : undefined,
    )

    // -- admin from the page -----------------------------------------------------------------------
    const pauseAggregate = page.locator('button[data-action="pause"][data-stage="aggregate"]')
    expect(await pauseAggregate.isDisabled()).toBe(true) // read-only until a token is given
    // A wrong token is refused with 401 and changes nothing.
    await page.fill('#token', 'not-the-token-0123456789')
    await page.click('#token-save')
    await pauseAggregate.click()
    await page.locator('#admin-result', { hasText: 'refused (401)' }).waitFor({ timeout: 15_000 })
    expect(await page.locator('g[data-stage="aggregate"]').getAttribute('data-paused')).toBe('false')

    await page.fill('#token', api.token)
    await page.click('#token-save')
    await page.locator('#token-state', { hasText: 'admin actions enabled' }).waitFor()
    await pauseAggregate.click()
    await page.locator('#admin-result', { hasText: 'pause aggregate: done' }).waitFor({ timeout: 15_000 })
    await page.locator('g[data-stage="aggregate"][data-paused="true"] [data-paused-label]').waitFor({ timeout: 15_000 })
    await page.locator('button[data-action="resume"][data-stage="aggregate"]').waitFor()
    await page.screenshot({ path: join(OUT, 'dashboard-paused.png'), fullPage: true })

    // Paused: ranges keep being proven, the aggregate stage takes no job. Attempts already
    // running when it was paused finish; wait until the range stage is well past that.
    const rangeAtPause = (await shown(page, 'g[data-stage="range"]', 'data-covered')) ?? 0
    await until('the range stage 16 blocks further', async () => ((await shown(page, 'g[data-stage="range"]', 'data-covered')) ?? 0) >= rangeAtPause + 16 || undefined)
    const aggHeld = await shown(page, 'g[data-stage="aggregate"]', 'data-covered')
    const rangeMark = (await shown(page, 'g[data-stage="range"]', 'data-covered')) ?? 0
    await until('the range stage 12 blocks further again', async () => ((await shown(page, 'g[data-stage="range"]', 'data-covered')) ?? 0) >= rangeMark + 12 || undefined)
    expect(await shown(page, 'g[data-stage="aggregate"]', 'data-covered')).toBe(aggHeld)
    expect(await shown(page, 'g[data-stage="aggregate"]', 'data-running')).toBe(0)
    await until('aggregate jobs queued behind the pause', async () => ((await shown(page, 'g[data-stage="aggregate"]', 'data-queued')) ?? 0) > 0 || undefined)
    const status = (await (await fetch(`${api.url}/status`)).json()) as { paused: string[] }
    expect(status.paused).toEqual(['aggregate'])

    // Resume from the page: the held jobs run and the stage moves on.
    await page.locator('button[data-action="resume"][data-stage="aggregate"]').click()
    await page.locator('#admin-result', { hasText: 'resume aggregate: done' }).waitFor({ timeout: 15_000 })
    await until('the aggregate stage past where it was held', async () => ((await shown(page, 'g[data-stage="aggregate"]', 'data-covered')) ?? -1) > (aggHeld ?? -1) || undefined)
    expect(await page.locator('g[data-stage="aggregate"]').getAttribute('data-paused')).toBe('false')

    await page.screenshot({ path: join(OUT, 'dashboard.png'), fullPage: true })
    expect(pageErrors).toEqual([])

    // Ctrl-C: up stops cleanly and prints its summary.
    child.kill('SIGINT')
    expect(await waitExit(child, 120_000), stderr.slice(-2000)).toBe(0)
    const summary = JSON.parse(stdout) as { proposals: unknown[] }
    expect(summary.proposals.length).toBeGreaterThan(0)
  })
})
