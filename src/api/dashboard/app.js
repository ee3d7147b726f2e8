// The proofline dashboard: plain JS, no build step. Polls the orchestrator's API every second
// and draws the pipeline, the block timeline, charts and failures; admin actions need the
// bearer token (kept in this tab's sessionStorage only).

const REFRESH_MS = 1000
const STATES = ['pending', 'running', 'retrying', 'failed', 'succeeded', 'dead', 'cancelled', 'split', 'invalidated']
const SERIES_COLORS = ['#3fb86b', '#3b82c4', '#e0a526', '#a371f7', '#e5534b', '#6b7bd6']
const $ = (sel) => document.querySelector(sel)
const esc = (v) => String(v ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c])
const fmt = (n, d = 0) => (n === null || n === undefined || Number.isNaN(n) ? '–' : Number(n).toLocaleString('en-US', { maximumFractionDigits: d }))
const ago = (ms) => {
  if (!ms) return '–'
  const s = Math.max(0, (Date.now() - ms) / 1000)
  return s < 60 ? `${s.toFixed(0)} s ago` : s < 3600 ? `${(s / 60).toFixed(0)} min ago` : `${(s / 3600).toFixed(1)} h ago`
}
const eth = (wei) => (wei === null || wei === undefined ? '–' : `${(Number(BigInt(wei) / 10n ** 12n) / 1e6).toFixed(6)} ETH`)
const stateChip = (s) => `<span class="state state-${esc(s)}">${esc(s)}</span>`

// -- admin ---------------------------------------------------------------------------------------
let token = sessionStorage.getItem('proofline-token') ?? ''
function showTokenState() {
  $('#token-state').textContent = token ? 'admin actions enabled' : 'read-only'
  for (const b of document.querySelectorAll('button[data-action]')) b.disabled = !token
}
$('#token').value = token
$('#token-form').addEventListener('submit', (e) => {
  e.preventDefault()
  token = $('#token').value.trim()
  if (token) sessionStorage.setItem('proofline-token', token)
  else sessionStorage.removeItem('proofline-token')
  showTokenState()
})

function say(text, ok) {
  const el = $('#admin-result')
  el.textContent = text
  el.className = ok ? 'ok' : 'err'
}

async function admin(path, label) {
  if (!token) return say('enter the admin token first (it is in <dataDir>/api.json)', false)
  try {
    const res = await fetch(path, { method: 'POST', headers: { authorization: `Bearer ${token}` } })
    const body = await res.json().catch(() => ({}))
    if (res.status === 401) return say(`${label}: refused (401) — wrong token`, false)
    if (!res.ok || body.ok === false) return say(`${label}: ${body.error ?? res.status}`, false)
    say(`${label}: done ${JSON.stringify(body)}`, true)
    await refresh()
  } catch (err) {
    say(`${label}: ${err}`, false)
  }
}

document.addEventListener('click', (e) => {
  const b = e.target.closest('button[data-action]')
  if (!b) return
  const { action, stage, job, worker } = b.dataset
  if (action === 'pause' || action === 'resume') void admin(`/stages/${encodeURIComponent(stage)}/${action}`, `${action} ${stage}`)
  else if (action === 'requeue' || action === 'cancel') void admin(`/jobs/${encodeURIComponent(job)}/${action}`, `${action} ${job}`)
  else if (action === 'drain' || action === 'undrain') void admin(`/workers/${encodeURIComponent(worker)}/${action}`, `${action} ${worker}`)
})

// -- drawing -------------------------------------------------------------------------------------
function renderHeights(p) {
  const b = p.blocks
  const items = [['L2 head', b.head], ['seen', b.seen]]
  for (const s of p.stages) items.push([`${s.name} covered`, s.coveredTo])
  if (p.proposer) items.push(['proposed', b.proposed])
  items.push(['lag', `${fmt(p.lag.blocks)} blk`], ['lag time', `${fmt(p.lag.seconds, 1)} s`])
  $('#heights').innerHTML = items.map(([k, v]) => `<div class="h" data-height="${esc(k)}" data-value="${v === null || v === undefined ? '' : esc(v)}"><span class="muted">${esc(k)}</span><b>${typeof v === 'string' ? esc(v) : fmt(v)}</b></div>`).join('')
}

/** The pipeline as a picture: source → (queue) → stage → … → proposer, workers under their stage. */
function renderPipeline(p) {
  const W = 230, H = 150, GAP = 110, PAD = 10
  const nodes = [{ kind: 'source', title: 'L2 source', lines: [`head ${fmt(p.blocks.head)}`, `seen ${fmt(p.blocks.seen)}`, `${fmt(p.blocks.seenCount)} blocks`] }]
  for (const s of p.stages) nodes.push({ kind: 'stage', stage: s })
  if (p.proposer) {
    const pr = p.proposer
    nodes.push({ kind: 'proposer', title: 'proposer → L1', lines: [`proposed ${fmt(p.blocks.proposed)}`, `${pr.confirmed} confirmed, ${pr.inFlight} in flight`, `${pr.refused} refused, ${pr.rejected} rejected`, `balance ${eth(pr.balanceWei)}`, `fees ${eth(pr.feesWei)}`] })
  }
  const workersBy = new Map()
  for (const w of p.workers) {
    if (!workersBy.has(w.stage)) workersBy.set(w.stage, [])
    workersBy.get(w.stage).push(w)
  }
  const maxWorkers = Math.max(0, ...[...workersBy.values()].map((l) => l.length))
  const height = PAD * 2 + H + 30 + maxWorkers * 24
  const width = PAD * 2 + nodes.length * W + (nodes.length - 1) * GAP
  let svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" role="img" aria-label="pipeline">`
  svg += '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0L10,5L0,10z" fill="#7d8a97"/></marker></defs>'
  nodes.forEach((n, i) => {
    const x = PAD + i * (W + GAP)
    const y = PAD
    if (i > 0) {
      // The queue between two nodes: inputs buffered in the collector, then jobs waiting for a worker.
      const ax = x - GAP + 6, bx = x - 6, my = y + H / 2
      svg += `<line x1="${ax}" y1="${my}" x2="${bx}" y2="${my}" stroke="#7d8a97" stroke-width="2" marker-end="url(#arrow)"/>`
      if (n.kind === 'stage') {
        const s = n.stage
        svg += `<text x="${ax + 4}" y="${my - 26}" class="muted">${esc(s.input)}</text>`
        svg += `<text x="${ax + 4}" y="${my - 10}" data-queue="${esc(s.name)}">${fmt(s.openInputs)} in · ${fmt(s.queued)} queued</text>`
        const boxes = Math.min(10, s.queued)
        for (let k = 0; k < boxes; k++) svg += `<rect x="${ax + 4 + k * 9}" y="${my + 8}" width="7" height="12" fill="var(--pending)"/>`
        if (s.oldestPendingAgeMs !== null) svg += `<text x="${ax + 4}" y="${my + 36}" class="muted">oldest ${fmt(s.oldestPendingAgeMs / 1000, 1)} s</text>`
      }
    }
    if (n.kind === 'stage') {
      const s = n.stage
      const total = STATES.reduce((sum, st) => sum + (s.jobs[st] ?? 0), 0)
      const border = s.paused ? 'var(--retrying)' : '#2a333d'
      svg += `<g data-stage="${esc(s.name)}" data-paused="${s.paused}" data-queued="${s.queued}" data-running="${s.jobs.running ?? 0}" data-covered="${s.coveredTo ?? ''}"><rect x="${x}" y="${y}" width="${W}" height="${H}" rx="8" fill="#0f1419" stroke="${border}" stroke-width="${s.paused ? 3 : 1}"/>`
      svg += `<text x="${x + 10}" y="${y + 20}" font-weight="bold">${esc(s.name)}</text><text x="${x + W - 10}" y="${y + 20}" text-anchor="end" class="muted">${esc(s.executor)}${s.inProcess ? '' : ' (workers)'}</text>`
      if (s.paused) svg += `<text x="${x + 10}" y="${y + 38}" fill="var(--retrying)" font-weight="bold" data-paused-label>PAUSED</text>`
      // A stacked bar of the stage's jobs by state.
      let bx = x + 10
      for (const st of STATES) {
        const c = s.jobs[st] ?? 0
        if (!c || !total) continue
        const w = Math.max(2, ((W - 20) * c) / total)
        svg += `<rect x="${bx}" y="${y + 46}" width="${w}" height="12" fill="var(--${st})"><title>${st}: ${c}</title></rect>`
        bx += w
      }
      const running = s.jobs.running ?? 0, pending = (s.jobs.pending ?? 0) + (s.jobs.retrying ?? 0)
      svg += `<text x="${x + 10}" y="${y + 78}">${fmt(running)} running · ${fmt(pending)} waiting · ${fmt(s.jobs.succeeded ?? 0)} done</text>`
      svg += `<text x="${x + 10}" y="${y + 96}">failed ${fmt(s.jobs.failed ?? 0)} · dead ${fmt(s.jobs.dead ?? 0)}</text>`
      svg += `<text x="${x + 10}" y="${y + 114}">covered to ${fmt(s.coveredTo)} · lag ${fmt(s.lagBlocks)} blk</text>`
      svg += `<text x="${x + 10}" y="${y + 132}" class="muted">fill ${s.utilization === null ? '–' : `${fmt(s.utilization * 100, 1)} %`} · lag ${fmt(s.lagSeconds, 1)} s</text></g>`
      const ws = workersBy.get(s.name) ?? []
      ws.forEach((w, k) => {
        const wy = y + H + 10 + k * 24
        const color = w.state === 'running' ? 'var(--succeeded)' : w.state === 'gone' || w.state === 'stopped' ? 'var(--cancelled)' : 'var(--retrying)'
        svg += `<g data-worker="${esc(w.workerId)}"><rect x="${x}" y="${wy}" width="${W}" height="20" rx="4" fill="#171d24" stroke="${color}"/>`
        svg += `<text x="${x + 6}" y="${wy + 14}">${esc(w.workerId.length > 22 ? `…${w.workerId.slice(-21)}` : w.workerId)}</text>`
        svg += `<text x="${x + W - 6}" y="${wy + 14}" text-anchor="end" class="muted">${esc(w.state)} · ${w.running.length}/${w.concurrency}</text></g>`
      })
    } else {
      svg += `<g data-node="${n.kind}"><rect x="${x}" y="${y}" width="${W}" height="${H}" rx="8" fill="#0f1419" stroke="#2a333d"/>`
      svg += `<text x="${x + 10}" y="${y + 20}" font-weight="bold">${esc(n.title)}</text>`
      n.lines.forEach((l, k) => (svg += `<text x="${x + 10}" y="${y + 44 + k * 18}">${esc(l)}</text>`))
      svg += '</g>'
    }
  })
  svg += '</svg>'
  let controls = '<div class="stage-controls">'
  for (const s of p.stages) {
    controls += `<span data-stage-controls="${esc(s.name)}">${esc(s.name)}: ${s.paused ? '<b>paused</b>' : 'running'} `
    controls += s.paused
      ? `<button data-action="resume" data-stage="${esc(s.name)}">resume ${esc(s.name)}</button>`
      : `<button data-action="pause" data-stage="${esc(s.name)}">pause ${esc(s.name)}</button>`
    controls += '</span> &nbsp; '
  }
  controls += '</div>'
  $('#pipeline').innerHTML = svg + controls
}

/** Lanes of bars over block numbers: seen, each stage's jobs (colored by state), proposals. */
function renderTimeline(t, p) {
  const LW = 90, ROW = 26, width = Math.max(600, $('#timeline').clientWidth - 10)
  const span = Math.max(1, t.to - t.from + 1)
  const px = (n) => LW + ((n - t.from) / span) * (width - LW - 10)
  const height = t.lanes.length * ROW + 24
  let svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" role="img" aria-label="block timeline">`
  t.lanes.forEach((lane, i) => {
    const y = i * ROW + 4
    svg += `<text x="4" y="${y + 15}">${esc(lane.name)}</text>`
    for (const it of lane.items) {
      const x0 = px(Math.max(it.first, t.from)), x1 = px(Math.min(it.last, t.to) + 1)
      const color = lane.name === 'seen' ? 'var(--seen)' : lane.name === 'proposed' ? 'var(--proposed)' : `var(--${it.state})`
      svg += `<rect x="${x0}" y="${y}" width="${Math.max(1, x1 - x0 - 1)}" height="${ROW - 8}" rx="2" fill="${color}" data-lane="${esc(lane.name)}" data-range="${it.first}-${it.last}" data-state="${esc(it.state)}"><title>${esc(lane.name)} ${it.first}–${it.last}: ${esc(it.state)}${it.id ? `\n${esc(it.id)}` : ''}</title></rect>`
    }
  })
  const ticks = 6
  const headShown = t.head !== null && t.head > t.to
  for (let k = 0; k <= ticks; k++) {
    if (k === ticks && headShown) continue // the head label takes the right end
    const n = Math.round(t.from + ((span - 1) * k) / ticks)
    svg += `<text x="${px(n)}" y="${height - 4}" class="muted" text-anchor="middle">${n}</text>`
  }
  if (headShown) svg += `<text x="${width - 10}" y="${height - 4}" text-anchor="end" class="muted">head ${t.head}</text>`
  svg += '</svg>'
  $('#timeline').innerHTML = svg

  const stages = p.stages.map((s) => s.name)
  $('#ranges-head').innerHTML = `<th>range</th><th>seen</th>${stages.map((s) => `<th>${esc(s)}</th>`).join('')}${p.proposer ? '<th>proposed</th>' : ''}<th>progress</th>`
  const rows = [...t.ranges].reverse().slice(0, 12)
  $('#ranges tbody').innerHTML = rows
    .map((r) => {
      const cells = stages.map((s) => (r.stages[s] ? `<td data-cell="${esc(s)}">${stateChip(r.stages[s].state)}</td>` : `<td data-cell="${esc(s)}">${stateChip('none')}</td>`)).join('')
      const steps = stages.length + (p.proposer ? 1 : 0)
      return `<tr data-range="${r.first}-${r.last}" data-job="${esc(r.jobId)}" data-progress="${r.progress}"><td><code>${r.first}–${r.last}</code></td><td>${r.seenAt ? ago(r.seenAt) : '–'}</td>${cells}${p.proposer ? `<td>${r.proposed ? stateChip('proposed') : stateChip('none')}</td>` : ''}<td>${r.progress}/${steps}</td></tr>`
    })
    .join('')
}

/** A line chart of `series` ({name, points: [[t, v]]}) as SVG. */
function lineChart(el, series, unit) {
  const W = 600, H = 140, L = 44, B = 18
  const all = series.flatMap((s) => s.points.filter((pt) => pt[1] !== null))
  if (all.length < 2) {
    el.innerHTML = `<svg viewBox="0 0 ${W} ${H}"><text x="10" y="24" class="muted">collecting samples…</text></svg>`
    return
  }
  const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]))
  const vmax = Math.max(1e-9, ...all.map((p) => p[1])) * 1.1
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - 8)
  const y = (v) => H - B - (v / vmax) * (H - B - 8)
  let svg = `<svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none">`
  svg += `<text x="4" y="14" class="muted">${fmt(vmax, vmax < 10 ? 2 : 0)}</text><text x="4" y="${H - B}" class="muted">0</text>`
  svg += `<text x="${W - 8}" y="${H - 4}" text-anchor="end" class="muted">now</text><text x="${L}" y="${H - 4}" class="muted">-${fmt((t1 - t0) / 1000)} s</text>`
  series.forEach((s, i) => {
    const pts = s.points.filter((p) => p[1] !== null).map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ')
    const color = SERIES_COLORS[i % SERIES_COLORS.length]
    svg += `<polyline fill="none" stroke="${color}" stroke-width="1.8" points="${pts}"/>`
    svg += `<text x="${L + 6 + i * 110}" y="14" fill="${color}">${esc(s.name)} ${unit}</text>`
  })
  el.innerHTML = svg + '</svg>'
}

function renderCharts(samples, p) {
  const names = p.stages.map((s) => s.name)
  lineChart($('#chart-throughput'), names.map((n) => ({ name: n, points: samples.map((s) => [s.at, s.throughput[n] ?? 0]) })), 'blk/s')
  lineChart($('#chart-latency'), names.map((n) => ({ name: n, points: samples.map((s) => [s.at, s.latencyMs[n] === null || s.latencyMs[n] === undefined ? null : s.latencyMs[n] / 1000]) })), 's')
  lineChart($('#chart-lag'), [{ name: `to ${p.lag.to}`, points: samples.map((s) => [s.at, s.lagBlocks]) }], 'blk')
}

function renderFailures(p, failedJobs) {
  const classes = Object.entries(p.failures.byClass)
  $('#failure-classes').innerHTML = classes.length
    ? `Failed attempts since start by class: ${classes.map(([k, v]) => `<span class="state state-failed">${esc(k)}</span> ${fmt(v)}`).join(' · ')}`
    : '<span class="muted">No failed attempts since this orchestrator started.</span>'
  $('#failed-jobs tbody').innerHTML =
    failedJobs
      .map(
        (j) => `<tr data-failed-job="${esc(j.id)}"><td><code>${esc(j.id)}</code></td><td>${stateChip(j.state)}</td><td class="num">${j.attempt}/${j.maxAttempts}</td><td>${esc(j.failureClass ?? '')}</td><td>${esc((j.lastError ?? '').slice(0, 160))}</td>
        <td>${j.state === 'dead' ? `<button data-action="requeue" data-job="${esc(j.id)}">requeue</button>` : ''} <button class="danger" data-action="cancel" data-job="${esc(j.id)}">cancel</button></td></tr>`,
      )
      .join('') || '<tr><td colspan="6" class="muted">none</td></tr>'
  $('#failures tbody').innerHTML =
    p.failures.recent
      .map(
        (f) => `<tr><td>${ago(f.at)}</td><td>${esc(f.kind)}</td><td><code>${esc(f.jobId ?? '')}</code>${f.attempt ? ` #${f.attempt}` : ''}</td><td>${esc(f.worker ?? '')}</td><td>${esc(f.failureClass ?? '')}</td>
        <td>${esc(f.message.slice(0, 200))}${f.stderrTail ? `<details><summary>stderr</summary><pre>${esc(f.stderrTail)}</pre></details>` : ''}</td></tr>`,
      )
      .join('') || '<tr><td colspan="6" class="muted">none</td></tr>'
}

function renderWorkers(p) {
  $('#workers tbody').innerHTML =
    p.workers
      .map(
        (w) => `<tr data-worker-row="${esc(w.workerId)}"><td><code>${esc(w.workerId)}</code>${w.labels.length ? ` <span class="muted">${esc(w.labels.join(','))}</span>` : ''}</td><td>${esc(w.stage)}${w.pool ? ` / ${esc(w.pool)}` : ''}</td><td>${stateChip(w.state)}</td>
        <td>${w.running.map((r) => `<code>${r.first}–${r.last}</code>`).join(' ') || '–'}</td><td class="num">${w.attempts.succeeded} / ${w.attempts.failed + w.attempts.rejected}</td>
        <td class="num">${w.successRate === null ? '–' : `${fmt(w.successRate * 100, 1)} %`}</td><td>${ago(w.lastSeenAt)}</td>
        <td>${w.state === 'running' ? `<button data-action="drain" data-worker="${esc(w.workerId)}">drain</button>` : w.state === 'drained' ? `<button data-action="undrain" data-worker="${esc(w.workerId)}">undrain</button>` : ''}</td></tr>`,
      )
      .join('') || '<tr><td colspan="8" class="muted">no worker has reported yet</td></tr>'
}

// -- loop ------------------------------------------------------------------------------------------
async function getJson(path) {
  const res = await fetch(path, { cache: 'no-store' })
  if (!res.ok) throw new Error(`${path}: ${res.status}`)
  return res.json()
}

let busy = false
async function refresh() {
  if (busy) return
  busy = true
  try {
    const [p, t, h, f] = await Promise.all([getJson('/pipeline'), getJson('/timeline?blocks=96'), getJson('/history'), getJson('/jobs?failed=1&limit=20')])
    $('#name').textContent = p.name
    const o = $('#orchestrator')
    o.textContent = p.orchestrator
    o.className = `badge ${p.orchestrator}`
    $('#updated').textContent = `updated ${new Date(p.at).toLocaleTimeString()}`
    document.body.dataset.updatedAt = String(p.at)
    renderHeights(p)
    renderPipeline(p)
    renderTimeline(t, p)
    renderCharts(h.samples, p)
    renderFailures(p, f.jobs)
    renderWorkers(p)
    showTokenState()
  } catch (err) {
    const o = $('#orchestrator')
    o.textContent = 'offline'
    o.className = 'badge offline'
    $('#updated').textContent = String(err)
  } finally {
    busy = false
  }
}

showTokenState()
void refresh()
setInterval(() => void refresh(), REFRESH_MS)
