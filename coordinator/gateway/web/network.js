// Helium network page: nodes, queue and aggregate task figures, refreshed every 2 s from /api/network.
// It shows no task ids and no prompts: those belong to the creators (GET /v1/tasks/{id} with their key).
"use strict";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
const strip = (s) => String(s || "").replace(/^(NODE_STATE_|TASK_STATE_|TASK_TYPE_)/, "").toLowerCase();
const short = (a) => (a && a.length > 14 ? a.slice(0, 8) + "…" + a.slice(-4) : a || "");

function kv(el, counts, empty) {
  el.innerHTML = (counts || []).length
    ? counts.map((c) => `<div><span>${esc(strip(c.key))}</span><b>${esc(c.value || 0)}</b></div>`).join("")
    : `<div class="dim">${empty}</div>`;
}

function rows(tbody, items, render, empty, cols) {
  tbody.innerHTML = items.length ? items.map(render).join("") : `<tr><td colspan="${cols}" class="dim">${empty}</td></tr>`;
}

async function refresh() {
  try {
    const r = await fetch("/api/network");
    const net = await r.json();
    if (!r.ok) throw new Error(net.error ? net.error.message : r.statusText);
    $("error").textContent = "";
    const nodes = net.nodes || [];
    const groups = {};
    for (const n of nodes) {
      const k = `${(n.card || {}).name || "?"}|${strip(n.state)}`;
      groups[k] = (groups[k] || 0) + 1;
    }
    rows($("cards").tBodies[0], Object.entries(groups), ([k, v]) => {
      const [card, state] = k.split("|");
      return `<tr><td>${esc(card)}</td><td>${esc(state)}</td><td>${v}</td></tr>`;
    }, "no nodes", 3);
    kv($("queue"), net.stats.queue_depth_by_type, "empty");
    kv($("task-states"), net.stats.tasks_by_state, "no tasks yet");
    kv($("validation"), (net.stats.validation_outcomes || []).concat(
      [{ key: "settled batches", value: net.stats.settled_batches || 0 }]), "");
    rows($("nodes").tBodies[0], nodes, (n) => `<tr>
      <td><code title="${esc(n.address)}">${esc(short(n.address))}</code>${n.connected ? "" : ' <span class="bad">offline</span>'}</td>
      <td>${esc((n.card || {}).name)}</td><td>${esc(strip(n.state))}</td>
      <td>${Number(n.qos || 0).toFixed(2)}</td><td>${Number(n.reliability || 0).toFixed(2)}</td><td>${esc(n.scores || 0)}</td>
      <td class="mono">${esc((n.loaded_models || []).join(", "))}</td><td>${esc(n.running || 0)}</td></tr>`,
    "no nodes", 8);
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = "1";
  } catch (e) {
    $("error").textContent = "cannot load network data: " + e.message;
  }
}
refresh();
setInterval(refresh, 2000);
