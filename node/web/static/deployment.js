// One deployment: runs, logs, signals, state followed live from /deployments/<id>/events.
"use strict";
(function () {
  const {el, post, events, pageData, flash} = window.sn;
  const data = pageData();
  const dep = data.deployment;
  const id = dep.id;
  const runs = new Map();
  const signals = [];  // {symbol, timestamp, type, price}
  const MAX_LOG_LINES = 2000, MAX_RUNS = 500;

  function when(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }
  let shownSeq = null;  // write count of the status shown: an older one (a late action reply) is ignored
  function setState(status) {
    if (status && status.seq != null) {
      if (shownSeq != null && status.seq < shownSeq) return;
      shownSeq = status.seq;
    }
    const badge = document.getElementById("state");
    const state = status ? status.state : dep.desired;
    badge.textContent = state;
    badge.className = "state " + state;
    const summary = document.getElementById("summary");
    summary.replaceChildren();
    const add = (k, v) => summary.append(el("dt", {}, k), el("dd", {}, v));
    add("Strategy", `${dep.strategy} v${status && status.version ? status.version : dep.version}`);
    add("Symbols", `${dep.symbols.join(", ")} · ${dep.timeframe} · lookback ${dep.lookback}`);
    add("Trigger", dep.schedule ? `schedule ${dep.schedule}${dep.tz ? " (" + dep.tz + ")" : ""}` : "each new bar");
    if (status) {
      add("Runs", `${status.runs} · errors ${status.errors} · skipped ${status.skipped} · signals ${status.signals}`);
      add("Next fire", status.next_fire ? when(status.next_fire) : "—");
      add("Last error", status.last_error ? `${status.last_error.code}: ${status.last_error.message}` : "—");
    }
    add("Overlap", dep.overlap);
  }
  function actions() {
    const box = document.getElementById("actions");
    for (const [action, label] of [["pause", "Pause"], ["resume", "Resume"], ["stop", "Stop"], ["run", "Run now"]]) {
      const b = el("button", {type: "button", class: "act-" + action}, label);
      b.addEventListener("click", async () => {
        const reply = await post(`/api/deployments/${encodeURIComponent(id)}/${action}`);
        if (reply.error) flash(`${label}: ${reply.error.message || reply.error}`, "error");
        else { flash(`${label}: done`, "info"); if (reply.status) setState(reply.status); }
      });
      box.append(b);
    }
  }
  function drawRuns() {
    const body = document.querySelector("#runs tbody");
    const list = [...runs.values()].sort((a, b) => (b.started_at || "").localeCompare(a.started_at || ""));
    body.replaceChildren(...list.slice(0, MAX_RUNS).map((r) => el("tr", {"data-run": r.run_id},
      el("td", {}, when(r.started_at)), el("td", {}, r.symbol), el("td", {}, when(r.bar_time)),
      el("td", {}, el("span", {class: "state " + (r.status === "ok" ? "running" : r.status === "error" ? "error" : "paused")}, r.status)),
      el("td", {}, r.signal ? el("span", {class: "sig " + r.signal.type}, r.signal.type) : "—"),
      el("td", {class: "num"}, r.duration_ms ? r.duration_ms.toFixed(1) : ""),
      el("td", {class: "muted"}, r.node_id || ""),
      el("td", {}, r.error ? `${r.error.code}: ${r.error.message}` : (r.note || "")))));
    document.getElementById("runs-count").textContent = `(${runs.size})`;
  }
  function addRun(r) {
    runs.set(r.run_id, r);
    if (r.signal) addSignal(Object.assign({symbol: r.symbol}, r.signal));
  }
  function addSignal(s) {
    const key = `${s.symbol}|${s.timestamp}|${s.type}`;
    if (signals.some((x) => `${x.symbol}|${x.timestamp}|${x.type}` === key)) return false;
    if (s.type !== "BUY" && s.type !== "SELL") return false;
    signals.push(s);
    return true;
  }
  function drawChart() {
    if (!window.Plotly) return;
    const traces = [];
    for (const [symbol, bars] of Object.entries(data.bars || {})) {
      traces.push({type: "scatter", mode: "lines", name: symbol + " close",
        x: bars.t.map((ms) => new Date(ms).toISOString()), y: bars.close, line: {width: 1.2}});
    }
    for (const [type, symbol, color] of [["BUY", "triangle-up", "#1a7f45"], ["SELL", "triangle-down", "#c0322b"]]) {
      const mine = signals.filter((s) => s.type === type);
      traces.push({type: "scatter", mode: "markers", name: type, x: mine.map((s) => s.timestamp),
        y: mine.map((s) => s.price), text: mine.map((s) => `${s.symbol} ${s.reason || ""}`),
        marker: {symbol, size: 11, color}});
    }
    Plotly.react("chart", traces, {margin: {l: 50, r: 20, t: 10, b: 40}, xaxis: {type: "date"},
      legend: {orientation: "h"}, uirevision: "keep"}, {displaylogo: false, responsive: true});
    document.getElementById("chart").dataset.signals = String(signals.length);
  }
  function appendLogs(logs) {
    const pre = document.getElementById("logs");
    for (const line of logs.lines) pre.append(`${logs.bar_time} ${logs.symbol} | ${line.replace(/\n$/, "")}\n`);
    if (logs.truncated) pre.append(`(${logs.run_id}: earlier lines cut to fit the message size)\n`);
    const all = pre.textContent.split("\n");
    if (all.length > MAX_LOG_LINES) pre.textContent = all.slice(-MAX_LOG_LINES).join("\n");
    pre.scrollTop = pre.scrollHeight;
  }
  function drawState(state) {  // {symbol: state}, as deployments.state answers and KV changes follow
    document.getElementById("state-json").textContent = JSON.stringify(state || {}, null, 2);
  }
  function note(id, text) {
    const box = document.getElementById(id);
    box.textContent = text;
    box.hidden = !text;
  }
  function names(box, list, empty) {
    const target = document.getElementById(box);
    target.replaceChildren(...(list.length ? list.map((n) => el("span", {class: "tag"}, n)) : [el("span", {class: "muted"}, empty)]));
  }
  function versions() {
    const box = document.getElementById("versions");
    box.replaceChildren(el("table", {}, ...data.versions.map((v) => el("tr", {},
      el("td", {}, `v${v.version}` + (v.version === dep.version ? " (deployed)" : "")),
      el("td", {class: "muted"}, when(v.created_at)), el("td", {}, v.description || "")))));
    const a = document.getElementById("diff-a"), b = document.getElementById("diff-b");
    for (const v of data.versions) { a.append(el("option", {value: v.version}, `v${v.version}`)); b.append(el("option", {value: v.version}, `v${v.version}`)); }
    if (data.versions.length > 1) { a.value = data.versions[data.versions.length - 2].version; b.value = data.versions[data.versions.length - 1].version; }
    document.getElementById("diff-go").addEventListener("click", async () => {
      const response = await fetch(`/api/deployments/${encodeURIComponent(id)}/diff?a=${a.value}&b=${b.value}`, {credentials: "same-origin"});
      const reply = await response.json();
      const pre = document.getElementById("diff");
      pre.hidden = false;
      if (reply.error) { pre.textContent = reply.error.message; return; }
      pre.replaceChildren(...(reply.diff.length ? reply.diff : ["(no difference)"]).map((line) => el("span", {
        class: line.startsWith("+++") || line.startsWith("---") ? "file" : line.startsWith("@@") ? "hunk"
          : line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : ""}, line + "\n")));
    });
  }

  let state = data.state;
  const omitted = data.state_omitted || [];
  setState(data.status);
  actions();
  for (const r of data.runs) addRun(r);
  if (data.logs_truncated) document.getElementById("logs").append("(older lines left out to fit the message size)\n");
  if (data.logs_error) document.getElementById("logs").append(`(earlier lines not shown: ${data.logs_error})\n`);
  for (const logs of data.logs || []) appendLogs(logs);
  drawRuns();
  drawState(state);
  note("state-note", data.state_error ? `state not read: ${data.state_error}; shown from its next change on`
    : omitted.length ? `too large to show with the others: ${omitted.join(", ")} (shown from their next change on)` : "");
  names("env-names", dep.env, "none");
  names("secret-names", dep.secrets, "none");
  versions();
  // plotly.js (4.8 MB) is fetched after the page has loaded: runs, logs and state show first
  window.addEventListener("load", () => {
    const script = el("script", {src: "/static/vendor/plotly.min.js"});
    script.addEventListener("load", drawChart);
    document.head.append(script);
  });

  events(`/deployments/${encodeURIComponent(id)}/events`, {
    ready: () => document.body.dataset.live = "ready",
    status: (st) => { if (!st.deleted) setState(st); },
    run: (r) => { addRun(r); drawRuns(); drawChart(); },
    logs: appendLogs,
    signal: (s) => { if (addSignal(s)) drawChart(); },
    state: (s) => {
      state = Object.assign({}, state || {}, {[s.symbol]: s.state});
      drawState(state);
    },
    bars: (b) => {  // new closes of a symbol (bars.<timeframe>.<symbol>, every user)
      const series = (data.bars = data.bars || {})[b.symbol] || (data.bars[b.symbol] = {t: [], close: []});
      const last = series.t.length ? series.t[series.t.length - 1] : -Infinity;
      b.t.forEach((t, i) => { if (t > last) { series.t.push(t); series.close.push(b.close[i]); } });
      drawChart();
    },
  });
})();
