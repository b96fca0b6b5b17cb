/**
 * The dashboard page, embedded in the binary: HTML, CSS and JS as strings, no build step, nothing
 * from the internet (the server's Content-Security-Policy allows only itself). The script builds the
 * DOM with textContent (node names, errors and logs come from KV: never parsed as HTML), listens to
 * `/api/events` (EventSource reconnects by itself), and turns timestamps into ages every second,
 * corrected by the server's clock.
 */

export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pulldeploy · fleet</title>
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<header class="top">
  <div class="brand"><span class="logo" aria-hidden="true">&#9650;</span> pulldeploy <span class="brand-sub">fleet</span></div>
  <nav id="rolenav" aria-label="Roles"></nav>
  <div class="conn" id="conn" data-live="connecting"><span class="dot" aria-hidden="true"></span><span id="conn-text">connecting…</span><span class="sep">·</span><span id="updated"></span></div>
</header>
<div id="banner" class="banner" role="alert" hidden></div>
<main id="roles"><p class="empty">Loading the fleet…</p></main>
<footer id="footer"></footer>
</body>
</html>
`;

export const APP_CSS = `
:root {
  --bg: #f3f4f7; --card: #ffffff; --line: #e2e5eb; --line-soft: #eef0f4;
  --text: #1b2130; --muted: #667085; --faint: #98a2b3;
  --ok: #137333; --ok-bg: #e3f5e8; --bad: #b42318; --bad-bg: #fde8e6;
  --run: #1d4ed8; --run-bg: #e0e9ff; --warn: #a15c07; --warn-bg: #fdf1d8;
  --skip: #475467; --skip-bg: #eef0f3;
  --mono: ui-monospace, "SFMono-Regular", "JetBrains Mono", Menlo, Consolas, "DejaVu Sans Mono", monospace;
  --sans: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", Helvetica, Arial, sans-serif;
}
* { box-sizing: border-box; }
html, body { margin: 0; }
body { background: var(--bg); color: var(--text); font: 14px/1.45 var(--sans); -webkit-font-smoothing: antialiased; }
code, pre, .mono { font-family: var(--mono); }

.top { position: sticky; top: 0; z-index: 5; display: flex; align-items: center; gap: 20px;
  padding: 10px 24px; background: #151b28; color: #e9edf5; box-shadow: 0 1px 0 rgba(0,0,0,.25); }
.brand { font-weight: 700; font-size: 16px; letter-spacing: .2px; white-space: nowrap; }
.brand .logo { color: #7aa2ff; margin-right: 4px; }
.brand-sub { font-weight: 400; color: #98a2b3; margin-left: 2px; }
#rolenav { display: flex; gap: 6px; flex: 1; overflow-x: auto; }
#rolenav a { color: #d0d5dd; text-decoration: none; padding: 3px 10px; border-radius: 999px; background: #232b3b; font-size: 13px; white-space: nowrap; }
#rolenav a:hover { background: #2f3a50; color: #fff; }
#rolenav a .n { display: inline-block; min-width: 8px; height: 8px; border-radius: 50%; margin-right: 6px; background: #32d583; vertical-align: 1px; }
#rolenav a.has-failure .n { background: #f97066; }
#rolenav a.has-warn .n { background: #fdb022; }
#rolenav a.has-run .n { background: #84adff; }
.conn { font-size: 13px; color: #98a2b3; white-space: nowrap; display: flex; align-items: center; gap: 6px; }
.conn .dot { width: 8px; height: 8px; border-radius: 50%; background: #98a2b3; }
.conn[data-live="live"] .dot { background: #32d583; box-shadow: 0 0 0 3px rgba(50,213,131,.18); }
.conn[data-live="live"] #conn-text { color: #d1fadf; }
.conn[data-live="down"] .dot { background: #fdb022; }
.conn[data-live="down"] #conn-text { color: #fedf89; }
.conn .sep { color: #475467; }

.banner { margin: 16px auto 0; max-width: 1280px; padding: 10px 16px; border-radius: 8px; background: var(--warn-bg); color: #7a2e0e; border: 1px solid #fec84b; font-weight: 500; }
main { max-width: 1280px; margin: 0 auto; padding: 16px 24px 8px; }
.empty { color: var(--muted); padding: 48px 0; text-align: center; font-size: 15px; }
.empty code { background: var(--card); border: 1px solid var(--line); padding: 2px 6px; border-radius: 4px; }

.role { background: var(--card); border: 1px solid var(--line); border-radius: 10px; margin: 0 0 20px; box-shadow: 0 1px 2px rgba(16,24,40,.04); overflow: hidden; scroll-margin-top: 64px; }
.role-head { display: flex; align-items: baseline; gap: 12px; flex-wrap: wrap; padding: 14px 20px 0; }
.role-head h2 { margin: 0; font-size: 20px; font-weight: 700; letter-spacing: -.2px; }
.role-head .svc { color: var(--muted); font-size: 13px; }
.pills { display: flex; gap: 6px; flex-wrap: wrap; margin-left: auto; }
.pill { font-size: 12.5px; font-weight: 600; padding: 2px 10px; border-radius: 999px; background: var(--skip-bg); color: var(--skip); white-space: nowrap; }
.pill.ok { background: var(--ok-bg); color: var(--ok); }
.pill.bad { background: var(--bad-bg); color: var(--bad); }
.pill.run { background: var(--run-bg); color: var(--run); }
.pill.warn { background: var(--warn-bg); color: var(--warn); }

.release-box { display: grid; grid-template-columns: 1fr auto; gap: 4px 24px; align-items: end; margin: 12px 20px 14px; padding: 12px 16px; border-radius: 8px; background: #f7f8fb; border: 1px solid var(--line-soft); }
.release-box .label { grid-column: 1 / -1; text-transform: uppercase; font-size: 11px; letter-spacing: .08em; color: var(--muted); font-weight: 600; }
.release-box .rid { font-family: var(--mono); font-size: 17px; font-weight: 600; word-break: break-all; }
.release-box .rid.none { font-family: var(--sans); font-weight: 500; color: var(--muted); font-size: 15px; }
.release-box .meta { color: var(--muted); font-size: 13px; }
.release-box .meta .msg { color: var(--text); }
.release-box .progress-wrap { grid-row: 2 / span 2; grid-column: 2; min-width: 220px; text-align: right; }
.release-box .progress-text { font-size: 13px; color: var(--muted); margin-bottom: 4px; }
.release-box .progress-text b { color: var(--text); font-size: 15px; }
.progress { display: flex; height: 8px; border-radius: 999px; overflow: hidden; background: var(--line); }
.progress span { display: block; height: 100%; }
.progress .ok { background: #32a852; } .progress .run { background: #5b8def; } .progress .bad { background: #e0473d; }
.release-box .history { grid-column: 1 / -1; font-size: 12.5px; color: var(--muted); margin-top: 4px; }
.release-box .history code { color: var(--skip); }

table.nodes { width: 100%; border-collapse: collapse; }
table.nodes th { text-align: left; font-size: 11.5px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); font-weight: 600; padding: 8px 10px; border-top: 1px solid var(--line); border-bottom: 1px solid var(--line); background: #fafbfc; }
table.nodes td { padding: 9px 10px; border-bottom: 1px solid var(--line-soft); vertical-align: middle; }
table.nodes th:first-child, table.nodes td:first-child { padding-left: 20px; }
table.nodes th:last-child, table.nodes td:last-child { padding-right: 20px; text-align: right; }
tr.node { cursor: pointer; }
tr.node:hover td { background: #f8f9fc; }
tr.node td:first-child { box-shadow: inset 4px 0 0 transparent; }
tr.node.attn-failed td:first-child { box-shadow: inset 4px 0 0 #e0473d; }
tr.node.attn-never-reported td:first-child, tr.node.attn-behind td:first-child, tr.node.attn-not-in-catalog td:first-child { box-shadow: inset 4px 0 0 #f5a524; }
td.name { font-weight: 600; white-space: nowrap; }
td.name .note { display: block; font-weight: 500; font-size: 11.5px; color: var(--warn); }
td.rel code { font-size: 12.5px; }
td.rel .tag { margin-left: 6px; }
td.phase, td.age { white-space: nowrap; color: var(--muted); }
td.age { font-variant-numeric: tabular-nums; }
td.err { color: var(--bad); max-width: 380px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
td.err.note { color: var(--muted); }
.tag { display: inline-block; font-size: 11px; font-weight: 600; padding: 1px 7px; border-radius: 4px; white-space: nowrap; vertical-align: 1px; }
.tag.is-latest { background: var(--ok-bg); color: var(--ok); }
.tag.older { background: var(--warn-bg); color: var(--warn); }
.badge { display: inline-flex; align-items: center; gap: 6px; font-weight: 600; font-size: 12.5px; padding: 2px 10px 2px 8px; border-radius: 999px; white-space: nowrap; }
.badge::before { content: ""; width: 7px; height: 7px; border-radius: 50%; background: currentColor; }
.badge.success { background: var(--ok-bg); color: var(--ok); }
.badge.failure { background: var(--bad-bg); color: var(--bad); }
.badge.deploying { background: var(--run-bg); color: var(--run); }
.badge.deploying::before { animation: pulse 1.2s ease-in-out infinite; }
.badge.skipped { background: var(--skip-bg); color: var(--skip); }
.badge.never-reported { background: transparent; color: var(--warn); border: 1px dashed #f5a524; padding: 1px 9px 1px 7px; }
.badge.never-reported::before { background: transparent; border: 1.5px solid currentColor; width: 5px; height: 5px; }
@keyframes pulse { 50% { opacity: .25; } }
button.logbtn { font: inherit; font-size: 12.5px; color: var(--run); background: none; border: 1px solid var(--line); border-radius: 6px; padding: 2px 10px; cursor: pointer; white-space: nowrap; }
button.logbtn:hover { background: var(--run-bg); border-color: #b2c7ff; }
button.logbtn[disabled] { color: var(--faint); cursor: default; background: none; border-color: var(--line-soft); }
tr.logrow td { background: #fbfcfd; padding: 0 20px 14px !important; text-align: left !important; }
.logbox { border-radius: 8px; overflow: hidden; border: 1px solid #1f2937; }
.logbox .loghead { display: flex; gap: 16px; flex-wrap: wrap; padding: 7px 12px; background: #1f2937; color: #cbd5e1; font-size: 12.5px; }
.logbox .loghead .errline { color: #fca5a5; font-weight: 600; flex-basis: 100%; white-space: pre-wrap; word-break: break-word; }
.logbox pre { margin: 0; padding: 10px 12px; max-height: 340px; overflow: auto; background: #0f1623; color: #e5e7eb; font-size: 12.5px; line-height: 1.5; white-space: pre-wrap; word-break: break-word; }
.logbox pre.nolog { color: #98a2b3; font-style: italic; }
.role .foot { padding: 8px 20px; font-size: 12px; color: var(--faint); }
.role .foot.problem { color: var(--warn); }
footer { max-width: 1280px; margin: 0 auto; padding: 4px 24px 24px; color: var(--faint); font-size: 12px; }
footer code { color: var(--muted); }
@media (max-width: 900px) { td.phase, th.phase { display: none; } td.err { max-width: 200px; } .release-box { grid-template-columns: 1fr; } .release-box .progress-wrap { grid-row: auto; grid-column: 1; text-align: left; } }
`;

export const APP_JS = `(function () {
"use strict";
var state = null;
var skew = 0;            // server clock minus ours, from the state's generated_at
var open = {};           // "role/node" -> true: log rows left open across updates
var lastUpdate = 0;

function h(tag, props, children) {
  var el = document.createElement(tag);
  if (props) for (var k in props) {
    var v = props[k];
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") el.textContent = v;
    else if (k === "class") el.className = v;
    else if (k.slice(0, 2) === "on") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  (children || []).forEach(function (c) {
    if (c === null || c === undefined || c === false) return;
    el.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  });
  return el;
}

function ageText(ms) {
  if (ms === null || isNaN(ms)) return "–";
  var s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return s + "s ago";
  var m = Math.floor(s / 60);
  if (m < 60) return m + "m ago";
  var hr = Math.floor(m / 60);
  if (hr < 48) return hr + "h ago";
  return Math.floor(hr / 24) + "d ago";
}
function since(iso) { var t = Date.parse(iso); return isNaN(t) ? null : Date.now() + skew - t; }
/** An element whose text is the age of iso, kept current by tick(). */
function age(iso, prefix) {
  return h("span", { "data-ts": iso || "", "data-prefix": prefix || "", text: (prefix || "") + ageText(iso ? since(iso) : null) });
}
function duration(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  return Math.floor(ms / 60000) + " min " + Math.round((ms % 60000) / 1000) + " s";
}
/** A release id starts with its UTC time: 20260301T115000Z-… */
function idTime(id) {
  var m = /^(\\d{4})(\\d{2})(\\d{2})T(\\d{2})(\\d{2})(\\d{2})Z/.exec(id || "");
  return m ? m[1] + "-" + m[2] + "-" + m[3] + "T" + m[4] + ":" + m[5] + ":" + m[6] + "Z" : null;
}
function statusText(s) { return s === "never-reported" ? "never reported" : s; }
function attention(r) {
  if (r.status === "failure") return "failed";
  if (r.status === "never-reported") return "never-reported";
  if (r.behind) return "behind";
  if (!r.in_catalog) return "not-in-catalog";
  return null;
}

function pills(c) {
  var out = [];
  function add(n, text, cls) { if (n > 0) out.push(h("span", { class: "pill " + cls, text: n + " " + text })); }
  add(c.on_latest, "on latest", "ok");
  add(c.deploying, "deploying", "run");
  add(c.failure, "failed", "bad");
  add(c.behind, "on an older release", "warn");
  add(c.never_reported, "never reported", "warn");
  add(c.not_in_catalog, "not in catalog", "warn");
  return out;
}

function latestBox(role) {
  var l = role.latest, c = role.counts;
  var kids = [h("div", { class: "label", text: "Latest release" })];
  if (l) {
    kids.push(h("div", { class: "rid", "data-testid": "latest-id", text: l.id }));
    var meta = ["published ", age(l.created_at)];
    if (l.publisher) meta.push(" by " + l.publisher);
    if (l.message) { meta.push(" · "); meta.push(h("span", { class: "msg", text: "“" + l.message + "”" })); }
    if (l.size !== null && l.size !== undefined) meta.push(" · " + formatBytes(l.size) + (l.files !== null && l.files !== undefined ? ", " + l.files + " files" : ""));
    kids.push(h("div", { class: "meta" }, meta));
  } else {
    kids.push(h("div", { class: "rid none", text: "No release recorded yet" }));
    kids.push(h("div", { class: "meta", text: role.prefix + "/roles/" + role.role + "/latest is empty" }));
  }
  // Progress over the catalog's nodes only: a report from a node gone from the catalog is not part of the rollout.
  var members = role.rows.filter(function (r) { return r.in_catalog; });
  var total = members.length;
  function count(f) { return members.filter(f).length; }
  var onLatest = count(function (r) { return r.on_latest; });
  if (l && total > 0) {
    var bar = h("div", { class: "progress", title: onLatest + " of " + total + " nodes on the latest release" });
    [["ok", onLatest], ["run", count(function (r) { return r.status === "deploying"; })], ["bad", count(function (r) { return r.status === "failure"; })]].forEach(function (p) {
      if (p[1] > 0) { var s = h("span", { class: p[0] }); s.style.width = (100 * p[1] / total) + "%"; bar.appendChild(s); }
    });
    kids.push(h("div", { class: "progress-wrap" }, [
      h("div", { class: "progress-text" }, [h("b", { text: onLatest + " / " + total }), " nodes on latest"]),
      bar
    ]));
  }
  var earlier = (role.recent_releases || []).filter(function (r) { return !l || r.id !== l.id; }).slice(0, 3);
  if (earlier.length) {
    var hist = [h("span", { text: "Earlier: " })];
    earlier.forEach(function (r, i) {
      if (i) hist.push(" · ");
      hist.push(h("code", { text: r.id }));
      hist.push(" (");
      hist.push(age(r.created_at));
      hist.push(")");
    });
    if (role.release_count > earlier.length + (l ? 1 : 0)) hist.push(" · " + role.release_count + " releases in all");
    kids.push(h("div", { class: "history" }, hist));
  }
  return h("div", { class: "release-box" }, kids);
}

function formatBytes(n) {
  var u = ["B", "KB", "MB", "GB", "TB"], i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

function nodeRows(role, r) {
  var key = role.role + "/" + r.node;
  var why = attention(r);
  var rel;
  if (r.release_id === null) rel = h("td", { class: "rel" }, [h("span", { class: "note", text: "–" })]);
  else {
    var tag = null;
    if (role.latest && r.release_id === role.latest.id && r.status !== "failure") tag = r.on_latest ? h("span", { class: "tag is-latest", text: "latest" }) : null;
    else if (r.behind) { var t = idTime(r.release_id); tag = h("span", { class: "tag older" }, ["older", t ? " · " : "", t ? age(t) : null]); }
    rel = h("td", { class: "rel" }, [h("code", { text: r.release_id }), tag]);
  }
  var notes = [];
  if (!r.in_catalog) notes.push("not in catalog");
  if (r.rolled_back_to) notes.push("rolled back to " + r.rolled_back_to);
  var hasLog = r.status !== "never-reported";
  var btn = h("button", { class: "logbtn", type: "button", disabled: !hasLog, "aria-expanded": open[key] ? "true" : "false", text: hasLog ? (open[key] ? "Hide log" : "Show log") : "no log" });
  var row = h("tr", { class: "node" + (why ? " attn-" + why : ""), "data-node": r.node, "data-status": r.status }, [
    h("td", { class: "name" }, [r.node, r.in_catalog ? null : h("span", { class: "note", text: "not in catalog" })]),
    h("td", { class: "status" }, [h("span", { class: "badge " + r.status, text: statusText(r.status) })]),
    rel,
    h("td", { class: "phase", text: r.phase || "–" }),
    h("td", { class: "age" }, [r.status === "never-reported" ? "–" : age(r.status === "deploying" ? r.started_at : (r.finished_at || r.started_at))]),
    r.error ? h("td", { class: "err", title: r.error, text: r.error }) : h("td", { class: "err note", text: notes.filter(function (n) { return n !== "not in catalog"; }).join("; ") }),
    h("td", {}, [btn])
  ]);
  var out = [row];
  if (hasLog && open[key]) out.push(logRow(r));
  function toggle(ev) {
    if (!hasLog) return;
    if (ev && ev.target && ev.target.closest && ev.target.closest("tr.logrow")) return;
    open[key] = !open[key];
    render();
  }
  row.addEventListener("click", toggle);
  return out;
}

function logRow(r) {
  var head = [];
  if (r.error) head.push(h("span", { class: "errline", text: r.error }));
  head.push(h("span", {}, ["started ", age(r.started_at)]));
  if (r.duration_ms !== null && r.duration_ms !== undefined) head.push(h("span", { text: "took " + duration(r.duration_ms) }));
  if (r.agent_version) head.push(h("span", { text: "agent " + r.agent_version }));
  head.push(h("span", { text: "last 2 KB of the log" }));
  var pre = r.log_tail ? h("pre", { class: "log", text: r.log_tail }) : h("pre", { class: "log nolog", text: r.status === "deploying" ? "The log arrives with the final report." : "No log in this report." });
  return h("tr", { class: "logrow", "data-log-for": r.node }, [h("td", { colspan: "7" }, [h("div", { class: "logbox" }, [h("div", { class: "loghead" }, head), pre])])]);
}

function roleSection(role) {
  var head = h("div", { class: "role-head" }, [
    h("h2", { text: role.role }),
    h("span", { class: "svc", text: "service " + role.service + " · " + role.counts.nodes + (role.counts.nodes === 1 ? " node" : " nodes") }),
    h("div", { class: "pills" }, pills(role.counts))
  ]);
  var kids = [head, latestBox(role)];
  if (role.rows.length) {
    var body = h("tbody");
    role.rows.forEach(function (r) { nodeRows(role, r).forEach(function (tr) { body.appendChild(tr); }); });
    kids.push(h("table", { class: "nodes" }, [
      h("thead", {}, [h("tr", {}, ["Node", "Status", "Release", "Phase", "Age", "Error", ""].map(function (t, i) { return h("th", { class: i === 3 ? "phase" : null, text: t }); }))]),
      body
    ]));
  } else {
    kids.push(h("div", { class: "foot problem", text: "No nodes: service “" + role.service + "” has no instances in Consul's catalog and no agent has reported yet." }));
  }
  if (role.unreadable && role.unreadable.length) kids.push(h("div", { class: "foot problem", text: "Not readable as reports or release records: " + role.unreadable.join(", ") }));
  return h("section", { class: "role", id: "role-" + role.role, "data-role": role.role }, kids);
}

function render() {
  if (!state) return;
  var main = document.getElementById("roles");
  var scroll = {};
  main.querySelectorAll("tr.logrow pre").forEach(function (p) { scroll[p.closest("tr").getAttribute("data-log-for")] = p.scrollTop; });
  var nav = document.getElementById("rolenav");
  nav.replaceChildren.apply(nav, state.roles.map(function (role) {
    var c = role.counts;
    var cls = c.failure ? "has-failure" : (c.behind || c.never_reported) ? "has-warn" : c.deploying ? "has-run" : "";
    return h("a", { href: "#role-" + role.role, class: cls, title: c.on_latest + "/" + c.nodes + " on latest" }, [h("span", { class: "n" }), role.role]);
  }));
  if (!state.roles.length) {
    main.replaceChildren(h("p", { class: "empty" }, ["No roles under ", h("code", { text: state.prefix + "/roles/" }), " yet. Publish a release with ", h("code", { text: "pulldeploy publish DIR --role ROLE …" }), "."]));
  } else {
    main.replaceChildren.apply(main, state.roles.map(roleSection));
  }
  main.querySelectorAll("tr.logrow pre").forEach(function (p) {
    var k = p.closest("tr").getAttribute("data-log-for");
    p.scrollTop = scroll[k] !== undefined ? scroll[k] : p.scrollHeight;
  });
  var banner = document.getElementById("banner");
  if (state.consul.ok) banner.hidden = true;
  else { banner.hidden = false; banner.textContent = "Consul is not answering (" + state.consul.error + "). Showing the last state seen; retrying."; }
  document.getElementById("footer").replaceChildren("From Consul ", h("code", { text: state.consul.address }), ": KV ", h("code", { text: state.prefix + "/roles/" }), " and each role's catalog service. Updates live.");
  document.title = titleOf(state);
}

function titleOf(s) {
  var failed = 0;
  s.roles.forEach(function (r) { failed += r.counts.failure; });
  return (failed ? "(" + failed + " failed) " : "") + "pulldeploy · fleet";
}

function tick() {
  document.querySelectorAll("[data-ts]").forEach(function (el) {
    var iso = el.getAttribute("data-ts");
    el.textContent = (el.getAttribute("data-prefix") || "") + ageText(iso ? since(iso) : null);
  });
  var up = document.getElementById("updated");
  up.textContent = lastUpdate ? "updated " + ageText(Date.now() - lastUpdate) : "";
}

function setLive(mode, text) {
  var conn = document.getElementById("conn");
  conn.setAttribute("data-live", mode);
  document.getElementById("conn-text").textContent = text;
}

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
    var es = new EventSource("/api/events");
    es.addEventListener("state", function (e) { accept(JSON.parse(e.data)); });
    es.addEventListener("error", function () { setLive("down", "reconnecting…"); });
    return;
  }
  // No EventSource: long-poll /api/state?index=
  var index = 0;
  (function poll() {
    fetch("/api/state" + (index ? "?index=" + index : ""), { cache: "no-store" })
      .then(function (r) { return r.json(); })
      .then(function (s) { index = s.index; accept(s); poll(); })
      .catch(function () { setLive("down", "reconnecting…"); setTimeout(poll, 2000); });
  })();
}

document.addEventListener("DOMContentLoaded", function () {
  connect();
  setInterval(tick, 1000);
});
})();
`;
