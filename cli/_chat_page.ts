// The chat page ws-server serves on a plain GET of its path in broadcast
// mode: one small file, no framework, no external assets. It connects back
// to the server it came from (ws: or wss: after the page's own scheme).

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
  let ws, delay = 500;

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

  function open() {
    ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => { delay = 500; setStatus(true, "connected"); };
    ws.onmessage = (e) => {
      if (typeof e.data !== "string") return add("[binary message, " + e.data.byteLength + " bytes]", "note");
      const i = mine.indexOf(e.data);
      if (i >= 0) mine.splice(i, 1);
      add(e.data, i >= 0 ? "self" : "");
    };
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
    ws.send(line);
    text.value = "";
  });

  open();
})();
</script>
</body>
</html>
`;
