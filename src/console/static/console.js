// Flotilla console: the live parts. Everything shown as HTML comes escaped from the server;
// text set here goes through textContent.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } });
  if (r.status === 401) {
    window.location = "/console/login?next=" + encodeURIComponent(location.pathname + location.search);
    throw new Error("signed out");
  }
  if (!r.ok) throw new Error(url + ": " + r.status);
  return r.json();
}

function every(ms, fn) {
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    try {
      if ((await fn()) === false) stopped = true;
    } catch (e) {
      // A failed poll is retried at the next tick.
    }
    if (!stopped) setTimeout(tick, ms);
  };
  tick();
}

function el(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// A line chart of the last hour: one polyline per series, the y axis from 0 to the largest value.
function chart(box, samples, series) {
  const W = 380, H = 150, L = 34, B = 18, T = 8, R = 8;
  const now = samples.length ? samples[samples.length - 1].t : Date.now();
  const t0 = now - 3600 * 1000;
  let max = 1;
  for (const s of samples) for (const [k] of series) max = Math.max(max, s[k] || 0);
  const x = (t) => L + ((t - t0) / (now - t0)) * (W - L - R);
  const y = (v) => H - B - (v / max) * (H - B - T);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot" });
  svg.appendChild(el("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
  svg.appendChild(el("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
  svg.appendChild(el("text", { x: L - 4, y: T + 8, class: "tick end" }, String(Math.round(max * 100) / 100)));
  svg.appendChild(el("text", { x: L - 4, y: H - B, class: "tick end" }, "0"));
  svg.appendChild(el("text", { x: L, y: H - 4, class: "tick" }, "−60 min"));
  svg.appendChild(el("text", { x: W - R, y: H - 4, class: "tick end" }, "now"));
  for (const [key, label, cls] of series) {
    const pts = samples.filter((s) => s.t >= t0).map((s) => `${x(s.t).toFixed(1)},${y(s[key] || 0).toFixed(1)}`);
    if (pts.length === 1) pts.push(pts[0].replace(/^[^,]+/, (v) => String(parseFloat(v) + 1)));
    svg.appendChild(el("polyline", { points: pts.join(" "), class: "series " + cls }));
  }
  const legend = document.createElement("div");
  legend.className = "legend";
  for (const [key, label, cls] of series) {
    const item = document.createElement("span");
    item.className = "key " + cls;
    const last = samples.length ? samples[samples.length - 1][key] : 0;
    item.textContent = `${label}: ${Math.round((last || 0) * 100) / 100}`;
    legend.appendChild(item);
  }
  box.replaceChildren(svg, legend);
}

function overview() {
  if (!document.getElementById("charts")) return;
  const shown = { queues: null, envs: null };
  // Swapped only when they changed, so a button being clicked is not replaced under the pointer.
  const swap = (id, html) => {
    if (shown[id] === html) return;
    shown[id] = html;
    document.getElementById(id).innerHTML = html;
  };
  every(5000, async () => {
    const o = await getJSON("/console/api/overview");
    swap("queues", o.queuesHtml);
    swap("envs", o.envsHtml);
    document.getElementById("updated").textContent = "Updated " + o.updated;
    chart(document.getElementById("chart-depth"), o.samples, [
      ["queued", "waiting", "s1"],
      ["runnable", "RUNNABLE", "s2"],
    ]);
    chart(document.getElementById("chart-running"), o.samples, [["running", "running", "s1"]]);
    chart(document.getElementById("chart-vcpus"), o.samples, [
      ["fleet_vcpus", "fleet", "s1"],
      ["used_vcpus", "in use", "s2"],
      ["desired_vcpus", "desired", "s3"],
    ]);
  });
}

function jobPage() {
  const job = document.getElementById("job");
  if (!job) return;
  const id = job.dataset.job;
  const base = "/console/api/jobs/" + encodeURIComponent(id);
  let final = job.dataset.final === "true";
  if (!final) {
    every(2000, async () => {
      const s = await getJSON(base);
      const badge = document.getElementById("job-status");
      badge.textContent = s.status;
      badge.className = "st st-" + s.status;
      document.getElementById("job-reason").textContent = s.statusReason;
      const node = document.getElementById("graph-self");
      if (node) {
        node.setAttribute("class", "node st-" + s.status + " self");
        document.getElementById("graph-self-status").textContent = s.status;
      }
      if (s.startedAt) document.getElementById("job-started").textContent = s.startedAt;
      if (s.stoppedAt) document.getElementById("job-stopped").textContent = s.stoppedAt;
      document.getElementById("attempts-wrap").innerHTML = s.attemptsHtml;
      if (s.summary) {
        for (const td of document.querySelectorAll("#array-summary td[data-status]")) {
          td.textContent = s.summary[td.dataset.status] ?? 0;
        }
      }
      if (s.status === "SUCCEEDED" || s.status === "FAILED") {
        final = true;
        job.dataset.final = "true";
        for (const f of document.querySelectorAll("form.actions")) f.remove();
        return false;
      }
    });
  }
  const log = document.getElementById("log");
  const follow = document.getElementById("follow");
  if (!log || !follow) return;
  let token = log.dataset.token || "";
  let quiet = 0;
  every(2000, async () => {
    if (!follow.checked) return;
    const r = await getJSON(base + "/log" + (token ? "?token=" + encodeURIComponent(token) : ""));
    if (r.replace) log.innerHTML = r.html;
    else if (r.count) log.insertAdjacentHTML("beforeend", r.html);
    if (r.token) token = r.token;
    log.dataset.token = token;
    if (r.count) log.scrollTop = log.scrollHeight;
    // Once the job is over and the log has stopped growing, stop asking.
    quiet = r.final && !r.count ? quiet + 1 : 0;
    if (quiet >= 2) return false;
  });
}

function jobList() {
  const all = document.getElementById("select-all");
  if (!all) return;
  all.addEventListener("change", () => {
    for (const c of document.querySelectorAll("input.pick")) c.checked = all.checked;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  overview();
  jobPage();
  jobList();
});
