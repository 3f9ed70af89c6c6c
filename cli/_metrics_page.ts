// The live page `--metrics` serves at /: connections, new connections/s,
// bytes/s and deliveries/s over the last five minutes, as SVG line charts
// redrawn every second from /series. Plain HTML and SVG, no framework.
export const METRICS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>netkit — live</title>
<link rel="icon" href="data:,">
<style>
  body { font: 14px system-ui, sans-serif; margin: 1.5rem; color: #222; background: #fafafa; }
  h1 { font-size: 1.2rem; margin: 0 0 1rem; }
  .grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 1rem; }
  .card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .75rem; }
  .card h2 { font-size: .95rem; margin: 0 0 .25rem; display: flex; justify-content: space-between; }
  .now { font-variant-numeric: tabular-nums; color: #0a58ca; }
  svg { width: 100%; height: 140px; display: block; }
  polyline { fill: none; stroke: #0a58ca; stroke-width: 1.5; }
  .axis { stroke: #ccc; stroke-width: 1; }
  footer { margin-top: 1rem; color: #777; font-size: .85rem; }
</style>
</head>
<body>
<h1>netkit — the last five minutes <span id="status" class="now"></span></h1>
<div class="grid" id="charts"></div>
<footer>One sample a second from <a href="/series">/series</a>; Prometheus text at <a href="/metrics">/metrics</a>.</footer>
<script>
const CHARTS = [
  ["open", "connections open", ""],
  ["accepted", "new connections", "/s"],
  ["bytesIn", "bytes received", " B/s"],
  ["bytesOut", "bytes sent", " B/s"],
  ["deliveries", "messages delivered", "/s"],
];
const grid = document.getElementById("charts");
for (const [key, title] of CHARTS) {
  grid.insertAdjacentHTML("beforeend",
    '<div class="card"><h2>' + title + ' <span class="now" id="now-' + key + '">–</span></h2>' +
    '<svg viewBox="0 0 300 100" preserveAspectRatio="none" id="svg-' + key + '">' +
    '<line class="axis" x1="0" y1="99" x2="300" y2="99"/><polyline points=""/></svg></div>');
}
function human(n) {
  if (n >= 1e9) return (n / 1e9).toFixed(1) + " G";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + " M";
  if (n >= 1e3) return (n / 1e3).toFixed(1) + " k";
  return String(Math.round(n));
}
async function tick() {
  try {
    const series = await (await fetch("/series", { cache: "no-store" })).json();
    for (const [key, , unit] of CHARTS) {
      const values = series[key] || [];
      const max = Math.max(1, ...values);
      const step = 300 / Math.max(1, values.length - 1);
      const points = values.map((v, i) => (i * step).toFixed(1) + "," + (99 - (v / max) * 95).toFixed(1));
      document.querySelector("#svg-" + key + " polyline").setAttribute("points", points.join(" "));
      document.getElementById("now-" + key).textContent = human(values.at(-1) || 0) + unit;
    }
    document.getElementById("status").textContent = "";
  } catch {
    document.getElementById("status").textContent = "(server unreachable)";
  }
}
tick();
setInterval(tick, 1000);
</script>
</body>
</html>
`;
