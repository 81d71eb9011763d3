// The dashboard: reads the REST API every two seconds (the board, the activities, the selected
// activity's tasks). Loaded last: the other scripts define what it calls.
"use strict";

const REFRESH_MS = 2000;

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
  const activities = (await getJson(`${API}/activities${activityQuery()}`)).reverse();
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
    const actions = cell(row, "");
    if (a.status === "PLANNED") button(actions, "Start", () => act(a.id, "START"));
    if (a.status === "PLANNED" || a.status === "PROCESSING") button(actions, "Abort", () => act(a.id, "ABORT"));
  });
}

async function refresh(opened) {
  const state = document.getElementById("state");
  const problem = document.getElementById("problem");
  try {
    await Promise.all([refreshBoard(), refreshActivities(), refreshTasks(opened === true)]);
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
  refresh(true);
});
document.getElementById("filters").addEventListener("input", () => refresh());
window.addEventListener("hashchange", async () => {
  selectFromAddress();
  await refresh(true);
  if (selected != null) document.getElementById("tasks-section").scrollIntoView();
});
selectFromAddress();
refresh(true);
setInterval(refresh, REFRESH_MS);
