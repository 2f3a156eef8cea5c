// The cloud upload dashboard. It reads the public XML API only, as an OBS
// frontend does: GET /cloudupload (the list), GET /cloudupload/<id>,
// GET /cloudupload/<id>/_log?nostream=1&start=<offset>, and for a kill
// POST /cloudupload/<id>?cmd=kill. It polls; the server's ETags make an
// unchanged answer a bodyless 304, and an unchanged document is not drawn
// again. A token, when the server asks for one, stays in sessionStorage.
"use strict";

const POLL_MS = 2000;
const LOG_POLL_MS = 1000;
const FINAL = new Set(["succeeded", "failed"]);
const TOKEN_KEY = "cloudupload-token";
// Fields of the job document in the order shown on a job's page.
const FIELDS = [
  ["user", "User"], ["target", "Target"], ["project", "Project"], ["repository", "Repository"],
  ["package", "Package"], ["arch", "Arch"], ["filename", "File"], ["size", "Size"],
  ["created", "Created"], ["progress", "Progress"], ["bytesdone", "Done"], ["bytestotal", "Total"],
  ["bytespersecond", "Rate"], ["etaseconds", "Time left"],
];

const $ = (id) => document.getElementById(id);
let view = null;        // {kind: "list"} or {kind: "job", id}
let timer = null;       // the next poll
let lastTag = "";       // ETag of the document last drawn
let jobs = [];          // the list last fetched
let logOffset = 0;      // bytes of the log shown
let logDecoder = null;  // UTF-8 across chunk boundaries
let generation = 0;     // bumped on every view change: stale polls stop

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
}

// Parses a job element into an object of its children's text.
function jobOf(node) {
  const j = { name: node.getAttribute("name") };
  for (const c of node.children) j[c.tagName] = c.textContent;
  return j;
}

function status(text, error) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", !!error);
}

// summaryOf returns the <summary> of an error document, or the HTTP status.
async function summaryOf(resp) {
  try {
    const doc = new DOMParser().parseFromString(await resp.text(), "text/xml");
    const s = doc.querySelector("status > summary");
    if (s) return s.textContent;
  } catch (e) { /* not XML */ }
  return `${resp.status} ${resp.statusText}`;
}

// getXML fetches an XML document; it returns null when it did not change
// since the ETag last drawn.
async function getXML(url) {
  const resp = await fetch(url, { cache: "no-cache", headers: { Accept: "text/xml" } });
  if (!resp.ok) throw new Error(await summaryOf(resp));
  const tag = resp.headers.get("ETag") || "";
  if (tag && tag === lastTag) return null;
  const doc = new DOMParser().parseFromString(await resp.text(), "text/xml");
  if (doc.querySelector("parsererror")) throw new Error("the server sent a document that is not XML");
  lastTag = tag;
  return doc;
}

function bytes(n) {
  n = Number(n);
  if (!(n > 0)) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function duration(s) {
  s = Math.max(0, Math.round(Number(s)));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor(s % 3600 / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor(s % 86400 / 3600)}h`;
}

function age(created) {
  return created ? duration(Date.now() / 1000 - Number(created)) : "";
}

// progressBar draws a job's progress: a bar with the percentage (none when
// the uploader reports none), and the rate and time left while it runs.
function progressBar(j) {
  const box = el("div");
  if (j.progress === undefined || j.progress === "") {
    if (j.state === "succeeded") j = { ...j, progress: "100" };
    else return box;
  }
  const pct = Math.max(0, Math.min(100, Number(j.progress)));
  const bar = el("div", { class: `bar ${j.state}`, role: "progressbar", "aria-valuemin": "0",
    "aria-valuemax": "100", "aria-valuenow": String(pct), "data-bytes": j.bytesdone || "0" },
    el("span"), el("em", {}, `${pct}%`));
  bar.firstChild.style.width = `${pct}%`;
  box.append(bar);
  if (!FINAL.has(j.state) && j.bytespersecond) {
    let text = `${bytes(j.bytesdone)} of ${bytes(j.bytestotal)}, ${bytes(j.bytespersecond)}/s`;
    if (j.etaseconds) text += `, ${duration(j.etaseconds)} left`;
    box.append(el("div", { class: "rate" }, text));
  }
  return box;
}

function stateBadge(state) {
  return el("span", { class: `state ${state}` }, state);
}

// ---- the list ----

function matches(j) {
  const state = $("filter-state").value;
  if (state === "active" ? FINAL.has(j.state) : state && j.state !== state) return false;
  const words = $("filter-text").value.toLowerCase().split(/\s+/).filter(Boolean);
  const hay = [j.name, j.user, j.target, j.project, j.repository, j.package, j.arch, j.filename, j.state]
    .join(" ").toLowerCase();
  return words.every((w) => hay.includes(w));
}

function drawList() {
  const tbody = $("jobs").tBodies[0];
  const shown = jobs.filter(matches).reverse(); // newest first
  const rows = shown.map((j) => el("tr", { "data-job": j.name },
    el("td", { "data-label": "Job" }, el("a", { href: `#/job/${j.name}` }, j.name)),
    el("td", { "data-label": "State" }, stateBadge(j.state),
      j.state === "failed" && j.details ? el("div", { class: "why" }, j.details) : ""),
    el("td", { "data-label": "User" }, j.user),
    el("td", { "data-label": "Target" }, j.target),
    el("td", { "data-label": "Image", class: "image" }, `${j.project}/${j.package}: ${j.filename}`),
    el("td", { "data-label": "Progress" }, progressBar(j)),
    el("td", { "data-label": "Age" }, age(j.created))));
  tbody.replaceChildren(...rows);
  $("empty").hidden = shown.length > 0;
  const running = jobs.filter((j) => !FINAL.has(j.state)).length;
  $("summary").textContent = `${jobs.length} jobs, ${running} unfinished` +
    (shown.length !== jobs.length ? `; ${shown.length} shown` : "");
}

async function pollList(gen) {
  try {
    const doc = await getXML("/cloudupload");
    if (gen !== generation) return;
    if (doc) {
      jobs = [...doc.documentElement.children].map(jobOf);
    }
    drawList(); // ages move even when the list does not
    status(`updated ${new Date().toLocaleTimeString()}`);
  } catch (e) {
    if (gen === generation) status(`cannot reach the server: ${e.message}`, true);
  }
  if (gen === generation) timer = setTimeout(() => pollList(gen), POLL_MS);
}

// ---- one job ----

let current = null; // the job shown

function drawJob(j) {
  current = j;
  $("job-name").textContent = j.name;
  $("job-state").replaceChildren(stateBadge(j.state));
  $("job-details").textContent = j.details || "";
  $("job-progress").replaceChildren(progressBar(j));
  $("kill").hidden = FINAL.has(j.state);
  if (FINAL.has(j.state)) $("token-form").hidden = true;
  const dl = $("job-fields");
  const items = [];
  for (const [key, label] of FIELDS) {
    let v = j[key];
    if (v === undefined || v === "") continue;
    if (key === "size" || key === "bytesdone" || key === "bytestotal") v = `${bytes(v)} (${v} bytes)`;
    else if (key === "bytespersecond") v = `${bytes(v)}/s`;
    else if (key === "etaseconds") v = duration(v);
    else if (key === "created") v = `${new Date(Number(v) * 1000).toLocaleString()} (${age(j.created)} ago)`;
    else if (key === "progress") v = `${v}%`;
    items.push(el("dt", {}, label), el("dd", { "data-field": key }, v));
  }
  dl.replaceChildren(...items);
}

async function pollJob(gen, id) {
  let final = false;
  try {
    const doc = await getXML(`/cloudupload/${id}`);
    if (gen !== generation) return;
    if (doc) drawJob(jobOf(doc.documentElement));
    final = current && FINAL.has(current.state);
    status(`updated ${new Date().toLocaleTimeString()}`);
  } catch (e) {
    if (gen === generation) status(`job ${id}: ${e.message}`, true);
  }
  if (gen === generation && !final) timer = setTimeout(() => pollJob(gen, id), POLL_MS);
}

// pollLog appends what the log gained; it stops once the job is final and
// the log read to its end.
async function pollLog(gen, id) {
  let more = true;
  try {
    const resp = await fetch(`/cloudupload/${id}/_log?nostream=1&start=${logOffset}`, { cache: "no-store" });
    if (gen !== generation) return;
    if (!resp.ok) throw new Error(await summaryOf(resp));
    const buf = new Uint8Array(await resp.arrayBuffer());
    if (gen !== generation) return;
    if (buf.length > 0) {
      logOffset += buf.length;
      const pre = $("log");
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.append(logDecoder.decode(buf, { stream: true }));
      if ($("follow").checked || atEnd) pre.scrollTop = pre.scrollHeight;
    }
    more = !(current && FINAL.has(current.state) && buf.length === 0);
  } catch (e) {
    if (gen === generation) status(`log of job ${id}: ${e.message}`, true);
  }
  if (gen === generation && more) setTimeout(() => pollLog(gen, id), LOG_POLL_MS);
}

async function kill(token) {
  const id = current.name;
  const headers = { "Content-Type": "application/x-www-form-urlencoded" };
  if (token) headers.Authorization = `Bearer ${token}`;
  $("kill").disabled = true;
  status(`killing job ${id}…`);
  try {
    const resp = await fetch(`/cloudupload/${id}`, { method: "POST", headers, body: "cmd=kill" });
    if (resp.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      $("token-form").hidden = false;
      $("token").focus();
      status(token ? "the server refused this token" : "this server needs a token to kill jobs", true);
      return;
    }
    if (!resp.ok) throw new Error(await summaryOf(resp));
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    $("token-form").hidden = true;
    status(`job ${id} killed`);
    lastTag = "";
    clearTimeout(timer);
    pollJob(generation, id);
  } catch (e) {
    status(`kill of job ${id} failed: ${e.message}`, true);
  } finally {
    $("kill").disabled = false;
  }
}

// ---- navigation ----

function route() {
  generation++;
  clearTimeout(timer);
  lastTag = "";
  const m = location.hash.match(/^#\/job\/([1-9][0-9]{0,18})$/);
  $("list-view").hidden = !!m;
  $("job-view").hidden = !m;
  if (m) {
    view = { kind: "job", id: m[1] };
    document.title = `Job ${m[1]} – Cloud uploads`;
    current = null;
    $("log").textContent = "";
    $("job-fields").replaceChildren();
    $("token-form").hidden = true;
    logOffset = 0;
    logDecoder = new TextDecoder("utf-8");
    pollJob(generation, m[1]);
    pollLog(generation, m[1]);
  } else {
    view = { kind: "list" };
    document.title = "Cloud uploads";
    pollList(generation);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("filter-text").addEventListener("input", drawList);
  $("filter-state").addEventListener("change", drawList);
  $("filters").addEventListener("submit", (e) => e.preventDefault());
  $("kill").addEventListener("click", () => {
    if (!current || !window.confirm(`Kill job ${current.name}? Its upload stops and the job fails.`)) return;
    kill(sessionStorage.getItem(TOKEN_KEY) || "");
  });
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    kill($("token").value.trim());
    $("token").value = "";
  });
  $("token-cancel").addEventListener("click", () => { $("token-form").hidden = true; });
  window.addEventListener("hashchange", route);
  route();
});
