// Keel database insight dashboard. The access token lives in this closure only (never in
// storage or a cookie) and goes out as a bearer header; values are written as text nodes.
"use strict";
(() => {
  const API = "/api/v1/admin/db";
  const body = document.body;
  const base = body.dataset.base;
  let token = null;
  let page = body.dataset.page;
  const charts = {};

  const $ = (id) => document.getElementById(id);
  const el = (tag, text, cls) => {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  };
  const setStatus = (text, cls) => {
    const status = $("status");
    status.textContent = text || "";
    status.className = cls || "";
  };
  const fmt = (value) => {
    if (value === null || value === undefined) return "";
    if (typeof value === "number") {
      return Number.isInteger(value) ? value.toLocaleString("en") : value.toFixed(2);
    }
    if (Array.isArray(value)) return value.join(", ");
    return String(value);
  };
  const bytes = (n) => {
    if (n === null || n === undefined) return "";
    const units = ["B", "kB", "MB", "GB", "TB"];
    let i = 0;
    let v = Number(n);
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
  };

  async function api(path, options = {}) {
    const response = await fetch(API + path, {
      ...options,
      headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
      credentials: "omit",
      cache: "no-store",
    });
    if (response.status === 401) { signOut("Your session ended: sign in again."); throw new Error("401"); }
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
      throw new Error(`${response.status}: ${detail}`);
    }
    return response.status === 204 ? null : response.json();
  }

  // A table from rows; `columns` is [key, label, formatter?]; `extra(row, tr)` may add cells.
  function table(rows, columns, extra) {
    if (!rows || rows.length === 0) return el("p", "None.", "empty");
    const t = el("table");
    const head = el("tr");
    for (const [, label] of columns) head.appendChild(el("th", label));
    if (extra) head.appendChild(el("th", ""));
    t.appendChild(el("thead")).appendChild(head);
    const tbody = t.appendChild(el("tbody"));
    for (const row of rows) {
      const tr = el("tr");
      for (const [key, , format] of columns) {
        const value = (format || fmt)(row[key]);
        const long = value.length > 300;
        const cell = el("td", long ? `${value.slice(0, 300)}…` : value);
        if (long) cell.title = value;
        if (key === "query" || key === "definition") cell.className = "sql";
        tr.appendChild(cell);
      }
      if (extra) extra(row, tr);
      tbody.appendChild(tr);
    }
    return t;
  }
  const fill = (id, node) => { const target = $(id); target.replaceChildren(node); };

  function lineChart(id, labels, datasets) {
    if (typeof Chart === "undefined") return;
    if (charts[id]) charts[id].destroy();
    charts[id] = new Chart($(id), {
      type: "line",
      data: { labels, datasets },
      options: { animation: false, responsive: false, interaction: { mode: "index", intersect: false },
        scales: { y: { beginAtZero: true }, y1: { beginAtZero: true, position: "right", grid: { drawOnChartArea: false } } } },
    });
  }
  const when = (iso) => new Date(iso).toLocaleString("en-GB", { dateStyle: "short", timeStyle: "short" });

  const views = {
    async overview() {
      const data = await api("/overview");
      $("view-overview").querySelector("[data-field=overview-meta]").textContent =
        `${data.database} on PostgreSQL ${data.server_version}: ${data.status}`;
      const list = el("div");
      for (const check of data.checks) {
        const card = el("article", null, `check status-${check.status}`);
        card.dataset.check = check.name;
        card.appendChild(el("h3", check.title));
        card.appendChild(el("p", check.status.toUpperCase(), "badge"));
        card.appendChild(el("p", `${fmt(check.value)} ${check.unit}`, "value"));
        card.appendChild(el("p", check.threshold, "threshold"));
        card.appendChild(el("p", check.advice, "advice"));
        if (check.details.length) {
          const ul = el("ul", null, "details");
          for (const d of check.details.slice(0, 10)) {
            ul.appendChild(el("li", d.index || d.table || d.sequence || d.slot_name || JSON.stringify(d)));
          }
          card.appendChild(ul);
        }
        list.appendChild(card);
      }
      fill("checks", list);
    },
    async queries() {
      const order = $("query-order").value;
      const data = await api(`/queries?order=${encodeURIComponent(order)}&limit=25`);
      $("view-queries").querySelector("[data-field=queries-meta]").textContent = data.available
        ? `${data.snapshots} snapshots stored${data.latest_snapshot ? `, latest ${when(data.latest_snapshot)}` : ""}`
        : "pg_stat_statements is not installed in this database.";
      fill("queries-table", table(data.queries, [
        ["calls", "Calls"], ["total_ms", "Total ms"], ["mean_ms", "Mean ms"], ["rows", "Rows"],
        ["hit_ratio", "Hit ratio"], ["wal_bytes", "WAL", bytes], ["temp_blocks", "Temp blocks"],
        ["query", "Query"],
      ], (row, tr) => {
        const button = el("button", "Chart", "chart-query");
        button.type = "button";
        button.addEventListener("click", () => showHistory(row.queryid, row.query));
        tr.appendChild(el("td")).appendChild(button);
      }));
    },
    async activity() {
      const data = await api("/activity");
      $("view-activity").querySelector("[data-field=activity-meta]").textContent =
        data.connections_by_state.map((s) => `${s.state}: ${s.connections}`).join(" · ");
      fill("blocking-tree", tree(data.blocking_tree));
      fill("activity-table", table(data.backends, [
        ["pid", "PID"], ["user", "User"], ["application_name", "Application"], ["state", "State"],
        ["wait_event", "Wait"], ["query_seconds", "Query s"], ["transaction_seconds", "Transaction s"],
        ["blocked_by", "Blocked by"], ["query", "Query"],
      ], (row, tr) => {
        const cell = tr.appendChild(el("td", null, "actions"));
        for (const action of ["cancel", "terminate"]) {
          const button = el("button", action === "cancel" ? "Cancel" : "Terminate", action);
          button.type = "button";
          button.dataset.pid = row.pid;
          button.addEventListener("click", () => signal(row.pid, action));
          cell.appendChild(button);
        }
      }));
    },
    async space() {
      const data = await api("/space");
      $("view-space").querySelector("[data-field=space-meta]").textContent =
        `Database: ${bytes(data.database_bytes)} · bloat by ${data.bloat_method}`;
      const db = data.growth.find((g) => g.relation === "");
      if (db) {
        lineChart("growth-chart", db.points.map((p) => when(p.captured_at)),
          [{ label: "database size (MB)", data: db.points.map((p) => p.bytes / 1048576) }]);
      }
      fill("space-tables", table(data.tables, [
        ["table", "Table"], ["total_bytes", "Total", bytes], ["table_bytes", "Heap", bytes],
        ["index_bytes", "Indexes", bytes], ["toast_bytes", "TOAST", bytes], ["estimated_rows", "Rows"],
      ]));
      fill("space-indexes", table(data.indexes, [["index", "Index"], ["table", "Table"], ["bytes", "Size", bytes]]));
      fill("space-table-bloat", table(data.table_bloat, [
        ["table", "Table"], ["bytes", "Size", bytes], ["bloat_bytes", "Bloat", bytes],
        ["dead_tuple_percent", "Dead %"], ["method", "Method"],
      ]));
      fill("space-index-bloat", table(data.index_bloat, [["index", "Index"], ["bytes", "Size", bytes], ["bloat_bytes", "Bloat", bytes]]));
    },
    async indexes() {
      const data = await api("/indexes");
      $("view-indexes").querySelector("[data-field=indexes-meta]").textContent =
        data.stats_since ? `Scan counts since ${when(data.stats_since)}` : "Scan counts since the server started";
      const cols = [["index", "Index"], ["table", "Table"], ["bytes", "Size", bytes], ["definition", "Definition"]];
      fill("indexes-invalid", table(data.invalid, cols));
      fill("indexes-duplicate", table(data.duplicate, [...cols, ["same_as", "Same as"]]));
      fill("indexes-redundant", table(data.redundant, [...cols, ["covered_by", "Covered by"]]));
      fill("indexes-unused", table(data.unused, cols));
      fill("indexes-missing", table(data.missing_candidates, [
        ["table", "Table"], ["seq_scans", "Seq scans"], ["rows_read", "Rows read"],
        ["rows_per_scan", "Rows / scan"], ["index_scans", "Index scans"],
      ]));
    },
    async io() {
      const data = await api("/io");
      $("view-io").querySelector("[data-field=io-meta]").textContent =
        `pg_stat_io (server ${data.server_version_num})`;
      fill("io-table", table(data.rows, [
        ["backend_type", "Backend"], ["object", "Object"], ["context", "Context"], ["reads", "Reads"],
        ["read_bytes", "Read", bytes], ["writes", "Writes"], ["write_bytes", "Written", bytes],
        ["extends", "Extends"], ["hits", "Hits"], ["evictions", "Evictions"], ["fsyncs", "Fsyncs"],
        ["read_ms", "Read ms"], ["write_ms", "Write ms"],
      ]));
    },
    async settings() {
      const data = await api("/settings");
      $("view-settings").querySelector("[data-field=settings-meta]").textContent =
        `${bytes(data.memory_bytes)} RAM · ${data.cpus} CPUs · Keel opens up to ${data.connections_needed} connections per process`;
      fill("settings-table", table(data.settings, [
        ["name", "Setting"], ["current", "Current"], ["recommended", "Recommended"],
        ["status", "Status"], ["why", "Why"],
      ]));
    },
  };

  function tree(nodes) {
    if (!nodes.length) return el("p", "Nothing is blocked.", "empty");
    const ul = el("ul", null, "tree");
    for (const node of nodes) {
      const li = el("li", `${node.pid} (${node.state || "?"}${node.wait_event ? `, ${node.wait_event}` : ""}): `);
      li.dataset.pid = node.pid;
      li.appendChild(el("code", node.query || ""));
      if (node.blocked.length) li.appendChild(tree(node.blocked));
      ul.appendChild(li);
    }
    return ul;
  }

  async function showHistory(queryid, query) {
    const data = await api(`/queries/${encodeURIComponent(queryid)}/history?days=30`);
    $("history-box").hidden = false;
    $("history-title").textContent = query;
    lineChart("history-chart", data.points.map((p) => when(p.captured_at)), [
      { label: "calls", data: data.points.map((p) => p.calls), yAxisID: "y" },
      { label: "mean ms", data: data.points.map((p) => p.mean_ms), yAxisID: "y1" },
    ]);
  }

  async function signal(pid, action) {
    try {
      const result = await api(`/activity/${encodeURIComponent(pid)}/${action}`, { method: "POST" });
      setStatus(`${action} ${pid}: ${result.signalled ? "done" : "not signalled"}`, "ok");
    } catch (error) {
      setStatus(error.message, "error");
    }
    await show(page, false);
  }

  async function show(slug, push) {
    page = slug in views ? slug : "overview";
    for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== `view-${page}`;
    for (const link of document.querySelectorAll("#nav a")) {
      link.classList.toggle("current", link.dataset.page === page);
    }
    const path = page === "overview" ? base : `${base}/${page}`;
    if (push && location.pathname !== path) history.pushState({ page }, "", path);
    body.dataset.loaded = "";
    try {
      await views[page]();
      body.dataset.loaded = page;
    } catch (error) {
      if (error.message !== "401") setStatus(error.message, "error");
    }
  }

  function signOut(message) {
    token = null;
    $("nav").hidden = true;
    $("views").hidden = true;
    $("sign-in").hidden = false;
    $("sign-in-error").textContent = message || "";
  }

  $("sign-in").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const response = await fetch("/api/v1/auth/login", {
      method: "POST",
      body: new URLSearchParams({ username: form.get("username"), password: form.get("password") }),
      credentials: "omit",
    });
    if (!response.ok) { $("sign-in-error").textContent = "Sign-in failed."; return; }
    token = (await response.json()).access_token;
    event.target.reset();
    const probe = await fetch(`${API}/overview`, { headers: { Authorization: `Bearer ${token}` } });
    if (probe.status === 403) { signOut("This account is not an administrator."); return; }
    $("sign-in").hidden = true;
    $("nav").hidden = false;
    $("views").hidden = false;
    await show(page, false);
  });
  for (const link of document.querySelectorAll("#nav a")) {
    link.addEventListener("click", (event) => {
      event.preventDefault();
      setStatus("");
      show(link.dataset.page, true);
    });
  }
  window.addEventListener("popstate", (event) => show((event.state && event.state.page) || "overview", false));
  $("refresh").addEventListener("click", () => show(page, false));
  $("sign-out").addEventListener("click", () => signOut("Signed out."));
  $("query-order").addEventListener("change", () => show("queries", false));
  $("reset-queries").addEventListener("click", async () => {
    await api("/queries/reset", { method: "POST" }).catch((e) => setStatus(e.message, "error"));
    await show("queries", false);
  });
  $("snapshot-now").addEventListener("click", async () => {
    await api("/snapshots", { method: "POST" }).then(() => setStatus("Snapshot queued.", "ok"))
      .catch((e) => setStatus(e.message, "error"));
  });
})();
