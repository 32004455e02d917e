// Fleet page: nodes ($SRV.INFO/$SRV.STATS), isolation layers, pool, backlogs. Refresh on demand.
"use strict";
(function () {
  const {el, pageData} = window.sn;

  function node(n) {
    const h = n.health;
    const card = el("div", {class: "card node", "data-node": n.node_id});
    card.append(el("h2", {}, n.node_id || n.id, " ", el("span", {class: "muted"}, `v${n.version} · ${n.environment || ""}`),
      " ", h ? el("span", {class: "state " + (h.status === "ok" ? "running" : "paused")}, h.status) : ""));
    const dl = el("dl", {class: "kv"});
    const add = (k, v) => dl.append(el("dt", {}, k), el("dd", {}, v));
    add("Requests", `${n.requests} · errors ${n.errors}`);
    if (h) {
      add("Uptime", `${Math.round(h.uptime_s)} s · NATS ${h.nats_connected ? "connected" : "disconnected"}`);
      add("Pool", `ready ${h.pool.ready} · busy ${h.pool.busy} · target ${h.pool.target} · started ${h.pool.started}` +
        ` · ${h.pool.healthy ? "healthy" : "UNHEALTHY"}` + (h.pool.warm_workers ? ` · warm ${h.pool.warm_workers}` : ""));
      add("In flight", `${h.in_flight} · queued ${h.queued} (max workers ${h.limits.max_workers}, queue ${h.limits.max_queue})`);
      if (h.jobs) add("Jobs", `${h.jobs.state} · running ${h.jobs.running} · done ${h.jobs.completed} · retried ${h.jobs.retried} · dead ${h.jobs.dead_lettered}`);
      const layers = el("div", {class: "layers"}, ...h.isolation.map((l) => el("span", {
        class: "tag " + (l.active ? "on" : "off"), title: l.detail}, (l.active ? "✔ " : "✘ ") + l.name)));
      add("Isolation", layers);
    } else {
      add("Health", el("span", {class: "muted"}, "not answered for this node"));
    }
    card.append(dl);
    if (n.endpoints.length) {
      card.append(el("table", {}, el("tr", {}, el("th", {}, "Endpoint"), el("th", {class: "num"}, "Requests"),
        el("th", {class: "num"}, "Errors"), el("th", {class: "num"}, "Avg ms")),
        ...n.endpoints.map((e) => el("tr", {}, el("td", {}, e.subject), el("td", {class: "num"}, e.requests),
          el("td", {class: "num"}, e.errors), el("td", {class: "num"}, e.average_ms)))));
    }
    return card;
  }
  function draw(data) {
    document.getElementById("node-count").textContent = `(${data.nodes.length} node${data.nodes.length === 1 ? "" : "s"})`;
    document.getElementById("nodes").replaceChildren(...(data.nodes.length ? data.nodes.map(node)
      : [el("p", {class: "muted"}, "No node answered $SRV.INFO.strategy-exec.")]));
    document.querySelector("#backlog tbody").replaceChildren(...data.backlog.map((b) => el("tr", {"data-stream": b.stream},
      el("td", {}, b.what), el("td", {}, `${b.stream} / ${b.consumer}`),
      ...(b.unavailable ? [el("td", {colSpan: 4, class: "muted"}, b.unavailable)]
        : [b.pending, b.ack_pending, b.redelivered, b.waiting].map((v) => el("td", {class: "num"}, v))))));
  }
  draw(pageData());
  document.getElementById("refresh").addEventListener("click", async () => {
    const response = await fetch("/api/fleet", {credentials: "same-origin"});
    if (response.ok) draw(await response.json());
  });
})();
