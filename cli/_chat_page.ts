// The chat page ws-server serves on a plain GET of its path in broadcast
// mode: one small file, no framework, no external assets. It connects back
// to the server it came from (ws: or wss: after the page's own scheme),
// offering the netkit.v1 subprotocol (docs/netkit-v1.md): when the server
// keeps history, a dropped connection resumes from the last line shown with
// nothing lost, and a server that cannot cover the gap (it restarted, or the
// history is too short) is said so on the page.

/** The page, as HTML. */
export const CHAT_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>netkit chat</title>
<link rel="icon" href="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E%3Ccircle cx='8' cy='8' r='7' fill='%232f6fdb'/%3E%3C/svg%3E">
<style>
  :root { color-scheme: light dark; --accent: #2f6fdb; --muted: #8a8f98; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
         display: flex; flex-direction: column; height: 100vh; }
  header { display: flex; align-items: baseline; gap: .75rem; padding: .75rem 1rem;
           border-bottom: 1px solid color-mix(in srgb, currentColor 15%, transparent); }
  header h1 { font-size: 1rem; margin: 0; }
  #status { font-size: .85rem; color: var(--muted); }
  #status::before { content: "\\25CF"; margin-right: .35em; }
  #status.on::before { color: #2da44e; }
  #status.off::before { color: #cf222e; }
  #log { flex: 1; overflow-y: auto; margin: 0; padding: .75rem 1rem; list-style: none; }
  #log li { padding: .15rem 0; white-space: pre-wrap; overflow-wrap: anywhere; }
  #log li.self { color: var(--accent); }
  #log li.note { color: var(--muted); font-style: italic; }
  form { display: flex; gap: .5rem; padding: .75rem 1rem;
         border-top: 1px solid color-mix(in srgb, currentColor 15%, transparent); }
  input { flex: 1; font: inherit; padding: .5rem .65rem; border-radius: 6px;
          border: 1px solid color-mix(in srgb, currentColor 25%, transparent); background: transparent; }
  button { font: inherit; padding: .5rem 1rem; border: 0; border-radius: 6px;
           background: var(--accent); color: #fff; cursor: pointer; }
  button:disabled { opacity: .5; cursor: default; }
</style>
</head>
<body>
<header><h1>netkit chat</h1><span id="status" class="off">connecting…</span></header>
<ul id="log" aria-live="polite"></ul>
<form id="form" autocomplete="off">
  <input id="text" placeholder="Say something" maxlength="4000" autofocus>
  <button id="send" disabled>Send</button>
</form>
<script>
(() => {
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + location.pathname;
  const log = document.getElementById("log");
  const status = document.getElementById("status");
  const text = document.getElementById("text");
  const send = document.getElementById("send");
  const mine = [];
  // netkit.v1: the last position seen per topic, sent back on every reconnect.
  const positions = {};
  let ws, v1 = false, opened = 0, delay = 500;

  function add(line, kind) {
    const li = document.createElement("li");
    li.textContent = line;
    if (kind) li.className = kind;
    const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.append(li);
    if (stick) log.scrollTop = log.scrollHeight;
  }

  function setStatus(on, label) {
    status.className = on ? "on" : "off";
    status.textContent = label;
    send.disabled = !on;
  }

  function show(data) {
    if (typeof data !== "string") return add("[binary message, " + data.byteLength + " bytes]", "note");
    const i = mine.indexOf(data);
    if (i >= 0) mine.splice(i, 1);
    add(data, i >= 0 ? "self" : "");
  }

  // A position on a topic: true to go on, false for a duplicate (already
  // shown), null for a gap (reconnect and resume).
  function advance(t, e, o) {
    const p = positions[t];
    if (p && p.e === e && o <= p.o) return false;
    if (p && (p.e !== e || o !== p.o + 1)) return null;
    positions[t] = { e, o };
    return true;
  }

  function receive(data) {
    let m, payload;
    if (typeof data === "string") {
      m = JSON.parse(data);
      payload = m.d;
    } else {
      const n = new DataView(data).getUint32(0);
      m = JSON.parse(new TextDecoder().decode(new Uint8Array(data, 4, n)));
      payload = data.slice(4 + n);
    }
    if (typeof m.sub === "string") {
      positions[m.sub] = { e: m.e, o: m.o };
      if (m.recovered === true) add("reconnected: nothing was missed", "note");
      if (m.recovered === false) {
        add("reconnected, but messages sent meanwhile are lost: " + (m.reason === "epoch"
          ? "the server restarted" : "the server's history does not reach back that far"), "note");
      }
      return;
    }
    if (typeof m.t === "string") {
      const go = advance(m.t, m.e, m.o);
      if (go === null) return ws.close(4000, "out of sequence: resuming");
      if (!go) return;
    }
    if (payload !== undefined) show(payload);
  }

  function open() {
    const since = Object.keys(positions).map((t) =>
      "netkit.since=" + encodeURIComponent(positions[t].e + ":" + positions[t].o + ":" + t));
    ws = new WebSocket(since.length ? url + "?" + since.join("&") : url, ["netkit.v1"]);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      v1 = ws.protocol === "netkit.v1";
      delay = 500;
      setStatus(true, opened++ && !v1 ? "reconnected (messages sent meanwhile are lost)" : "connected");
    };
    ws.onmessage = (e) => (v1 ? receive(e.data) : show(e.data));
    ws.onclose = (e) => {
      setStatus(false, "disconnected (" + e.code + (e.reason ? " " + e.reason : "") + "), retrying…");
      setTimeout(open, delay);
      delay = Math.min(delay * 2, 10000);
    };
  }

  document.getElementById("form").addEventListener("submit", (e) => {
    e.preventDefault();
    const line = text.value.trim();
    if (!line || !ws || ws.readyState !== WebSocket.OPEN) return;
    mine.push(line);
    ws.send(v1 ? JSON.stringify({ d: line }) : line);
    text.value = "";
  });

  open();
})();
</script>
</body>
</html>
`;
