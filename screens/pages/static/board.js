// The hall board (综合屏): latest calls (each highlighted for at least a few seconds,
// queued when they come in bursts), recent calls with their windows, the window grid,
// waiting counts and estimated waits per service.
"use strict";
(function () {
  var MIN_SHOW_MS = 4000, BUSY_SHOW_MS = 1500, RECENT = 8;
  var grid = document.getElementById("grid");
  var recent = document.getElementById("recent");
  var cells = {};
  var pending = [], showingSince = 0, timer = null, seen = {};
  quhao.clock(document.getElementById("clock"));

  var STATUS = { paused: "暂停服务", closed: "未开放", idle: "空闲" };

  function fill(cell, w) {
    cell.className = "cell status-" + w.status;
    cell.querySelector(".win").textContent = w.window + "号窗口" + (w.name ? " " + w.name : "");
    var t = cell.querySelector(".ticket");
    t.textContent = w.status === "serving" && w.ticket ? w.ticket : (STATUS[w.status] || "");
  }
  function layout() {
    var n = Object.keys(cells).length || 1;
    var box = grid.getBoundingClientRect();
    var best = 1, bestSize = 0;
    for (var cols = 1; cols <= n; cols++) {
      var rows = Math.ceil(n / cols);
      var size = Math.min(box.width / cols / 1.6, box.height / rows);
      if (size > bestSize) { bestSize = size; best = cols; }
    }
    grid.style.gridTemplateColumns = "repeat(" + best + ", minmax(0, 1fr))";
    grid.style.gridTemplateRows = "repeat(" + Math.ceil(n / best) + ", minmax(0, 1fr))";
    grid.style.setProperty("--cell", Math.max(10, Math.floor(bestSize)) + "px");
  }
  function windows(list) {
    grid.textContent = "";
    cells = {};
    list.forEach(function (w) {
      var cell = quhao.el("div", "cell");
      cell.dataset.window = w.window;
      cell.appendChild(quhao.el("div", "win"));
      cell.appendChild(quhao.el("div", "ticket"));
      grid.appendChild(cell);
      cells[w.window] = cell;
      fill(cell, w);
    });
    layout();
  }
  function services(list) {
    var box = document.getElementById("services");
    box.textContent = "";
    list.forEach(function (s) {
      var chip = quhao.el("div", "service");
      chip.dataset.service = s.id;
      chip.appendChild(quhao.el("div", "service-name", s.name));
      chip.appendChild(quhao.el("div", "service-waiting",
        s.waiting === null ? "—" : "等候 " + s.waiting + " 人"));
      chip.appendChild(quhao.el("div", "service-wait", s.waiting ? quhao.minutes(s.wait_s) : ""));
      box.appendChild(chip);
    });
  }
  function hall(h) {
    document.getElementById("hall-name").textContent = h.name;
    quhao.hallOnline(h.online);
  }
  function row(c) {
    var li = quhao.el("li", c.recall ? "recall" : "");
    li.dataset.number = c.number;
    li.appendChild(quhao.el("span", "num", c.number));
    li.appendChild(quhao.el("span", "to", "请到"));
    li.appendChild(quhao.el("span", "win", c.window + " 号窗口"));
    if (c.recall) li.appendChild(quhao.el("span", "tag", "重呼"));
    return li;
  }
  function highlight(c) {
    var now = document.getElementById("now");
    document.getElementById("now-number").textContent = c.number;
    document.getElementById("now-window").textContent = "请到 " + c.window + " 号窗口" +
      (c.recall ? "（重呼）" : "");
    now.classList.remove("flash");
    void now.offsetWidth;  // restart the animation
    now.classList.add("flash");
    showingSince = Date.now();
  }
  function next() {
    timer = null;
    if (!pending.length) return;
    var wait = (pending.length > 2 ? BUSY_SHOW_MS : MIN_SHOW_MS) - (Date.now() - showingSince);
    if (wait > 0) { timer = setTimeout(next, wait); return; }
    highlight(pending.shift());
    if (pending.length) timer = setTimeout(next, pending.length > 2 ? BUSY_SHOW_MS : MIN_SHOW_MS);
  }
  function call(c) {
    if (seen[c.key]) return;
    seen[c.key] = true;
    recent.insertBefore(row(c), recent.firstChild);
    while (recent.children.length > RECENT) recent.removeChild(recent.lastChild);
    pending.push(c);
    if (!timer) next();
  }
  quhao.live(document.body.dataset.stream, {
    snapshot: function (b) {
      hall(b.hall);
      document.getElementById("board-title").textContent = b.title || "";
      windows(b.windows);
      services(b.services);
      recent.textContent = "";
      seen = {};
      b.calls.slice(0, RECENT).reverse().forEach(function (c) {
        seen[c.key] = true;
        recent.insertBefore(row(c), recent.firstChild);
      });
      if (b.calls.length && !pending.length) highlight(b.calls[0]);
    },
    hall: function (d) { hall(d.hall); services(d.services); },
    window: function (w) { if (cells[w.window]) fill(cells[w.window], w); },
    call: call
  });
  window.addEventListener("resize", layout);
})();
