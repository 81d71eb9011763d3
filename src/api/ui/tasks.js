// The tasks of the selected activity (`/ui#activity=12`): their run link, their run's live
// state at the provider (`GET /tasks/{id}/run`, asked when the activity is opened and on
// demand, not at every refresh: each ask reaches the provider) and their logs
// (`GET /tasks/{id}/logs`, text/plain, shown as text).
"use strict";

let selected = null;
// Task id → what `/run` answered ({state, result, url, checkedAt}) or {error}.
let runs = new Map();
// The task whose logs are shown, if any.
let logsOf = null;

function selectFromAddress() {
  const match = /^#activity=(\d+)$/.exec(location.hash);
  const next = match ? Number(match[1]) : null;
  if (next !== selected) {
    runs = new Map();
    logsOf = null;
    document.getElementById("logs-section").hidden = true;
  }
  selected = next;
}

function hasRun(t) {
  return t.executorRef && t.startedAt;
}

async function checkRun(id) {
  try {
    runs.set(id, (await call("GET", `${API}/tasks/${id}/run`)).body);
  } catch (e) {
    runs.set(id, { error: e.message });
  }
}

function runCell(row, t) {
  const td = row.insertCell();
  td.className = "run";
  const link = runLink(t.runUrl);
  if (link) td.appendChild(link);
  const run = runs.get(t.id);
  if (run && run.error) td.appendChild(element("div", run.error, "errors"));
  else if (run) {
    const state = [run.state, run.result].filter((s) => s).join(" · ");
    td.appendChild(element("div", state || "unknown", "run-state"));
    if (run.checkedAt) td.appendChild(element("div", "checked " + time(run.checkedAt), "muted"));
    const live = !link ? runLink(run.url) : null;
    if (live) td.appendChild(live);
  }
  if (hasRun(t)) {
    button(td, "Check run", async () => { await checkRun(t.id); refreshTasks(); });
    button(td, "Logs", () => showLogs(t.id, t.name));
  }
}

async function showLogs(id, name) {
  logsOf = id;
  const section = document.getElementById("logs-section");
  const logs = document.getElementById("logs");
  section.hidden = false;
  document.getElementById("logs-title").textContent = `Logs of task ${id} (${name})`;
  logs.textContent = "loading…";
  logs.className = "logs";
  try {
    const text = await getText(`${API}/tasks/${id}/logs`);
    if (logsOf === id) logs.textContent = text || "(no logs)";
  } catch (e) {
    if (logsOf === id) {
      logs.textContent = "Cannot read the logs: " + e.message;
      logs.className = "logs errors";
    }
  }
}

async function refreshTasks(opened) {
  const section = document.getElementById("tasks-section");
  if (selected == null) { section.hidden = true; return; }
  const tasks = await getJson(`${API}/tasks?activityId=${encodeURIComponent(selected)}`);
  if (opened) await Promise.all(tasks.filter(hasRun).map((t) => checkRun(t.id)));
  section.hidden = false;
  document.getElementById("tasks-title").textContent = `Tasks of activity ${selected}`;
  replaceRows("tasks", tasks, (row, t) => {
    row.dataset.task = t.id;
    cell(row, t.position);
    cell(row, t.id);
    cell(row, t.name);
    cell(row, t.executorRef || "none", t.executorRef ? "" : "muted");
    statusCell(row, t.status);
    runCell(row, t);
    cell(row, time(t.startedAt));
    cell(row, time(t.finishedAt));
    jsonCell(row, t.results);
    cell(row, t.errors, "errors");
  });
}
