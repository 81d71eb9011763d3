// The dry-run form: product, version, stage → `POST /activities?dryRun=true`, the plan (each
// task with its executor, template, configurations, the provider's check) and every problem a
// real create and start would meet. Nothing is stored or run by the service.
"use strict";

// A problem is {kind, message}; shown as "kind: message" (any other shape as JSON).
function problemText(p) {
  if (typeof p === "string") return p;
  if (p && typeof p.message === "string") return (p.kind ? p.kind + ": " : "") + p.message;
  return pretty(p);
}

function problemList(problems) {
  const list = element("ul", null, "problems");
  for (const p of problems) list.appendChild(element("li", problemText(p)));
  return list;
}

function showPlan(plan) {
  const summary = document.getElementById("dryrun-summary");
  const tasks = plan.tasks || [];
  const overall = plan.problems || [];
  const count = tasks.reduce((n, t) => n + (t.problems || []).length, overall.length);
  summary.textContent = plan.valid
    ? `valid: ${tasks.length} task(s) would run, no problem found`
    : `not valid: ${count} problem(s)`;
  summary.className = plan.valid ? "valid" : "errors";
  document.getElementById("dryrun-problems").replaceChildren(problemList(overall));
  replaceRows("dryrun-tasks", tasks, (row, t) => {
    row.dataset.position = t.position;
    cell(row, t.position);
    cell(row, t.name);
    cell(row, t.executor || "none", t.executor ? "" : "muted");
    jsonCell(row, t.template);
    const configurations = cell(row, pretty(t.configurations), "json");
    if ((t.atRunTime || []).length) {
      configurations.appendChild(element("div", "resolved at run time: " + t.atRunTime.join(", "), "muted"));
    }
    cell(row, t.preview && t.preview.status ? t.preview.status : "", "preview");
    row.insertCell().appendChild(problemList(t.problems || []));
  });
  document.getElementById("dryrun-plan").hidden = false;
}

async function dryRun(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = {
    dataProductId: String(form.get("dataProductId")).trim(),
    dataProductVersion: String(form.get("dataProductVersion")).trim(),
    stage: String(form.get("stage")).trim(),
  };
  const summary = document.getElementById("dryrun-summary");
  document.getElementById("dryrun-plan").hidden = true;
  summary.textContent = "checking…";
  summary.className = "muted";
  try {
    const answer = await call("POST", `${API}/activities?dryRun=true`, body);
    // A service without dry runs creates the activity (201) instead of answering a plan.
    if (answer.status === 201 || !answer.body || typeof answer.body.valid !== "boolean") {
      const id = answer.body && answer.body.id;
      throw new Error("this service does not do dry runs" +
        (id != null ? `: it created activity ${id} (PLANNED) instead; delete it` : ""));
    }
    showPlan(answer.body);
  } catch (e) {
    summary.textContent = "Dry run refused: " + e.message;
    summary.className = "errors";
  }
}

document.getElementById("dryrun-form").addEventListener("submit", dryRun);
