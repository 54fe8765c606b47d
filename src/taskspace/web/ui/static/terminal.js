// The browser terminal: xterm.js wired to /w/<ref>/terminal/ws.
(function () {
  "use strict";
  function start() {
    var box = document.getElementById("terminal");
    var status = document.getElementById("terminal-status");
    var term = new window.Terminal({ cursorBlink: true, convertEol: false, fontFamily: "ui-monospace, Menlo, Consolas, monospace", fontSize: 14, scrollback: 5000 });
    var fit = new window.FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(box);
    fit.fit();
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var url = scheme + location.host + "/w/" + encodeURIComponent(box.dataset.ref) + "/terminal/ws?cols=" + term.cols + "&rows=" + term.rows;
    var socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    socket.onopen = function () { status.textContent = "Connected"; term.focus(); };
    socket.onmessage = function (event) {
      if (typeof event.data === "string") {
        var message = JSON.parse(event.data);
        status.textContent = message.error + (message.hint ? " " + message.hint : "");
        return;
      }
      term.write(new Uint8Array(event.data));
    };
    socket.onclose = function () { status.textContent = "Disconnected — reload to reconnect"; };
    term.onData(function (data) {
      if (socket.readyState === WebSocket.OPEN) { socket.send(JSON.stringify({ type: "input", data: data })); }
    });
    term.onResize(function (size) {
      if (socket.readyState === WebSocket.OPEN) { socket.send(JSON.stringify({ type: "resize", cols: size.cols, rows: size.rows })); }
    });
    window.addEventListener("resize", function () { fit.fit(); });
    window.taskspaceTerminal = term;  // for people's own browser scripts and for tests
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
