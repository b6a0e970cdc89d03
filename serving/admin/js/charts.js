// Charts with the vendored Chart.js (admin/static/vendor/chart.umd.min.js, MIT; window.Chart).
const COLORS = { base: "#7a8699", domain: "#2f6fdb", loss: "#c2571a" };
const ANIM = { duration: 0 }; // live data redraws often: no animation

function make(canvas, config) {
  const existing = window.Chart.getChart(canvas);
  if (existing) existing.destroy();
  return new window.Chart(canvas, config);
}

// CTR and MRR per arm: a floating bar from the 95% interval's low to high end, the estimate as a point.
export function intervalChart(canvas, report) {
  const cells = [["ctr", "base"], ["ctr", "domain"], ["mrr", "base"], ["mrr", "domain"]];
  const colors = cells.map(([, arm]) => COLORS[arm]);
  return make(canvas, {
    data: {
      labels: cells.map(([m, arm]) => `${m.toUpperCase()} · ${arm}`),
      datasets: [
        { type: "bar", label: "95% interval", data: cells.map(([m, arm]) => report.arms[arm][`${m}_ci95`] || null),
          backgroundColor: colors.map((c) => `${c}44`), borderColor: colors, borderWidth: 1, barPercentage: 0.6,
          order: 2 },
        { type: "scatter", label: "estimate", data: cells.map(([m, arm], i) => ({ x: i, y: report.arms[arm][m] })),
          backgroundColor: colors, borderColor: colors, pointRadius: 5, order: 1 },
      ],
    },
    options: {
      animation: ANIM, responsive: true, maintainAspectRatio: false,
      scales: { x: { type: "category", offset: true }, y: { min: 0, suggestedMax: 0.2 } },
      plugins: { legend: { position: "bottom" } },
    },
  });
}

export function timelineChart(canvas, timeline) {
  const labels = timeline.buckets.map((b) => new Date(b.start * 1000).toLocaleTimeString("en-GB",
    { hour: "2-digit", minute: "2-digit", hour12: false }));
  const bars = (arm) => ({
    label: `${arm} impressions`, data: timeline.buckets.map((b) => b[arm].impressions),
    borderColor: COLORS[arm], backgroundColor: COLORS[arm],
  });
  return make(canvas, {
    type: "bar",
    data: { labels, datasets: [bars("base"), bars("domain")] },
    options: {
      animation: ANIM, responsive: true, maintainAspectRatio: false,
      scales: { y: { beginAtZero: true, title: { display: true, text: "impressions" } } },
      plugins: { legend: { position: "bottom" } },
    },
  });
}

// The training loss curve; called again with the longer history while the job trains.
export function lossChart(canvas, points) {
  const chart = window.Chart.getChart(canvas);
  const data = points.map((p) => ({ x: p.step, y: p.loss }));
  if (chart) {
    chart.data.datasets[0].data = data;
    chart.update();
    return chart;
  }
  return make(canvas, {
    type: "line",
    data: { datasets: [{ label: "training loss", data, borderColor: COLORS.loss, backgroundColor: COLORS.loss,
      pointRadius: 2, tension: 0.1 }] },
    options: {
      animation: ANIM, responsive: true, maintainAspectRatio: false, parsing: false,
      scales: { x: { type: "linear", ticks: { precision: 0 }, title: { display: true, text: "step" } },
        y: { title: { display: true, text: "loss" } } },
      plugins: { legend: { display: false } },
    },
  });
}
