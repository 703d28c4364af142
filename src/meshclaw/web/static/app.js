// MeshClaw dashboard: progressive enhancement only. Every page works without this file;
// it adds charts (Plotly, served from this server) and live updates over SSE.
"use strict";

// Charts: <div class="chart" data-figure-id="x"> with <script type="application/json" id="x">
// holding a Plotly figure built on the server. Plotly is loaded only on pages with charts.
function drawCharts() {
  const charts = document.querySelectorAll("[data-figure-id]");
  if (!charts.length) return;
  const draw = () => charts.forEach((el) => {
    const source = document.getElementById(el.dataset.figureId);
    if (!source) return;
    const figure = JSON.parse(source.textContent);
    window.Plotly.newPlot(el, figure.data, figure.layout, { responsive: true, displaylogo: false });
  });
  if (window.Plotly) return draw();
  const script = document.createElement("script");
  script.src = document.body.dataset.plotly || "/ui/vendor/plotly.min.js";
  script.onload = draw;
  document.head.appendChild(script);
}

// Live regions: <section data-live-src="/ui/runs/ID/live" data-live-until="..."> is replaced
// by the server's fresh HTML whenever the SSE stream at data-live-events says something changed.
function followLive() {
  document.querySelectorAll("[data-live-events]").forEach((region) => {
    const source = new EventSource(region.dataset.liveEvents);
    const refresh = async () => {
      const response = await fetch(region.dataset.liveSrc, { headers: { "Accept": "text/html" } });
      if (!response.ok) return;
      region.innerHTML = await response.text();
      // The region is replaced whole; screen readers hear only its short status line.
      const line = region.querySelector("[data-announce]");
      const live = document.getElementById(region.dataset.liveAnnounce || "");
      if (line && live && live.textContent !== line.textContent) live.textContent = line.textContent;
    };
    source.addEventListener("step", refresh);
    source.addEventListener("status", refresh);
    source.addEventListener("end", () => { refresh(); source.close(); });
    source.onerror = () => { if (source.readyState === EventSource.CLOSED) source.close(); };
  });
}

document.addEventListener("DOMContentLoaded", () => { drawCharts(); followLive(); });
