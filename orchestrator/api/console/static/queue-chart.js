// The queues page's charts: per queue, the jobs waiting and the jobs ended per minute over the
// last hour (the server's samples, a row a minute), drawn with uPlot and read again every
// minute. Each chart's caption says the latest figures in words.
"use strict";

(function () {
  const holder = document.getElementById("queue-charts");
  if (!holder || typeof uPlot === "undefined") return;
  const charts = new Map();

  let hour = [0, 0];  // the hour shown: [start, end], seconds since the epoch

  function options(width) {
    return {
      width: width,
      height: 140,
      // UTC, as every time the console shows.
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      scales: {
        x: { time: true, range: () => hour },
        y: { range: (u, min, max) => [0, Math.max(max, 4)] },
      },
      axes: [{}, { label: "jobs" }],
      series: [
        {},
        { label: "waiting", stroke: "#8a6100", width: 2 },
        { label: "ended / min", stroke: "#1a7f37", width: 2 },
      ],
    };
  }

  async function refresh() {
    const response = await fetch(holder.dataset.url, { credentials: "same-origin" });
    if (!response.ok) return;
    const body = await response.json();
    const samples = body.queues;
    hour = [body.start, body.end];
    for (const figure of holder.querySelectorAll("figure[data-chart]")) {
      const name = figure.dataset.chart;
      const queue = samples[name] || { minutes: [], waiting: [], ended: [] };
      const data = [queue.minutes, queue.waiting, queue.ended];
      const last = queue.minutes.length - 1;
      figure.querySelector(".chart-summary").textContent = last < 0
        ? "no samples yet"
        : queue.waiting[last] + " waiting, " + queue.ended[last] + " ended in the last minute";
      figure.dataset.points = String(queue.minutes.length);
      const chart = charts.get(name);
      if (chart) {
        chart.setData(data);
      } else {
        const width = Math.max(Math.min(figure.clientWidth, 900), 240);
        charts.set(name, new uPlot(options(width), data, figure));
      }
    }
  }

  refresh();
  setInterval(refresh, 60000);
})();
