// What every part of the dashboard shares: calling the API with the token, and writing cells.
// Every value is written with textContent, never as HTML: descriptors, callbacks and logs are
// not trusted markup (the page's Content-Security-Policy forbids inline script as well).
"use strict";

const API = "/api/v1/pp/devops";

function authHeaders(accept) {
  const token = sessionStorage.getItem("odm-devops-token");
  const headers = { Accept: accept || "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  return headers;
}

// The answer of a request, refused with the service's own message (its error envelope) when
// it is not a success. A 401 shows the token form.
async function send(method, path, body, accept) {
  const headers = authHeaders(accept);
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const answer = await fetch(path, init);
  if (answer.status === 401) {
    document.getElementById("token-form").hidden = false;
    throw new Error("this service needs an API token");
  }
  if (!answer.ok) {
    const text = await answer.text();
    let message = "";
    try { message = JSON.parse(text).message || ""; } catch (_) { /* not the envelope */ }
    throw new Error(`${answer.status} ${answer.statusText}${message ? ": " + message : ""}`);
  }
  return answer;
}

async function call(method, path, body) {
  const answer = await send(method, path, body);
  const text = await answer.text();
  return { status: answer.status, body: text ? JSON.parse(text) : null };
}

async function getJson(path) {
  return (await call("GET", path)).body;
}

async function getText(path) {
  return (await send("GET", path, undefined, "text/plain, */*")).text();
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text != null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function cell(row, value, className) {
  const td = row.insertCell();
  td.textContent = value == null ? "" : String(value);
  if (className) td.className = className;
  return td;
}

function statusCell(row, status) {
  row.insertCell().appendChild(element("span", status, "status " + status));
}

// JSON in a string (ODM's wire format) or a JSON value, shown indented.
function pretty(value) {
  if (value == null) return "";
  if (typeof value !== "string") return JSON.stringify(value, null, 1);
  try { return JSON.stringify(JSON.parse(value), null, 1); } catch (_) { return value; }
}

function jsonCell(row, value) {
  cell(row, pretty(value), "json");
}

function time(value) {
  return value ? value.replace("T", " ").replace(/\.\d+\+00:00$/, " UTC") : "";
}

function button(parent, label, onClick) {
  const b = element("button", label);
  b.type = "button";
  b.addEventListener("click", (event) => { event.stopPropagation(); onClick(); });
  parent.appendChild(b);
  return b;
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

// A link to a provider's page, only for http(s) addresses (never `javascript:`).
function runLink(url, label) {
  if (!url || !/^https?:\/\//i.test(url)) return null;
  const link = element("a", label || "run");
  link.href = url;
  link.rel = "noopener noreferrer";
  link.target = "_blank";
  return link;
}
