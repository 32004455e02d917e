/* The Backtest page: pick a strategy version and a series from BARS, run it (optionally over a
 * grid), follow its progress on the run's SSE stream, then show node/report.py's report (and
 * the sweep heatmap) in the page. POSTs carry the CSRF token in X-CSRF-Token. */
(function () {
  "use strict";

  var root = document.getElementById("backtest");
  if (!root) { return; }
  var csrf = root.getAttribute("data-csrf") || "";
  var data = JSON.parse(document.getElementById("backtest-data").textContent);

  var form = document.getElementById("backtest-form");
  var strategySelect = document.getElementById("bt-strategy");
  var versionSelect = document.getElementById("bt-version");
  var seriesSelect = document.getElementById("bt-series");
  var symbolInput = document.getElementById("bt-symbol");
  var timeframeInput = document.getElementById("bt-timeframe");
  var startInput = document.getElementById("bt-start");
  var endInput = document.getElementById("bt-end");
  var statusBox = document.getElementById("run-status");
  var bar = document.getElementById("run-progress");
  var report = document.getElementById("report");
  var PLOT_CONFIG = { displaylogo: false, responsive: true, scrollZoom: true };
  var runButton = document.getElementById("bt-run");
  var source = null;

  function fillVersions() {
    versionSelect.innerHTML = "";
    var chosen = data.strategies.filter(function (s) { return s.name === strategySelect.value; })[0];
    if (!chosen) { return; }
    chosen.versions.forEach(function (v) {
      var option = document.createElement("option");
      option.value = String(v);
      option.textContent = "v" + v + (v === chosen.latest ? " (latest)" : "");
      versionSelect.appendChild(option);
    });
  }

  function fillRange() {
    if (!seriesSelect) { return; }
    var s = data.series[parseInt(seriesSelect.value, 10)];
    if (!s) { return; }
    symbolInput.value = s.symbol;
    timeframeInput.value = s.timeframe;
    startInput.value = s.first;
    endInput.value = s.last;
  }

  strategySelect.addEventListener("change", fillVersions);
  if (seriesSelect) { seriesSelect.addEventListener("change", fillRange); }
  fillVersions();
  fillRange();

  function show(state, text) {
    statusBox.setAttribute("data-state", state);
    statusBox.textContent = text;
  }

  function describe(error) {
    var named = error.line && String(error.message).indexOf("line " + error.line) >= 0;
    var where = error.line && !named ? " (line " + error.line + ")" : "";
    return error.code + where + ": " + error.message;
  }

  function number(id, fallback) {
    var v = document.getElementById(id).value.trim();
    return v === "" ? fallback : Number(v);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (source) { source.close(); source = null; }
    var params = document.getElementById("bt-parameters").value.trim();
    var parameters = {};
    if (params) {
      try { parameters = JSON.parse(params); } catch (e) { show("error", "parameters: not a JSON object: " + e.message); return; }
    }
    var body = {
      strategy: strategySelect.value,
      version: versionSelect.value ? parseInt(versionSelect.value, 10) : null,
      symbol: symbolInput.value.trim(),
      timeframe: timeframeInput.value.trim(),
      start: startInput.value.trim(),
      end: endInput.value.trim(),
      parameters: parameters,
      grid: document.getElementById("bt-grid").value.trim(),
      rank_by: document.getElementById("bt-rank-by").value,
      mode: document.getElementById("bt-mode").value,
      cash: number("bt-cash", 10000),
      commission: number("bt-commission", 0),
      allow_short: document.getElementById("bt-allow-short").checked
    };
    report.hidden = true;
    report.innerHTML = "";
    bar.value = 0;
    bar.max = 1;
    bar.hidden = false;
    runButton.disabled = true;
    show("starting", "starting\u2026");
    fetch("/backtest/run", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().catch(function () {
        return { ok: false, error: { code: "HTTP_" + response.status, message: response.statusText || "no answer" } };
      });
    }).then(function (reply) {
      if (!reply.ok) {
        runButton.disabled = false;
        bar.hidden = true;
        show("error", describe(reply.error));
        return;
      }
      show("running", reply.points > 1 ? "sweep of " + reply.points + " points queued" : "backtest queued");
      // the run in the address: a reload (or the back button) follows it again and shows its report
      if (window.history && window.history.replaceState) {
        window.history.replaceState(null, "", "/backtest?run=" + encodeURIComponent(reply.run));
      }
      follow(reply);
    }, function (err) {
      runButton.disabled = false;
      show("error", "NETWORK: " + err);
    });
  });

  // node/report.py's report: its HTML (values escaped there) with each figure as a JSON data
  // block, drawn here with the page's plotly.js (the CSP runs no inline script).
  function showReport(url) {
    fetch(url, { credentials: "same-origin" }).then(function (response) {
      return response.text().then(function (text) { return { ok: response.ok, text: text }; });
    }).then(function (answer) {
      if (!answer.ok) {
        var error = { code: "HTTP", message: answer.text };
        try { error = JSON.parse(answer.text).error || error; } catch (e) { /* not JSON */ }
        show("failed", "report: " + describe(error));
        return;
      }
      report.innerHTML = answer.text;
      report.hidden = false;
      var blocks = report.querySelectorAll(".report-figure");
      Array.prototype.forEach.call(blocks, function (box) {
        var fig = JSON.parse(box.querySelector("script[type='application/json']").textContent);
        var div = document.createElement("div");
        box.appendChild(div);
        Plotly.newPlot(div, fig.data || [], fig.layout || {}, PLOT_CONFIG);
      });
      report.setAttribute("data-figures", String(blocks.length));
      report.setAttribute("data-ready", "1");
    }, function (err) {
      show("failed", "report: NETWORK: " + err);
    });
  }

  function follow(run) {
    source = new EventSource(run.events);
    source.addEventListener("progress", function (e) {
      var p = JSON.parse(e.data);
      bar.max = Math.max(1, p.total);
      bar.value = p.done;
      var what = p.stage === "best" ? "backtesting the best point in full"
        : (p.stage === "sweep" ? p.done + " / " + p.total + " grid points" : (p.done ? "done" : "running"));
      show("running", what);
    });
    source.addEventListener("done", function (e) {
      source.close();
      source = null;
      runButton.disabled = false;
      var result = JSON.parse(e.data).summary || {};
      bar.value = bar.max;
      var text = result.success ? "done" : "finished with errors";
      if (result.points !== undefined) { text += " \u2014 " + result.ran + " of " + result.points + " points ran"; }
      if (result.error) { text += " \u2014 " + describe(result.error); }
      show(result.success ? "done" : "failed", text);
      showReport(run.report);
    });
    source.addEventListener("failed", function (e) {
      source.close();
      source = null;
      runButton.disabled = false;
      show("failed", describe(JSON.parse(e.data).error));
    });
    source.onerror = function () {
      if (source && source.readyState === EventSource.CLOSED) {
        runButton.disabled = false;
        show("failed", "the progress stream closed");
      }
    };
  }
  // A run named in the address (see above): follow it; its stored results answer at once.
  var named = new URLSearchParams(window.location.search).get("run");
  if (named) {
    bar.hidden = false;
    runButton.disabled = true;
    show("running", "following the run\u2026");
    follow({ events: "/backtest/runs/" + named + "/events", report: "/backtest/runs/" + named + "/report" });
  }
})();
