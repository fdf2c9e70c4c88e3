// Helium chat page: streams an answer through /v1/chat/completions and shows how it was verified.
"use strict";
const $ = (id) => document.getElementById(id);
const history = [];
const keyInput = $("key");
keyInput.value = localStorage.getItem("helium-api-key") || "";
keyInput.addEventListener("change", () => localStorage.setItem("helium-api-key", keyInput.value.trim()));

function headers() {
  const h = { "content-type": "application/json" };
  const key = keyInput.value.trim();
  if (key) h.authorization = "Bearer " + key;
  return h;
}

async function loadModels() {
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
    const select = $("model");
    // The embedded network's real model (helium dev) is the default; the tiny random ones stay listed.
    const chosen = select.value || localStorage.getItem("helium-model") || "HuggingFaceTB/SmolLM2-135M-Instruct";
    select.innerHTML = "";
    for (const m of body.data.filter((m) => (m.types || [m.type]).includes("gpt"))) {
      const o = document.createElement("option");
      o.value = m.id;
      const cards = (m.cards || []).map((c) => c.name).join(", ");
      o.textContent = `${m.id} (${m.nodes} nodes${cards ? ", " + cards : ""})`;
      select.appendChild(o);
    }
    if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
    $("status").textContent = body.data.length ? "" : "no model is served right now";
  } catch (e) {
    $("status").textContent = "cannot list models: " + e.message;
  }
}

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  const body = document.createElement("div");
  body.className = "content";
  body.textContent = text;
  div.appendChild(body);
  $("log").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function short(addr) { return addr ? addr.slice(0, 8) + "…" + addr.slice(-4) : "?"; }

function showMeta(div, helium, error) {
  const meta = document.createElement("div");
  meta.className = "meta";
  if (error) {
    meta.innerHTML = `<span class="badge rejected" data-testid="rejected">✗ not validated</span> `;
    meta.appendChild(document.createTextNode(error.message || "error"));
    div.dataset.outcome = "rejected";
  } else {
    const nodes = (helium.assignments || []).map((a) =>
      `<code title="${a.node}">${short(a.node)}</code>${a.matched ? " ✓" : ""}`).join(", ");
    meta.innerHTML = `<span class="badge validated" data-testid="validated">✓ validated · ${helium.validation}</span>
      task <code class="task-id">${helium.task_id}</code> · nodes ${nodes}`;
    div.dataset.outcome = "validated";
    div.dataset.taskId = helium.task_id;
  }
  div.appendChild(meta);
}

async function send(prompt) {
  history.push({ role: "user", content: prompt });
  bubble("user", prompt);
  const div = bubble("assistant", "");
  const content = div.querySelector(".content");
  const req = { model: $("model").value, messages: history, stream: true,
                max_tokens: Number($("max-tokens").value) || 48 };
  if ($("seed").value !== "") req.seed = Number($("seed").value);
  let text = "", helium = null, error = null;
  try {
    const r = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(req) });
    if (!r.ok) { const b = await r.json(); throw new Error(b.error ? b.error.message : r.statusText); }
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, cut); buf = buf.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) { error = chunk.error; continue; }
          for (const c of chunk.choices || []) {
            if (c.index === 0 && c.delta && c.delta.content) { text += c.delta.content; content.textContent = text; }
            if (c.index === 0 && c.delta && c.delta.tool_calls) {
              content.textContent = text + c.delta.tool_calls.map((t) => `\n[tool call ${t.function.name}(${t.function.arguments})]`).join("");
            }
          }
          if (chunk.helium) helium = chunk.helium;
        }
      }
    }
    if (!helium && !error) error = { message: "the stream ended without a validated answer" };
  } catch (e) {
    error = { message: e.message };
  }
  showMeta(div, helium, error);
  if (!error) history.push({ role: "assistant", content: text });
}

$("send").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt) return;
  $("prompt").value = "";
  $("send-button").disabled = true;
  try { await send(prompt); } finally { $("send-button").disabled = false; }
});
$("prompt").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("send").requestSubmit(); }
});
keyInput.addEventListener("change", loadModels);
$("model").addEventListener("change", () => localStorage.setItem("helium-model", $("model").value));
loadModels();
