// Deployments page: rows kept live from /events/deployments (KV status watch + signals).
"use strict";
(function () {
  const {el, post, events, pageData, flash} = window.sn;
  const body = document.querySelector("#deployments tbody");
  const rows = new Map();

  function when(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }
  function signalText(s) {
    if (!s) return "—";
    return el("span", {}, el("span", {class: "sig " + s.type}, s.type), " ", s.symbol || "",
      s.price != null ? " @ " + Number(s.price).toPrecision(6) : "", el("br"),
      el("span", {class: "muted"}, when(s.timestamp)));
  }
  function lastRun(r) {
    if (!r) return "—";
    return el("span", {}, el("span", {class: "state " + (r.status === "error" ? "error" : "running")}, r.status),
      " ", r.symbol, el("br"), el("span", {class: "muted"}, when(r.started_at)));
  }
  function button(id, action, label) {
    const b = el("button", {type: "button", class: "act-" + action, title: label + " " + id}, label);
    b.dataset.action = action;
    b.addEventListener("click", async () => {
      b.disabled = true;
      const reply = await post(`/api/deployments/${encodeURIComponent(id)}/${action}`);
      b.disabled = false;
      if (reply.error) flash(`${label} ${id}: ${reply.error.message || reply.error}`, "error");
      else { flash(`${label} ${id}: done`, "info"); if (reply.row) upsert(reply.row); }
    });
    return b;
  }
  function draw(row) {
    const tr = el("tr", {"data-id": row.id});
    tr.id = "dep-" + row.id;
    tr.append(
      el("td", {}, el("a", {href: "/deployments/" + encodeURIComponent(row.id)}, row.id)),
      el("td", {}, `${row.strategy} v${row.version}`),
      el("td", {}, row.symbols.join(", "), " ", el("span", {class: "muted"}, row.timeframe)),
      el("td", {class: "status"}, el("span", {class: "state " + row.state}, row.state)),
      el("td", {class: "next-fire"}, row.schedule ? when(row.next_fire) : el("span", {class: "muted"}, "each bar")),
      el("td", {class: "last-run"}, lastRun(row.last_run)),
      el("td", {class: "last-signal"}, signalText(row.last_signal)),
      el("td", {class: "num runs"}, row.runs),
      el("td", {class: "num errors", title: row.last_error ? row.last_error.message : ""}, row.errors),
      el("td", {class: "actions"}, button(row.id, "pause", "Pause"), button(row.id, "resume", "Resume"),
        button(row.id, "stop", "Stop"), button(row.id, "run", "Run now")),
    );
    return tr;
  }
  // Fields that come from the deployment's status (KV DEPLOYMENT_STATUS). A row from an action's
  // reply or a fetch may carry an older status than the live watch already delivered (or none:
  // Run now answers before its run ends); the newest status, by its write count `seq`, is kept.
  const STATUS_FIELDS = ["state", "next_fire", "last_run", "runs", "errors", "last_error", "seq"];
  function older(row, old) {
    return Boolean(old && old.seq != null && (row.seq == null || row.seq < old.seq));
  }
  function upsert(row) {
    const old = rows.get(row.id);
    if (older(row, old)) for (const k of STATUS_FIELDS) row[k] = old[k];
    if (old && !row.last_signal) row.last_signal = old.last_signal;
    rows.set(row.id, row);
    const tr = draw(row);
    const existing = document.getElementById("dep-" + row.id);
    if (existing) existing.replaceWith(tr); else body.append(tr);
    document.getElementById("empty").hidden = rows.size > 0;
  }
  async function fetchRow(id) {
    const response = await fetch("/api/deployments/" + encodeURIComponent(id), {credentials: "same-origin"});
    if (response.ok) upsert((await response.json()).row);
  }
  for (const row of pageData().rows) upsert(row);

  events("/events/deployments", {
    ready: () => document.body.dataset.live = "ready",
    status: (st) => {
      if (st.deleted) {
        rows.delete(st.id);
        const tr = document.getElementById("dep-" + st.id);
        if (tr) tr.remove();
        return;
      }
      const old = rows.get(st.id);
      if (!old) { fetchRow(st.id); return; }
      const row = Object.assign({}, old, {state: st.state, next_fire: st.next_fire, runs: st.runs, errors: st.errors,
        last_run: st.last_run, last_error: st.last_error, version: st.version || old.version,
        seq: st.seq});
      if (older(row, old)) return;
      if (st.last_run && st.last_run.signal) row.last_signal = Object.assign({symbol: st.last_run.symbol}, st.last_run.signal);
      upsert(row);
    },
    signal: (s) => {
      const row = rows.get(s.id);
      if (!row) return;
      row.last_signal = s;
      upsert(row);
    },
  });
})();
