// A ticket's phone page (无声叫号): number, service, people ahead and estimated wait,
// live; when called: 请到 N 号窗口 at once, vibration and a notification where allowed.
"use strict";
(function () {
  var body = document.body;
  var status = document.getElementById("status");
  var detail = document.getElementById("detail");
  var button = document.getElementById("notify");
  var lastAlert = "";
  function alertCall(t, text) {
    var key = t.status + t.window + ":" + t.recalls;
    if (key === lastAlert) return;
    lastAlert = key;
    if (navigator.vibrate) navigator.vibrate([400, 200, 400, 200, 400]);
    if (window.Notification && Notification.permission === "granted") {
      try { new Notification(t.number + " " + text, { tag: t.id, renotify: true }); } catch (e) {}
    }
  }
  function render(t) {
    quhao.hallOnline(t.hall.online);
    document.getElementById("number").textContent = t.number;
    document.getElementById("service").textContent = t.service_name;
    body.className = "phone state-" + t.status;
    detail.textContent = "";
    if (t.status === "called") {
      var text = "请到 " + t.window + " 号窗口";
      status.textContent = text;
      if (t.recalls) detail.textContent = "再次呼叫，请尽快前往";
      alertCall(t, text);
    } else if (t.status === "waiting" || t.status === "unknown") {
      status.textContent = t.ahead === null ? "排队中" :
        "前面还有 " + t.ahead + " 人" + (t.approximate ? "（约）" : "");
      detail.textContent = t.wait_s === null ? "" : "预计等候 " + quhao.minutes(t.wait_s);
      if (t.last === "transferred" && t.transferred_from)
        detail.textContent = "已由 " + t.transferred_from + " 转至 " + t.service_name + "，请继续等候";
      if (t.last === "reinstated") detail.textContent = "已恢复排队";
    } else if (t.status === "skipped") {
      status.textContent = "已过号";
      detail.textContent = "请到服务台咨询";
    } else if (t.status === "finished") {
      status.textContent = "办理完毕";
      detail.textContent = "感谢您的耐心等候";
    } else if (t.status === "voided" || t.status === "expired") {
      status.textContent = "号码已失效";
    }
  }
  if (window.Notification && Notification.permission === "default") {
    button.hidden = false;
    button.onclick = function () {
      Notification.requestPermission().then(function () { button.hidden = true; });
    };
  }
  quhao.live(body.dataset.stream, { ticket: render });
})();
