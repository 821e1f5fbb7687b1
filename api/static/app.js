// The Shrinkray dashboard: plain JavaScript against the REST API, no build step. Views are chosen by the URL's
// hash (#/jobs, #/jobs/<id>, #/catalogs, #/catalogs/<id>) and re-rendered from the API every POLL_MS.
"use strict";

const POLL_MS = 2000;
const PAGE_SIZE = 50;
const TERMINAL = ["succeeded", "failed", "cancelled"];
const view = document.getElementById("view");

// With API keys required, the key is asked for once and kept for this tab only (sessionStorage).
const KEY_STORE = "shrinkray.apiKey";
class NeedsKey extends Error {}

async function api(path) {
  const key = sessionStorage.getItem(KEY_STORE);
  const response = await fetch(path, key ? { headers: { Authorization: `Bearer ${key}` } } : {});
  if (response.status === 401) throw new NeedsKey((await response.json()).detail);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function showKeyForm(message) {
  view.innerHTML = `<form id="key-form" data-testid="key-form"><p class="error">${escape(message)}</p>
    <label>API key <input type="password" name="key" data-testid="key-input" autocomplete="off" required></label>
    <button type="submit">Use key</button></form>`;
  document.getElementById("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORE, new FormData(event.target).get("key").trim());
    render();
  });
}

function escape(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

const fmt = (value, digits = 2) => (value === null || value === undefined ? "–" : Number(value).toFixed(digits));
const megabytes = (bytes) => (bytes === null || bytes === undefined ? "–" : (bytes / 1e6).toFixed(2) + " MB");
const status = (state) => `<span class="status-${escape(state)}" data-testid="status">${escape(state)}</span>`;
const bar = (fraction) => `<span class="bar"><span style="width:${Math.round(100 * fraction)}%"></span></span>`;

function hashParams() {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  return { parts: path.split("/").filter(Boolean), query: new URLSearchParams(query || "") };
}

// A filter change starts again from the first page.
function setFilter(key, value) {
  const { query } = hashParams();
  value ? query.set(key, value) : query.delete(key);
  query.delete("page");
  location.hash = `#/jobs?${query}`;
}

async function jobsView(query) {
  const state = query.get("status") || "";
  const catalog = query.get("catalog") || "";
  const page = Number(query.get("page") || 0);
  const params = new URLSearchParams({ limit: PAGE_SIZE, offset: page * PAGE_SIZE });
  if (state) params.set("status", state);
  if (catalog) params.set("catalog_id", catalog);
  const jobs = await api(`/v1/jobs?${params}`);
  const pages = Math.max(1, Math.ceil(jobs.total / PAGE_SIZE));
  const link = (changes) => {
    const next = new URLSearchParams(query);
    for (const [key, value] of Object.entries(changes)) value === "" ? next.delete(key) : next.set(key, value);
    return `#/jobs?${next}`;
  };
  const options = ["", "queued", "running", "succeeded", "failed", "cancelled"]
    .map((s) => `<option value="${s}" ${s === state ? "selected" : ""}>${s || "all states"}</option>`).join("");
  const rows = jobs.items.map((job) => `
    <tr data-testid="job-row" data-job="${escape(job.id)}">
      <td><a href="#/jobs/${escape(job.id)}">${escape(job.id.slice(0, 8))}</a></td>
      <td>${status(job.status)}</td><td>${escape(job.stage)}</td>
      <td>${bar(TERMINAL.includes(job.status) ? 1 : job.progress)} ${escape(job.progress_message || "")}</td>
      <td>${escape(job.preset || "inline recipe")}</td><td>${escape(job.model_uri)}</td>
      <td>${escape(new Date(job.created_at).toLocaleString())}</td></tr>`).join("");
  return `
    <div class="filters">
      <label>State <select data-testid="status-filter" onchange="setFilter('status', this.value)">${options}</select></label>
      ${catalog ? `<span>catalog ${escape(catalog.slice(0, 8))} <a href="${link({ catalog: "", page: "" })}">clear</a></span>` : ""}
      <span data-testid="job-total">${jobs.total} jobs</span>
      ${page > 0 ? `<a href="${link({ page: page - 1 })}">previous</a>` : ""}
      <span>page ${page + 1} of ${pages}</span>
      ${page + 1 < pages ? `<a data-testid="next-page" href="${link({ page: page + 1 })}">next</a>` : ""}
    </div>
    <table><thead><tr><th>job</th><th>state</th><th>stage</th><th>progress</th><th>recipe</th><th>model</th>
    <th>created</th></tr></thead><tbody>${rows}</tbody></table>`;
}

const STAGE_COLOURS = { fetch: "#6c8ebf", calibrate: "#9673a6", compress: "#d79b00", validate: "#82b366", publish: "#b85450" };

async function jobView(id) {
  const [job, artifacts] = await Promise.all([api(`/v1/jobs/${id}`), api(`/v1/jobs/${id}/artifacts`).catch(() => null)]);
  const seconds = (run) => ((run.finished_at ? new Date(run.finished_at) : new Date()) - new Date(run.started_at)) / 1000;
  const total = job.stages.reduce((sum, run) => sum + seconds(run), 0) || 1;
  const timeline = job.stages.map((run) => `<span data-testid="stage" title="${escape(run.stage)} ${fmt(seconds(run), 1)} s"
      style="width:${Math.max(2, (100 * seconds(run)) / total)}%;background:${STAGE_COLOURS[run.stage] || "#888"}">
      ${escape(run.stage)} ${fmt(seconds(run), 1)} s</span>`).join("");
  const report = job.report || {};
  const numbers = [
    ["perplexity before", fmt(report.perplexity?.before, 3)], ["perplexity after", fmt(report.perplexity?.after, 3)],
    ["change", report.perplexity ? `${fmt(report.perplexity.change_pct)} %` : "–"],
    ["size before", megabytes(report.size_bytes?.before)], ["size after", megabytes(report.size_bytes?.after)],
    ["ratio", fmt(report.size_bytes?.ratio)], ["next-token agreement", fmt(report.next_token_agreement, 3)],
    ["decode speed", report.speed?.measured ? report.speed.rows.map((r) => `batch ${r.batch}: ${fmt(r.speedup)}×`).join(", ")
      : escape(report.speed?.reason || "–")],
    ["layer speed", report.speed?.matmuls_per_step
      ? report.speed.matmuls_per_step.map((s) => `${s.rows} row${s.rows === 1 ? "" : "s"}: ${fmt(s.speedup)}×`).join(", ") : "–"],
  ].map(([name, value]) => `<tr><th>${name}</th><td data-testid="report-${name.replace(/ /g, "-")}">${value}</td></tr>`).join("");
  const files = (artifacts?.items || []).map((a) => `<li><a href="${escape(a.url)}">${escape(a.name)}</a> (${megabytes(a.size)})</li>`).join("");
  return `<h2>Job ${escape(job.id)}</h2>
    <p>${status(job.status)} · stage ${escape(job.stage)} · attempt ${job.attempt} · ${escape(job.model_uri)}</p>
    <p>${bar(TERMINAL.includes(job.status) ? 1 : job.progress)} ${escape(job.progress_message || "")}</p>
    <div class="timeline" data-testid="timeline">${timeline}</div>
    ${job.error ? `<p class="error" data-testid="job-error">${escape(job.error)}</p>` : ""}
    <table>${numbers}</table>
    ${files ? `<h3>Artifacts</h3><ul data-testid="artifacts">${files}</ul>` : ""}`;
}

async function catalogsView() {
  const page = await api("/v1/catalogs?limit=100");
  const rows = page.items.map((c) => `<tr data-testid="catalog-row"><td><a href="#/catalogs/${escape(c.id)}">${escape(c.name || c.id.slice(0, 8))}</a></td>
    <td>${c.pairs}</td><td>${bar(c.progress)}</td><td>${escape(Object.entries(c.counts).map(([s, n]) => `${n} ${s}`).join(", "))}</td>
    <td>${escape(new Date(c.created_at).toLocaleString())}</td></tr>`).join("");
  return `<table><thead><tr><th>catalog</th><th>pairs</th><th>progress</th><th>states</th><th>created</th></tr></thead>
    <tbody>${rows}</tbody></table>`;
}

// Size (x) against perplexity after (y) for one model's finished cells; the Pareto front joins the cells no
// other cell beats on both, and the recommended one is drawn larger and green.
function chart(model, cells, recommendation) {
  const points = cells.filter((c) => c.size_bytes !== null && c.ppl_after !== null);
  const width = 320, height = 200, pad = 36;
  if (!points.length) return `<svg data-testid="chart" data-model="${escape(model)}" width="${width}" height="${height}"></svg>`;
  const xs = points.map((c) => c.size_bytes), ys = points.map((c) => c.ppl_after);
  const span = (values) => [Math.min(...values), Math.max(...values) === Math.min(...values) ? Math.min(...values) + 1 : Math.max(...values)];
  const [x0, x1] = span(xs), [y0, y1] = span(ys);
  const px = (x) => pad + ((x - x0) / (x1 - x0)) * (width - 2 * pad);
  const py = (y) => height - pad - ((y - y0) / (y1 - y0)) * (height - 2 * pad);
  const front = [...points].sort((a, b) => a.size_bytes - b.size_bytes || a.ppl_after - b.ppl_after)
    .filter((c, i, sorted) => sorted.slice(0, i).every((d) => d.ppl_after > c.ppl_after));
  const dots = points.map((c) => {
    const picked = recommendation && recommendation.job_id === c.job_id;
    return `<circle class="${picked ? "point recommended" : "point"}" data-recipe="${escape(c.recipe)}" cx="${px(c.size_bytes)}"
      cy="${py(c.ppl_after)}" r="${picked ? 7 : 5}"><title>${escape(c.recipe)}: ${megabytes(c.size_bytes)}, ppl ${fmt(c.ppl_after, 3)}</title></circle>`;
  }).join("");
  const line = front.map((c) => `${px(c.size_bytes)},${py(c.ppl_after)}`).join(" ");
  return `<figure><figcaption>${escape(model)}: size vs perplexity</figcaption>
    <svg data-testid="chart" data-model="${escape(model)}" width="${width}" height="${height}">
      <line x1="${pad}" y1="${height - pad}" x2="${width - pad}" y2="${height - pad}" stroke="#999"/>
      <line x1="${pad}" y1="${pad}" x2="${pad}" y2="${height - pad}" stroke="#999"/>
      <text x="${width / 2}" y="${height - 8}" text-anchor="middle" font-size="11">size (MB)</text>
      <text x="10" y="${height / 2}" font-size="11" transform="rotate(-90 10 ${height / 2})" text-anchor="middle">ppl</text>
      <polyline class="pareto" data-testid="pareto" points="${line}"/>${dots}</svg></figure>`;
}

async function catalogView(id) {
  const catalog = await api(`/v1/catalogs/${id}`);
  const cell = (model, recipe) => catalog.cells.find((c) => c.model === model && c.recipe === recipe);
  const header = catalog.recipes.map((r) => `<th>${escape(r)}</th>`).join("");
  const rows = catalog.models.map((model) => `<tr><th>${escape(model)}</th>${catalog.recipes.map((recipe) => {
    const c = cell(model, recipe);
    if (!c) return "<td></td>";
    return `<td class="cell" data-testid="cell" data-model="${escape(model)}" data-recipe="${escape(recipe)}" data-status="${escape(c.status)}">
      ${status(c.status)} ${TERMINAL.includes(c.status) ? "" : bar(c.progress)}<br>
      <span data-testid="size">${megabytes(c.size_bytes)}</span> ·
      ppl <span data-testid="ppl">${fmt(c.ppl_after, 3)}</span>
      (<span data-testid="change">${c.ppl_change_pct === null ? "–" : (c.ppl_change_pct >= 0 ? "+" : "") + fmt(c.ppl_change_pct)}</span> %)
      ${c.decode_speedup ? ` · ${fmt(c.decode_speedup)}× decode` : ""}<br>
      <a href="#/jobs/${escape(c.job_id)}">job</a>${c.error ? ` <span class="error">${escape(c.error.slice(0, 120))}</span>` : ""}</td>`;
  }).join("")}</tr>`).join("");
  const picks = catalog.recommendations.map((r) => `<li data-testid="recommendation" data-model="${escape(r.model)}">
    <strong>${escape(r.model)}</strong>: ${escape(r.recipe || "none yet")} — ${escape(r.reason)}</li>`).join("");
  const charts = catalog.models.map((model) => chart(model, catalog.cells.filter((c) => c.model === model),
    catalog.recommendations.find((r) => r.model === model))).join("");
  return `<h2>Catalog ${escape(catalog.name || catalog.id)}</h2>
    <p>${bar(catalog.progress)} ${escape(Object.entries(catalog.counts).map(([s, n]) => `${n} ${s}`).join(", "))}
    · tolerance +${catalog.tolerance_pct}% ppl · <a href="#/jobs?catalog=${escape(catalog.id)}">its jobs</a></p>
    <table data-testid="matrix"><thead><tr><th>model \\ recipe</th>${header}</tr></thead><tbody>${rows}</tbody></table>
    <h3>Recommended</h3><ul>${picks}</ul><div class="charts">${charts}</div>`;
}

async function render() {
  const { parts, query } = hashParams();
  try {
    let html;
    if (parts[0] === "jobs" && parts[1]) html = await jobView(parts[1]);
    else if (parts[0] === "catalogs" && parts[1]) html = await catalogView(parts[1]);
    else if (parts[0] === "catalogs") html = await catalogsView();
    else html = await jobsView(query);
    view.innerHTML = html;
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    if (error instanceof NeedsKey) {
      sessionStorage.removeItem(KEY_STORE);
      showKeyForm(error.message);
    } else {
      view.innerHTML = `<p class="error" data-testid="load-error">${escape(error.message)}</p>`;
    }
  }
}

window.addEventListener("hashchange", render);
render();
// Not while a filter is open or a key is being typed: re-rendering would take the input away.
setInterval(() => { if (!document.querySelector("select:focus, #key-form")) render(); }, POLL_MS);
