// The promotion board: one row per product version, its stages in descriptor order
// (`GET /board`), each a coloured cell; a click opens the activity that decided the cell.
"use strict";

const BOARD_ROWS = 100;
const STATE_LABELS = {
  reached: "reached", running: "running", failed: "failed", planned: "planned", notYet: "not yet",
};

function stageCell(c) {
  const box = element("div", null, "stage " + c.state + (c.current ? " current" : ""));
  box.dataset.stage = c.stage;
  box.dataset.state = c.state;
  box.appendChild(element("div", c.stage, "stage-name"));
  box.appendChild(element("div", STATE_LABELS[c.state] || c.state, "stage-state"));
  if (c.at) box.appendChild(element("div", time(c.at), "stage-when"));
  if (c.activityId != null) {
    box.dataset.activity = c.activityId;
    box.appendChild(element("div", `activity ${c.activityId} · ${c.activityStatus}`, "stage-activity"));
    box.title = `open the tasks of activity ${c.activityId}`;
    box.tabIndex = 0;
    const open = () => { location.hash = "activity=" + c.activityId; };
    box.addEventListener("click", open);
    box.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
  }
  if (c.state !== "reached" && c.reachedAt) {
    box.appendChild(element("div", "reached " + time(c.reachedAt), "stage-when"));
  }
  if (!c.inDescriptor) box.appendChild(element("div", "not in the descriptor", "stage-when"));
  return box;
}

async function refreshBoard() {
  const rows = await getJson(`${API}/board?limit=${BOARD_ROWS}`);
  replaceRows("board", rows, (row, r) => {
    row.dataset.product = r.dataProductId;
    row.dataset.version = r.dataProductVersion;
    cell(row, r.dataProductId);
    cell(row, r.dataProductVersion);
    cell(row, r.currentStage || "none", r.currentStage ? "" : "muted");
    const stages = row.insertCell();
    const line = element("div", null, "stages");
    for (const c of r.stages) line.appendChild(stageCell(c));
    stages.appendChild(line);
    if (r.problem) stages.appendChild(element("div", r.problem, "errors"));
  });
  if (!rows.length) {
    const row = document.getElementById("board").insertRow();
    cell(row, "No product version has an activity yet: create one (POST /activities) to see it here.", "muted")
      .colSpan = 4;
  }
  document.getElementById("board-more").hidden = rows.length < BOARD_ROWS;
}
