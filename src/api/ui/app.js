// The dashboard: reads the REST API every two seconds. Every value is written with
// textContent, never as HTML: descriptors and callbacks are not trusted markup.
"use strict";

const API = "/api/v1/pp/devops";
const REFRESH_MS = 2000;
// The activity whose tasks are shown, kept in the address (`/ui#activity=12`) so it can be linked.
let selected = null;

function selectFromAddress() {
  const match = /^#activity=(\d+)$/.exec(location.hash);
  selected = match ? Number(match[1]) : null;
}

function authHeaders() {
  const token = sessionStorage.getItem("odm-devops-token");
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  return headers;
}

async function call(method, path) {
  const answer = await fetch(path, { method, headers: authHeaders() });
  if (answer.status === 401) {
    document.getElementById("token-form").hidden = false;
    throw new Error("this service needs an API token");
  }
  const text = await answer.text();
  const body = text ? JSON.parse(text) : null;
  if (!answer.ok) throw new Error((body && body.message) || answer.status + " " + answer.statusText);
  return body;
}

function cell(row, value, className) {
  const td = row.insertCell();
  td.textContent = value == null ? "" : String(value);
  if (className) td.className = className;
  return td;
}

function statusCell(row, status) {
  const span = document.createElement("span");
  span.className = "status " + status;
  span.textContent = status;
  row.insertCell().appendChild(span);
}

function jsonCell(row, text) {
  // results are JSON in a string (ODM's wire format): show them indented.
  let shown = text || "";
  try { if (text) shown = JSON.stringify(JSON.parse(text), null, 1); } catch (_) { /* as is */ }
  cell(row, shown, "json");
}

function time(value) {
  return value ? value.replace("T", " ").replace(/\.\d+\+00:00$/, " UTC") : "";
}

function button(row, label, onClick) {
  const b = document.createElement("button");
  b.textContent = label;
  b.addEventListener("click", (event) => { event.stopPropagation(); onClick(); });
  row.lastChild.appendChild(b);
}

function replaceRows(id, items, fill) {
  const body = document.getElementById(id);
  const rows = document.createDocumentFragment();
  for (const item of items) {
    const row = document.createElement("tr");
    fill(row, item);
    rows.appendChild(row);
  }
  body.replaceChildren(rows);
}

async function act(id, action) {
  try {
    await call("PATCH", `${API}/activities/${id}/status?action=${action}`);
  } catch (e) {
    alert(`${action} of activity ${id} refused: ${e.message}`);
  }
  refresh();
}

function activityQuery() {
  const params = new URLSearchParams();
  for (const [key, value] of new FormData(document.getElementById("filters"))) {
    if (value.trim()) params.set(key, value.trim());
  }
  const query = params.toString();
  return query ? "?" + query : "";
}

async function refreshActivities() {
  const activities = (await call("GET", `${API}/activities${activityQuery()}`)).reverse();
  replaceRows("activities", activities, (row, a) => {
    row.className = "selectable" + (a.id === selected ? " selected" : "");
    row.addEventListener("click", () => { location.hash = "activity=" + a.id; });
    cell(row, a.id);
    cell(row, a.dataProductId);
    cell(row, a.dataProductVersion);
    cell(row, a.stage);
    statusCell(row, a.status);
    cell(row, time(a.createdAt));
    cell(row, time(a.startedAt));
    cell(row, time(a.finishedAt));
    cell(row, a.errors, "errors");
    cell(row, "");
    if (a.status === "PLANNED") button(row, "Start", () => act(a.id, "START"));
    if (a.status === "PLANNED" || a.status === "PROCESSING") button(row, "Abort", () => act(a.id, "ABORT"));
  });
}

async function refreshTasks() {
  const section = document.getElementById("tasks-section");
  if (selected == null) { section.hidden = true; return; }
  const tasks = await call("GET", `${API}/tasks?activityId=${encodeURIComponent(selected)}`);
  section.hidden = false;
  document.getElementById("tasks-title").textContent = `Tasks of activity ${selected}`;
  replaceRows("tasks", tasks, (row, t) => {
    cell(row, t.position);
    cell(row, t.id);
    cell(row, t.name);
    cell(row, t.executorRef || "none", t.executorRef ? "" : "muted");
    statusCell(row, t.status);
    const run = row.insertCell();
    if (t.runUrl && /^https?:\/\//.test(t.runUrl)) {
      const link = document.createElement("a");
      link.href = t.runUrl;
      link.rel = "noopener noreferrer";
      link.target = "_blank";
      link.textContent = "run";
      run.appendChild(link);
    }
    cell(row, time(t.startedAt));
    cell(row, time(t.finishedAt));
    jsonCell(row, t.results);
    cell(row, t.errors, "errors");
  });
}

async function refreshLifecycles() {
  const rows = (await call("GET", `${API}/lifecycles`)).filter((l) => l.finishedAt == null);
  replaceRows("lifecycles", rows, (row, l) => {
    cell(row, l.dataProductId);
    cell(row, l.dataProductVersion);
    cell(row, l.stage);
    cell(row, time(l.startedAt));
    jsonCell(row, l.results);
  });
}

async function refresh() {
  const state = document.getElementById("state");
  const problem = document.getElementById("problem");
  try {
    await Promise.all([refreshActivities(), refreshTasks(), refreshLifecycles()]);
    problem.textContent = "";
    state.textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    problem.textContent = "Cannot read the service: " + e.message;
    state.textContent = "stale";
  }
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("odm-devops-token", document.getElementById("token").value);
  document.getElementById("token-form").hidden = true;
  refresh();
});
document.getElementById("filters").addEventListener("input", refresh);
window.addEventListener("hashchange", () => { selectFromAddress(); refresh(); });
selectFromAddress();
refresh();
setInterval(refresh, REFRESH_MS);
