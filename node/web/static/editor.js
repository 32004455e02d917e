/* The Strategies page: CodeMirror 5 (vendored, Python mode), validate as you type (debounced),
 * the error's line marked (line class + gutter marker) with its message, save a new version,
 * deploy a version. Every POST carries the session's CSRF token in X-CSRF-Token. */
(function () {
  "use strict";

  var root = document.getElementById("strategy-editor");
  if (!root) { return; }
  var csrf = root.getAttribute("data-csrf") || "";
  var VALIDATE_DELAY_MS = 400;
  var GUTTER = "validation-gutter";

  var textarea = document.getElementById("code");
  var statusBox = document.getElementById("validation-status");
  var saveStatus = document.getElementById("save-status");
  var deployStatus = document.getElementById("deploy-status");
  var nameInput = document.getElementById("strategy-name");
  var versionSelect = document.getElementById("deploy-version");

  var cm = CodeMirror.fromTextArea(textarea, {
    mode: "python",
    lineNumbers: true,
    indentUnit: 4,
    tabSize: 4,
    indentWithTabs: false,
    gutters: ["CodeMirror-linenumbers", GUTTER],
    extraKeys: {
      Tab: function (ed) { ed.replaceSelection("    "); },
      "Ctrl-S": function () { document.getElementById("save-form").requestSubmit(); },
      "Cmd-S": function () { document.getElementById("save-form").requestSubmit(); }
    }
  });
  window.strategyEditor = cm; // for tests and the console

  var markedLine = null;

  function clearMark() {
    if (markedLine === null) { return; }
    cm.removeLineClass(markedLine, "wrap", "cm-error-line");
    cm.setGutterMarker(markedLine, GUTTER, null);
    markedLine = null;
  }

  function markLine(line, message) {
    clearMark();
    if (!line || line < 1 || line > cm.lineCount()) { return; }
    var handle = cm.getLineHandle(line - 1);
    var marker = document.createElement("span");
    marker.className = "error-marker";
    marker.textContent = "\u25CF";
    marker.title = message;
    cm.addLineClass(handle, "wrap", "cm-error-line");
    cm.setGutterMarker(handle, GUTTER, marker);
    markedLine = handle;
  }

  function describe(error) {
    var named = error.line && String(error.message).indexOf("line " + error.line) >= 0;
    var where = error.line && !named ? " (line " + error.line + ")" : "";
    return error.code + where + ": " + error.message;
  }

  function show(box, state, text) {
    box.setAttribute("data-state", state);
    box.textContent = text;
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().catch(function () {
        return { ok: false, error: { code: "HTTP_" + response.status, message: response.statusText || "no answer" } };
      });
    }, function (err) {
      return { ok: false, error: { code: "NETWORK", message: String(err) } };
    });
  }

  // -- validate as you type --------------------------------------------------------------
  var timer = null;
  var sent = 0;

  function validate() {
    var ticket = ++sent;
    var code = cm.getValue();
    show(statusBox, "checking", "checking\u2026");
    if (!code.trim()) { clearMark(); show(statusBox, "empty", "empty"); return Promise.resolve(null); }
    return post("/strategies/validate", { code: code }).then(function (reply) {
      if (ticket !== sent) { return reply; } // an older answer: a newer check is on its way
      applyValidation(reply);
      return reply;
    });
  }

  function applyValidation(reply) {
    if (reply.ok && reply.valid) {
      clearMark();
      var imports = reply.imports && reply.imports.length ? reply.imports.join(", ") : "none";
      show(statusBox, "valid", "valid \u2014 " + reply.style + " style; imports: " + imports);
      statusBox.removeAttribute("data-line");
    } else {
      var error = reply.error || { code: "INVALID_REQUEST", message: "not valid" };
      markLine(error.line, describe(error));
      show(statusBox, "invalid", describe(error));
      if (error.line) { statusBox.setAttribute("data-line", String(error.line)); }
      else { statusBox.removeAttribute("data-line"); }
    }
  }

  cm.on("change", function () {
    if (timer !== null) { clearTimeout(timer); }
    timer = setTimeout(function () { timer = null; validate(); }, VALIDATE_DELAY_MS);
  });

  // -- save a new version ----------------------------------------------------------------
  document.getElementById("save-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var name = nameInput.value.trim();
    show(saveStatus, "saving", "saving\u2026");
    post("/strategies/save", {
      name: name,
      code: cm.getValue(),
      description: document.getElementById("strategy-description").value
    }).then(function (reply) {
      if (!reply.ok) {
        var error = reply.error || { code: "INVALID_REQUEST", message: "not saved" };
        applyValidation({ ok: false, error: error });
        show(saveStatus, "error", "not saved: " + describe(error));
        return;
      }
      clearMark();
      var s = reply.strategy;
      show(saveStatus, "saved", "saved " + s.name + " version " + s.version + " (" + s.style + " style)");
      root.setAttribute("data-name", s.name);
      root.setAttribute("data-version", String(s.version));
      var option = document.createElement("option");
      option.value = String(s.version);
      option.textContent = "v" + s.version + " (new)";
      versionSelect.insertBefore(option, versionSelect.firstChild);
      versionSelect.value = String(s.version);
      listStrategy(s);
      document.getElementById("deploy-strategy").value = s.name;
      document.getElementById("deploy-section").hidden = false;
      if (window.history && window.history.replaceState) { window.history.replaceState(null, "", reply.url); }
    });
  });

  // The saved strategy in the list on the left (new names appear without a reload).
  function listStrategy(s) {
    var list = document.getElementById("strategy-list");
    if (!list) {
      list = document.createElement("ul");
      list.className = "strategy-list";
      list.id = "strategy-list";
      var empty = document.getElementById("no-strategies");
      empty.parentNode.replaceChild(list, empty);
    }
    var item = Array.prototype.filter.call(list.children, function (li) { return li.getAttribute("data-name") === s.name; })[0];
    if (!item) {
      item = document.createElement("li");
      item.setAttribute("data-name", s.name);
      var link = document.createElement("a");
      link.href = "/strategies?name=" + encodeURIComponent(s.name);
      link.textContent = s.name;
      item.appendChild(link);
      item.appendChild(document.createTextNode(" "));
      item.appendChild(document.createElement("span"));
      list.appendChild(item);
    }
    var note = item.querySelector("span");
    note.className = "muted";
    note.textContent = "v" + s.version + " \u00b7 " + s.style;
  }

  // -- deploy ----------------------------------------------------------------------------
  document.getElementById("deploy-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var link = document.getElementById("deployment-link");
    link.hidden = true;
    var params = document.getElementById("deploy-parameters").value.trim();
    var parameters = {};
    if (params) {
      try { parameters = JSON.parse(params); } catch (e) {
        show(deployStatus, "error", "parameters: not a JSON object: " + e.message);
        return;
      }
    }
    var version = versionSelect.value ? parseInt(versionSelect.value, 10) : null;
    show(deployStatus, "deploying", "deploying\u2026");
    post("/strategies/deploy", {
      id: document.getElementById("deploy-id").value.trim(),
      strategy: document.getElementById("deploy-strategy").value,
      version: version,
      symbols: document.getElementById("deploy-symbols").value,
      timeframe: document.getElementById("deploy-timeframe").value.trim(),
      parameters: parameters
    }).then(function (reply) {
      if (!reply.ok) {
        show(deployStatus, "error", "not deployed: " + describe(reply.error || { code: "INVALID_REQUEST", message: "refused" }));
        return;
      }
      show(deployStatus, "deployed", "deployed " + reply.deployment);
      link.href = reply.url;
      link.textContent = "open deployment " + reply.deployment;
      link.hidden = false;
    });
  });

  if (cm.getValue().trim()) { validate(); }
})();
