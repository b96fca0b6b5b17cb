// @ts-check
/**
 * The dashboard page's script (served as /app.js, an ES module; checked by tsc through
 * src/fleet/dashboard/tsconfig.json against the server's own types). It builds the DOM with
 * textContent (node names, errors and logs come from KV: never parsed as HTML), listens to
 * `/api/events` (EventSource reconnects by itself), and turns timestamps into ages every second,
 * corrected by the server's clock. The words for ages, statuses and attention come from the fleet
 * view's own format.js (served as /format.js); sizes come preformatted in the state.
 */
import { attention, formatAge, formatTook, statusText } from "./format.js"; // ../format.ts, served as /format.js

/** @typedef {import("./state.ts").DashboardState} DashboardState */
/** @typedef {import("./state.ts").DashboardRole} DashboardRole */
/** @typedef {import("../view.ts").FleetRow} FleetRow */
/** @typedef {import("../view.ts").FleetCounts} FleetCounts */
/** @typedef {string | Node | null | undefined | false} Child */

/** @type {DashboardState | null} */
let state = null;
let skew = 0; // server clock minus ours, from the state's generated_at
/** @type {Record<string, boolean>} "role/node" -> true: log rows left open across updates */
const open = {};
let lastUpdate = 0;

/**
 * An element with properties (`text`, `class`, `on…` listeners, attributes) and children.
 * @param {string} tag
 * @param {Record<string, unknown>} [props]
 * @param {Child[]} [children]
 * @returns {HTMLElement}
 */
function h(tag, props, children) {
  const el = document.createElement(tag);
  if (props) {
    for (const k in props) {
      const v = props[k];
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") el.textContent = String(v);
      else if (k === "class") el.className = String(v);
      else if (k.slice(0, 2) === "on") el.addEventListener(k.slice(2), /** @type {EventListener} */ (v));
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  for (const c of children || []) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return el;
}

/** @param {number | null} ms */
function ageText(ms) {
  if (ms === null || Number.isNaN(ms)) return "–";
  return `${formatAge(Math.max(0, ms))} ago`;
}
/** @param {string} iso */
function since(iso) {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : Date.now() + skew - t;
}
/**
 * An element whose text is the age of iso, kept current by tick().
 * @param {string | null | undefined} iso
 * @param {string} [prefix]
 */
function age(iso, prefix) {
  return h("span", {
    "data-ts": iso || "",
    "data-prefix": prefix || "",
    text: (prefix || "") + ageText(iso ? since(iso) : null),
  });
}
/**
 * A release id starts with its UTC time: 20260301T115000Z-…
 * @param {string | null} id
 */
function idTime(id) {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z/.exec(id || "");
  return m ? `${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}Z` : null;
}

/** @param {FleetCounts} c */
function pills(c) {
  /** @type {HTMLElement[]} */
  const out = [];
  /** @param {number} n @param {string} text @param {string} cls */
  const add = (n, text, cls) => {
    if (n > 0) out.push(h("span", { class: `pill ${cls}`, text: `${n} ${text}` }));
  };
  add(c.on_latest, "on latest", "ok");
  add(c.deploying, "deploying", "run");
  add(c.failure, "failed", "bad");
  add(c.behind, "on an older release", "warn");
  add(c.never_reported, "never reported", "warn");
  add(c.not_in_catalog, "not in catalog", "warn");
  return out;
}

/** @param {DashboardRole} role */
function latestBox(role) {
  const l = role.latest;
  /** @type {Child[]} */
  const kids = [h("div", { class: "label", text: "Latest release" })];
  if (l) {
    kids.push(h("div", { class: "rid", "data-testid": "latest-id", text: l.id }));
    /** @type {Child[]} */
    const meta = ["published ", age(l.created_at)];
    if (l.publisher) meta.push(` by ${l.publisher}`);
    if (l.message) {
      meta.push(" · ");
      meta.push(h("span", { class: "msg", text: `“${l.message}”` }));
    }
    if (role.latest_size_text !== null)
      meta.push(` · ${role.latest_size_text}${l.files !== null && l.files !== undefined ? `, ${l.files} files` : ""}`);
    kids.push(h("div", { class: "meta" }, meta));
    if (role.rollout_lines)
      kids.push(h("div", { class: "meta rollout", "data-testid": "rollout", text: role.rollout_lines.join("\n") }));
  } else {
    kids.push(h("div", { class: "rid none", text: "No release recorded yet" }));
    kids.push(h("div", { class: "meta", text: `${role.prefix}/roles/${role.role}/latest is empty` }));
  }
  // Progress over the catalog's nodes only: a report from a node gone from the catalog is not part of the rollout.
  const members = role.rows.filter((r) => r.in_catalog);
  const total = members.length;
  /** @param {(r: FleetRow) => boolean} f */
  const count = (f) => members.filter(f).length;
  const onLatest = count((r) => r.on_latest);
  if (l && total > 0) {
    const bar = h("div", { class: "progress", title: `${onLatest} of ${total} nodes on the latest release` });
    /** @type {[string, number][]} */
    const parts = [
      ["ok", onLatest],
      ["run", count((r) => r.status === "deploying")],
      ["bad", count((r) => r.status === "failure")],
    ];
    for (const [cls, n] of parts) {
      if (n <= 0) continue;
      const s = h("span", { class: cls });
      s.style.width = `${(100 * n) / total}%`;
      bar.appendChild(s);
    }
    kids.push(
      h("div", { class: "progress-wrap" }, [
        h("div", { class: "progress-text" }, [h("b", { text: `${onLatest} / ${total}` }), " nodes on latest"]),
        bar,
      ]),
    );
  }
  const earlier = (role.recent_releases || []).filter((r) => !l || r.id !== l.id).slice(0, 3);
  if (earlier.length) {
    /** @type {Child[]} */
    const hist = [h("span", { text: "Earlier: " })];
    earlier.forEach((r, i) => {
      if (i) hist.push(" · ");
      hist.push(h("code", { text: r.id }));
      hist.push(" (");
      hist.push(age(r.created_at));
      hist.push(")");
    });
    if (role.release_count > earlier.length + (l ? 1 : 0)) hist.push(` · ${role.release_count} releases in all`);
    kids.push(h("div", { class: "history" }, hist));
  }
  return h("div", { class: "release-box" }, kids);
}

/**
 * @param {DashboardRole} role
 * @param {FleetRow} r
 */
function nodeRows(role, r) {
  const key = `${role.role}/${r.node}`;
  const why = attention(r);
  let rel;
  if (r.release_id === null) rel = h("td", { class: "rel" }, [h("span", { class: "note", text: "–" })]);
  else {
    /** @type {HTMLElement | null} */
    let tag = null;
    if (role.latest && r.release_id === role.latest.id && r.status !== "failure")
      tag = r.on_latest ? h("span", { class: "tag is-latest", text: "latest" }) : null;
    else if (r.behind) {
      const t = idTime(r.release_id);
      tag = h("span", { class: "tag older" }, ["older", t ? " · " : "", t ? age(t) : null]);
    }
    rel = h("td", { class: "rel" }, [h("code", { text: r.release_id }), tag]);
  }
  /** @type {string[]} */
  const notes = [];
  if (!r.in_catalog) notes.push("not in catalog");
  if (r.rolled_back_to) notes.push(`rolled back to ${r.rolled_back_to}`);
  const hasLog = r.status !== "never-reported";
  const btn = h("button", {
    class: "logbtn",
    type: "button",
    disabled: !hasLog,
    "aria-expanded": open[key] ? "true" : "false",
    text: hasLog ? (open[key] ? "Hide log" : "Show log") : "no log",
  });
  const row = h("tr", { class: `node${why ? ` attn-${why}` : ""}`, "data-node": r.node, "data-status": r.status }, [
    h("td", { class: "name" }, [r.node, r.in_catalog ? null : h("span", { class: "note", text: "not in catalog" })]),
    h("td", { class: "status" }, [h("span", { class: `badge ${r.status}`, text: statusText(r.status) })]),
    rel,
    h("td", { class: "phase", text: r.phase || "–" }),
    h("td", { class: "age" }, [
      r.status === "never-reported"
        ? "–"
        : age(r.status === "deploying" ? r.started_at : r.finished_at || r.started_at),
    ]),
    r.error
      ? h("td", { class: "err", title: r.error, text: r.error })
      : h("td", { class: "err note", text: notes.filter((n) => n !== "not in catalog").join("; ") }),
    h("td", {}, [btn]),
  ]);
  const out = [row];
  if (hasLog && open[key]) out.push(logRow(r));
  row.addEventListener("click", (ev) => {
    if (!hasLog) return;
    const target = /** @type {Element | null} */ (ev.target);
    if (target?.closest?.("tr.logrow")) return;
    open[key] = !open[key];
    render();
  });
  return out;
}

/** @param {FleetRow} r */
function logRow(r) {
  /** @type {Child[]} */
  const head = [];
  if (r.error) head.push(h("span", { class: "errline", text: r.error }));
  head.push(h("span", {}, ["started ", age(r.started_at)]));
  if (r.duration_ms !== null && r.duration_ms !== undefined)
    head.push(h("span", { text: `took ${formatTook(r.duration_ms)}` }));
  if (r.agent_version) head.push(h("span", { text: `agent ${r.agent_version}` }));
  head.push(h("span", { text: "last 2 KB of the log" }));
  const pre = r.log_tail
    ? h("pre", { class: "log", text: r.log_tail })
    : h("pre", {
        class: "log nolog",
        text: r.status === "deploying" ? "The log arrives with the final report." : "No log in this report.",
      });
  return h("tr", { class: "logrow", "data-log-for": r.node }, [
    h("td", { colspan: "7" }, [h("div", { class: "logbox" }, [h("div", { class: "loghead" }, head), pre])]),
  ]);
}

/** @param {DashboardRole} role */
function roleSection(role) {
  const head = h("div", { class: "role-head" }, [
    h("h2", { text: role.role }),
    h("span", {
      class: "svc",
      text: `service ${role.service} · ${role.counts.nodes}${role.counts.nodes === 1 ? " node" : " nodes"}`,
    }),
    h("div", { class: "pills" }, pills(role.counts)),
  ]);
  /** @type {Child[]} */
  const kids = [head, latestBox(role)];
  if (role.rows.length) {
    const body = h("tbody");
    for (const r of role.rows) for (const tr of nodeRows(role, r)) body.appendChild(tr);
    kids.push(
      h("table", { class: "nodes" }, [
        h("thead", {}, [
          h(
            "tr",
            {},
            ["Node", "Status", "Release", "Phase", "Age", "Error", ""].map((t, i) =>
              h("th", { class: i === 3 ? "phase" : null, text: t }),
            ),
          ),
        ]),
        body,
      ]),
    );
  } else {
    kids.push(
      h("div", {
        class: "foot problem",
        text:
          `No nodes: service “${role.service}” has no instances in Consul's catalog and no agent has ` +
          "reported yet.",
      }),
    );
  }
  if (role.unreadable?.length)
    kids.push(
      h("div", {
        class: "foot problem",
        text: `Not readable as reports or release records: ${role.unreadable.join(", ")}`,
      }),
    );
  return h("section", { class: "role", id: `role-${role.role}`, "data-role": role.role }, kids);
}

/** @param {string} id */
function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`dashboard page: no #${id}`);
  return el;
}

/** The row a log's <pre> belongs to. @param {Element} pre */
function logFor(pre) {
  return pre.closest("tr")?.getAttribute("data-log-for") ?? "";
}

function render() {
  if (!state) return;
  const s = state;
  const main = byId("roles");
  /** @type {Record<string, number>} */
  const scroll = {};
  main.querySelectorAll("tr.logrow pre").forEach((p) => {
    scroll[logFor(p)] = p.scrollTop;
  });
  byId("rolenav").replaceChildren(
    ...s.roles.map((role) => {
      const c = role.counts;
      const cls = c.failure ? "has-failure" : c.behind || c.never_reported ? "has-warn" : c.deploying ? "has-run" : "";
      return h("a", { href: `#role-${role.role}`, class: cls, title: `${c.on_latest}/${c.nodes} on latest` }, [
        h("span", { class: "n" }),
        role.role,
      ]);
    }),
  );
  if (!s.roles.length) {
    main.replaceChildren(
      h("p", { class: "empty" }, [
        "No roles under ",
        h("code", { text: `${s.prefix}/roles/` }),
        " yet. Publish a release with ",
        h("code", { text: "pulldeploy publish DIR --role ROLE …" }),
        ".",
      ]),
    );
  } else {
    main.replaceChildren(...s.roles.map(roleSection));
  }
  main.querySelectorAll("tr.logrow pre").forEach((p) => {
    const k = logFor(p);
    p.scrollTop = scroll[k] !== undefined ? scroll[k] : p.scrollHeight;
  });
  const banner = byId("banner");
  if (s.consul.ok) banner.hidden = true;
  else {
    banner.hidden = false;
    banner.textContent = `Consul is not answering (${s.consul.error}). Showing the last state seen; retrying.`;
  }
  byId("footer").replaceChildren(
    "From Consul ",
    h("code", { text: s.consul.address }),
    ": KV ",
    h("code", { text: `${s.prefix}/roles/` }),
    " and each role's catalog service. Updates live.",
  );
  document.title = titleOf(s);
}

/** @param {DashboardState} s */
function titleOf(s) {
  let failed = 0;
  for (const r of s.roles) failed += r.counts.failure;
  return `${failed ? `(${failed} failed) ` : ""}pulldeploy · fleet`;
}

function tick() {
  document.querySelectorAll("[data-ts]").forEach((el) => {
    const iso = el.getAttribute("data-ts");
    el.textContent = (el.getAttribute("data-prefix") || "") + ageText(iso ? since(iso) : null);
  });
  byId("updated").textContent = lastUpdate ? `updated ${ageText(Date.now() - lastUpdate)}` : "";
}

/** @param {"live" | "down"} mode @param {string} text */
function setLive(mode, text) {
  byId("conn").setAttribute("data-live", mode);
  byId("conn-text").textContent = text;
}

/** @param {DashboardState} s */
function accept(s) {
  state = s;
  skew = Date.parse(s.generated_at) - Date.now();
  lastUpdate = Date.now();
  render();
  tick();
  setLive(s.consul.ok ? "live" : "down", s.consul.ok ? "live" : "Consul unreachable");
}

function connect() {
  if (window.EventSource) {
    const es = new EventSource("/api/events");
    es.addEventListener("state", (e) => accept(JSON.parse(e.data)));
    es.addEventListener("error", () => setLive("down", "reconnecting…"));
    return;
  }
  // No EventSource: long-poll /api/state?index=
  let index = 0;
  const poll = () => {
    fetch(`/api/state${index ? `?index=${index}` : ""}`, { cache: "no-store" })
      .then((r) => r.json())
      .then((/** @type {DashboardState} */ s) => {
        index = s.index;
        accept(s);
        poll();
      })
      .catch(() => {
        setLive("down", "reconnecting…");
        setTimeout(poll, 2000);
      });
  };
  poll();
}

// A module script runs after the document is parsed (modules are deferred).
connect();
setInterval(tick, 1000);
