// The teaching console of the cluster view (docs/contract.md §4, `bazar up --demo`): kill, pause,
// resume and restart a replica, switch a primary over, add and remove replicas, and watch the
// cluster view and the charts react. It exists only when the front end serves its routes
// (`GET /admin/processes` is 404 without --demo), and acts only with the admin token, which
// the page asks for and keeps in sessionStorage (gone when the tab closes).
"use strict";
(function () {
  const TOKEN_KEY = "bazar.adminToken";
  const ACTION_TIMEOUT_MS = 20000;  // a removal waits for a lease to expire and a process to stop
  const LOG_ENTRIES_MAX = 8;
  const PROBE_RETRY_MS = 2000;
  const {call, h, errorText, dash} = window.bazar;
  const $ = (id) => document.getElementById(id);

  let unlocked = false;
  let processes = {};   // name -> {pid, process}
  let lastKey = "";
  let lastCluster = null;
  let busy = false;

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

  function admin(method, path, body) {
    const headers = {Accept: "application/json", Authorization: "Bearer " + token()};
    const options = {headers, timeoutMs: ACTION_TIMEOUT_MS};
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return call(method, path, options);
  }

  function log(ok, text) {
    const entry = h("li", {class: ok ? "ok" : "err", "data-testid": "console-message",
      "data-outcome": ok ? "ok" : "error"}, new Date().toLocaleTimeString() + " · " + text);
    const list = $("console-log");
    list.prepend(entry);
    while (list.children.length > LOG_ENTRIES_MAX) list.lastChild.remove();
  }

  // ---------------------------------------------------------------- token

  // 404: no console on this front end (no --demo); 401: ask for the token; 200: ready.
  async function probe() {
    const r = await call("GET", "/admin/processes", token() ?
      {headers: {Accept: "application/json", Authorization: "Bearer " + token()}} : undefined);
    if (r.status === 404) return;
    if ((r.status === 0 || r.status >= 500) && $("console").hidden) {
      setTimeout(probe, PROBE_RETRY_MS);  // the front end is not there yet: ask again
      return;
    }
    $("console").hidden = false;
    if (r.ok && r.body && Array.isArray(r.body.data)) {
      unlock(r.body.data);
    } else if (r.status === 401) {
      lock(token() ? "That is not the admin token." : "");
    } else {
      lock("The console cannot reach the front end: " + errorText(r));
    }
  }

  function unlock(list) {
    unlocked = true;
    setProcesses(list);
    $("console-unlock-form").hidden = true;
    $("console-token-error").hidden = true;
    $("console-controls").hidden = false;
    if (lastCluster) render(lastCluster);
  }

  function lock(message) {
    unlocked = false;
    if (message) sessionStorage.removeItem(TOKEN_KEY);
    $("console-controls").hidden = true;
    $("console-unlock-form").hidden = false;
    $("console-token-error").textContent = message;
    $("console-token-error").hidden = !message;
  }

  $("console-unlock-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("console-token").value.trim());
    $("console-token").value = "";
    probe();
  });

  function setProcesses(list) {
    processes = {};
    for (const p of list) processes[p.name] = p;
  }

  // ---------------------------------------------------------------- actions

  async function act(label, method, path, body, describe) {
    if (busy) return;
    busy = true;
    $("console-controls").classList.add("stale");
    try {
      const r = await admin(method, path, body);
      if (r.status === 401) lock("The admin token was refused.");
      log(r.ok, label + (r.ok ? " · " + describe(r.body.data) : " failed: " + errorText(r)));
      await refreshProcesses();
    } finally {
      busy = false;
      $("console-controls").classList.remove("stale");
      if (lastCluster) render(lastCluster, true);
    }
  }

  const processText = (p) => p.process + (p.pid ? " (pid " + p.pid + ")" : "");
  const tierText = (t) => "primary " + t.primary + ", epoch " + t.epoch;

  function processAction(name, action) {
    return act(action + " " + name, "POST", "/admin/replicas/" + encodeURIComponent(name) + "/" + action,
      undefined, processText);
  }

  function switchover(tier, to) {
    return act("switch over " + tier, "POST", "/admin/switchover", {service: tier, to: to || null}, tierText);
  }

  function addReplica(tier) {
    return act("add a replica to " + tier, "POST", "/admin/replicas", {service: tier},
      (r) => r.name + " " + r.state.replace("_", " "));
  }

  function removeReplica(name) {
    return act("remove " + name, "DELETE", "/admin/replicas/" + encodeURIComponent(name), undefined, tierText);
  }

  async function refreshProcesses() {
    const r = await admin("GET", "/admin/processes");
    if (r.ok && r.body && Array.isArray(r.body.data)) setProcesses(r.body.data);
    else if (r.status === 401) lock("The admin token was refused.");
  }

  // ---------------------------------------------------------------- rendering

  function button(testid, text, enabled, onclick, danger) {
    const b = h("button", {type: "button", class: "small" + (danger ? " danger" : ""),
      "data-testid": testid, disabled: !enabled}, text);
    b.addEventListener("click", onclick);
    return b;
  }

  function replicaRow(r) {
    const p = processes[r.name];
    const running = p && p.process === "running", paused = p && p.process === "paused";
    const run = p ? p.process : "not run by bazar up";
    return h("tr", {"data-testid": "console-row", "data-name": r.name, "data-process": p ? p.process : "none"},
      h("td", null, h("div", {class: "mono"}, r.name),
        h("div", {class: "process", "data-testid": "console-process"}, run + (p && p.pid ? " · pid " + p.pid : ""))),
      h("td", null, h("div", {class: "actions"},
        button("console-kill", "Kill", running || paused, () => processAction(r.name, "kill"), true),
        button("console-pause", "Pause", running, () => processAction(r.name, "pause")),
        button("console-resume", "Resume", paused, () => processAction(r.name, "resume")),
        button("console-restart", "Restart", Boolean(p), () => processAction(r.name, "restart")),
        button("console-remove", "Remove", true, () => removeReplica(r.name), true))));
  }

  function tierControls(name, tier) {
    const backups = (tier.replicas || []).filter((r) => r.role === "backup" && r.state === "in_sync");
    const target = h("select", {"data-testid": "console-switchover-target", "aria-label": "new " + name + " primary"},
      h("option", {value: ""}, "best in-sync backup"),
      backups.map((r) => h("option", {value: r.name}, r.name)));
    return h("div", {"data-testid": "console-tier", "data-tier": name},
      h("h3", null, name, h("span", {class: "meta"}, "primary ", h("b", {class: "mono"}, dash(tier.primary)))),
      h("table", null, h("tbody", null, (tier.replicas || []).map(replicaRow))),
      h("div", {class: "tier-actions"},
        button("console-switchover", "Switch over to", backups.length > 0, () => switchover(name, target.value)),
        target,
        button("console-add", "Add a replica", true, () => addReplica(name))));
  }

  // Drawn again only when something it shows has changed, so a choice in a <select> stays.
  function render(cluster, force) {
    const shown = ["catalog", "order"].map((t) => [cluster[t].primary,
      cluster[t].replicas.map((r) => [r.name, r.role, r.state])]);
    const key = JSON.stringify([shown, processes, busy]);
    if (!force && key === lastKey) return;
    lastKey = key;
    $("console-controls").replaceChildren(tierControls("catalog", cluster.catalog),
      tierControls("order", cluster.order),
      h("p", {class: "status-line"}, "Killed replicas stay down until restarted here. ",
        button("console-lock", "Forget the token", true, () => {
          sessionStorage.removeItem(TOKEN_KEY);
          lock("");
        })));
  }

  window.addEventListener("bazar:cluster", async (event) => {
    lastCluster = event.detail;
    if (!unlocked || busy) return;
    await refreshProcesses();
    if (unlocked && !busy) render(lastCluster);
  });

  probe();
})();
