// Shared browser helpers of the dashboard: CSRF-carrying POSTs and Server-Sent Events.
"use strict";
(function () {
  function csrf() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }
  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf()},
      body: JSON.stringify(body || {}),
    });
    let data = null;
    try { data = await response.json(); } catch (e) { data = {error: response.statusText}; }
    if (!response.ok && data && !data.error) data.error = response.statusText;
    return Object.assign({status: response.status}, data);
  }
  // Follow an SSE stream: on is {eventName: fn(data)}; "message" for unnamed events.
  function events(url, on) {
    const source = new EventSource(url);
    for (const [name, fn] of Object.entries(on)) {
      source.addEventListener(name, (e) => fn(JSON.parse(e.data)));
    }
    source.onopen = () => document.body.classList.add("live");
    source.onerror = () => document.body.classList.remove("live");
    return source;
  }
  function pageData(id) {
    const el = document.getElementById(id || "page-data");
    return el ? JSON.parse(el.textContent) : null;
  }
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else if (k.startsWith("data-")) node.setAttribute(k, v); else node[k] = v;
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }
  function flash(text, kind) {
    const box = document.getElementById("flash");
    if (!box) return;
    box.textContent = text;
    box.className = "flash " + (kind || "info");
  }
  window.sn = {csrf, post, events, pageData, el, flash};
})();
