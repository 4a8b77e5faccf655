// Live charts of the last minute in the cluster view: throughput, latency (p50/p99), cache
// hit rate and each replica's log position. Each time the page has a fresh /cluster (once a
// second, the "bazar:cluster" event of index.html), this reads /metrics, takes the
// differences from the previous sample, and redraws with uPlot (vendored, static/vendor/).
// Rates are per second over the last interval; a gap means nothing happened in it.
"use strict";
(function () {
  const WINDOW_S = 60;
  // The store's own routes, by the route label's first segment ("/info" or a template such as
  // "/info/{id}"): the page's polling of /cluster and /metrics is not traffic.
  const STORE_ROUTES = new Set(["search", "info", "purchase", "orders", "books"]);
  const storeRoute = (label) => STORE_ROUTES.has(String(label || "").split("/")[1]);
  const REQUESTS = "bazar_requests_total";
  const LATENCY_BUCKETS = "bazar_request_seconds_bucket";
  const PALETTE = ["#2f6f4f", "#b5621b", "#3b6fb6", "#9b3bb6", "#b23a3a", "#3ba8a0"];
  const {call} = window.bazar;

  const samples = [];  // {t, requests, purchases, buckets: Map(le -> count), hits, misses, logs}
  const plots = {};    // chart name -> {plot, key}

  // ---------------------------------------------------------------- Prometheus text

  function parseLabels(text) {
    const labels = {};
    const re = /(\w+)="((?:[^"\\]|\\.)*)"/g;
    let m;
    while ((m = re.exec(text)) !== null) labels[m[1]] = m[2];
    return labels;
  }

  // Every sample line as {name, labels, value}; comments and blank lines skipped.
  function parseMetrics(text) {
    const out = [];
    for (const line of text.split("\n")) {
      if (!line || line[0] === "#") continue;
      const m = /^([a-zA-Z_:][\w:]*)(\{.*\})?\s+(\S+)/.exec(line);
      if (m) out.push({name: m[1], labels: parseLabels(m[2] || ""), value: Number(m[3])});
    }
    return out;
  }

  function storeTotals(metrics) {
    let requests = 0, purchases = 0;
    const buckets = new Map();
    for (const {name, labels, value} of metrics) {
      if (!storeRoute(labels.route)) continue;
      if (name === REQUESTS) {
        requests += value;
        if (labels.route.startsWith("/purchase") && labels.status === "200") purchases += value;
      } else if (name === LATENCY_BUCKETS) {
        const le = labels.le === "+Inf" ? Infinity : Number(labels.le);
        buckets.set(le, (buckets.get(le) || 0) + value);
      }
    }
    return {requests, purchases, buckets};
  }

  // As Prometheus's histogram_quantile: linear within the bucket that holds the rank.
  function quantile(q, cumulative) {
    if (!cumulative.length) return null;
    const total = cumulative[cumulative.length - 1][1];
    if (total <= 0) return null;
    const rank = q * total;
    let lowerLe = 0, lowerCount = 0;
    for (const [le, count] of cumulative) {
      if (count >= rank) {
        if (le === Infinity) return lowerLe;
        const width = Math.max(count - lowerCount, 1e-9);
        return lowerLe + (le - lowerLe) * ((rank - lowerCount) / width);
      }
      lowerLe = le;
      lowerCount = count;
    }
    return lowerLe;
  }

  // ---------------------------------------------------------------- series

  function rate(now, before, field) {
    const seconds = now.t - before.t;
    const delta = now[field] - before[field];
    return seconds > 0 && delta >= 0 ? delta / seconds : null;  // a restart resets counters
  }

  function latencies(now, before) {
    const cumulative = [...now.buckets.keys()].sort((a, b) => a - b)
      .map((le) => [le, (now.buckets.get(le) || 0) - (before.buckets.get(le) || 0)]);
    if (cumulative.some(([, c]) => c < 0)) return [null, null];
    const ms = (v) => (v === null ? null : v * 1000);
    return [ms(quantile(0.5, cumulative)), ms(quantile(0.99, cumulative))];
  }

  function hitRate(now, before) {
    const hits = now.hits - before.hits, misses = now.misses - before.misses;
    return hits >= 0 && misses >= 0 && hits + misses > 0 ? (100 * hits) / (hits + misses) : null;
  }

  function logPositions(tier) {
    const names = [...new Set(samples.flatMap((s) => Object.keys(s.logs[tier])))].sort();
    return {names, columns: names.map((n) => samples.map((s) => s.logs[tier][n] ?? null))};
  }

  // ---------------------------------------------------------------- drawing

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  // The y axis runs from 0 to a round number (1, 2 or 5 times a power of ten) above the data.
  function niceCeil(max) {
    if (!(max > 0)) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(max)));
    for (const step of [1, 2, 5, 10]) if (step * power >= max) return step * power;
    return 10 * power;
  }

  const clock = (t) => new Date(t * 1000).toLocaleTimeString([], {hour12: false});

  function options(el, labels, unit) {
    const axis = {stroke: cssVar("--muted"), grid: {stroke: cssVar("--line"), width: 1},
      ticks: {stroke: cssVar("--line"), width: 1}};
    return {
      width: Math.max(el.clientWidth, 200), height: 120,
      scales: {x: {time: true}, y: {range: (u, min, max) => [0, niceCeil(max)]}},
      axes: [Object.assign({space: 70, values: (u, ticks) => ticks.map(clock)}, axis),
        Object.assign({size: 46, values: (u, ticks) => ticks.map((v) => v + unit)}, axis)],
      series: [{}, ...labels.map((label, i) => ({label, stroke: PALETTE[i % PALETTE.length],
        width: 2, spanGaps: false, points: {show: false}}))],
      legend: {show: labels.length > 1, live: false},
      cursor: {show: true, points: {show: false}},
    };
  }

  // Drawn anew when its series change (a replica added or removed), else given new data.
  function draw(name, labels, unit, data) {
    const el = document.querySelector('[data-chart="' + name + '"] .plot');
    if (!el || typeof uPlot === "undefined") return;
    const key = labels.join("|");
    const current = plots[name];
    if (current && current.key === key) {
      current.plot.setData(data);
      return;
    }
    if (current) current.plot.destroy();
    el.replaceChildren();
    plots[name] = {key, plot: new uPlot(options(el, labels, unit), data, el)};
  }

  function setValue(testid, value, digits) {
    const el = document.querySelector('[data-testid="' + testid + '"]');
    if (el) el.textContent = value === null || value === undefined ? "–" : value.toFixed(digits);
  }

  function render() {
    const times = samples.map((s) => s.t);
    const pairs = samples.map((s, i) => (i ? [s, samples[i - 1]] : null));
    const per = (f) => pairs.map((p) => (p ? f(p[0], p[1]) : null));
    const throughput = per((a, b) => rate(a, b, "requests"));
    const purchases = per((a, b) => rate(a, b, "purchases"));
    const latency = per(latencies);
    const p50 = latency.map((l) => (l ? l[0] : null)), p99 = latency.map((l) => (l ? l[1] : null));
    const hits = per(hitRate);
    draw("throughput", ["requests/s", "purchases/s"], "", [times, throughput, purchases]);
    draw("latency", ["p50 ms", "p99 ms"], "", [times, p50, p99]);
    draw("hit-rate", ["hit rate %"], "%", [times, hits]);
    for (const tier of ["catalog", "order"]) {
      const {names, columns} = logPositions(tier);
      draw("log-" + tier, names, "", [times, ...columns]);
    }
    const last = (series) => series[series.length - 1];
    setValue("chart-throughput-value", last(throughput), 1);
    setValue("chart-throughput-peak", Math.max(0, ...throughput.filter((v) => v !== null)), 1);
    setValue("chart-p50-value", last(p50), 2);
    setValue("chart-p99-value", last(p99), 2);
    setValue("chart-hit-rate-value", last(hits), 1);
  }

  function replicaLogs(tier) {
    const logs = {};
    for (const r of tier.replicas || []) logs[r.name] = r.last_seq;
    return logs;
  }

  async function sample(cluster) {
    const r = await call("GET", "/metrics", {headers: {Accept: "text/plain"}});
    if (!r.ok) return;
    const totals = storeTotals(parseMetrics(r.text));
    const t = Date.now() / 1000;
    samples.push(Object.assign(totals, {t, hits: cluster.cache.hits, misses: cluster.cache.misses,
      logs: {catalog: replicaLogs(cluster.catalog), order: replicaLogs(cluster.order)}}));
    while (samples.length && samples[0].t < t - WINDOW_S) samples.shift();
    render();
  }

  let busy = false;
  window.addEventListener("bazar:cluster", async (event) => {
    if (busy) return;  // a slow /metrics never piles requests up
    busy = true;
    try { await sample(event.detail); } finally { busy = false; }
  });
  window.addEventListener("resize", () => {
    for (const {plot} of Object.values(plots)) {
      plot.setSize({width: Math.max(plot.root.parentElement.clientWidth, 200), height: 120});
    }
  });
})();
