// Live updates for every page: one EventSource (it reconnects by itself; the server
// sends a full snapshot on every connect) and the offline banner.
"use strict";
window.quhao = window.quhao || {};
quhao.live = function (url, handlers) {
  var banner = document.getElementById("offline");
  var streamUp = false;
  var hallUp = true;
  function show() {
    if (banner) banner.hidden = streamUp && hallUp;
    document.body.classList.toggle("is-offline", !(streamUp && hallUp));
  }
  quhao.hallOnline = function (up) { hallUp = !!up; show(); };
  var source = new EventSource(url);
  source.onopen = function () { streamUp = true; show(); };
  source.onerror = function () { streamUp = false; show(); };
  Object.keys(handlers).forEach(function (name) {
    source.addEventListener(name, function (event) {
      streamUp = true;
      var data;
      try { data = JSON.parse(event.data); } catch (e) { return; }
      handlers[name](data);
      show();
    });
  });
  show();
  return source;
};
quhao.el = function (tag, cls, text) {
  var node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
};
quhao.minutes = function (seconds) {
  if (seconds === null || seconds === undefined) return "—";
  var m = Math.round(seconds / 60);
  return m < 1 ? "即将" : "约 " + m + " 分钟";
};
quhao.clock = function (node) {
  var days = ["日", "一", "二", "三", "四", "五", "六"];
  function pad(n) { return n < 10 ? "0" + n : "" + n; }
  function tick() {
    var d = new Date();
    node.textContent = d.getFullYear() + "年" + (d.getMonth() + 1) + "月" + d.getDate() +
      "日 星期" + days[d.getDay()] + " " + pad(d.getHours()) + ":" + pad(d.getMinutes()) +
      ":" + pad(d.getSeconds());
  }
  tick();
  setInterval(tick, 1000);
};
