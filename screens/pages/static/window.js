// A window screen (服务评价器): 五公开 of the clerk logged in, the number served,
// 暂停服务, and after a finished ticket the five 好差评 levels with a countdown; a bad
// rating asks for the reason. A touch is sent to the daemon, which rates as this
// window's own device (rater-W{n}).
"use strict";
(function () {
  var body = document.body;
  var overlay = document.getElementById("rating");
  var levels = document.getElementById("levels");
  var reasons = document.getElementById("reasons");
  var thanks = document.getElementById("thanks");
  var countdown = document.getElementById("countdown");
  var prompt = null, deadline = 0, chosen = null, touch = false, timer = null;
  quhao.clock(document.getElementById("clock"));

  function clerks(view) {
    var box = document.getElementById("clerks");
    box.textContent = "";
    if (!view.staff.length) {
      box.appendChild(quhao.el("div", "clerk-none", view.status === "closed" ? "未开放" : ""));
      return;
    }
    view.staff.forEach(function (c) {
      var card = quhao.el("div", "clerk");
      card.dataset.staff = c.id;
      var img = quhao.el("img", "photo");
      img.alt = c.name;
      img.src = "/photo/" + encodeURIComponent(c.id);
      img.onerror = function () { img.replaceWith(quhao.el("div", "photo no-photo", c.name.slice(0, 1))); };
      card.appendChild(img);
      var info = quhao.el("div", "clerk-info");
      info.appendChild(quhao.el("div", "clerk-name", c.name));
      if (c.party_member) info.appendChild(quhao.el("div", "badge", "共产党员岗"));
      info.appendChild(quhao.el("div", "clerk-line", "工号：" + c.id));
      if (c.contact) info.appendChild(quhao.el("div", "clerk-line", "联系电话：" + c.contact));
      if (c.services.length) info.appendChild(quhao.el("div", "clerk-line", "办理业务：" + c.services.join("、")));
      if (c.pledge) info.appendChild(quhao.el("div", "pledge", "服务承诺：" + c.pledge));
      card.appendChild(info);
      box.appendChild(card);
    });
  }
  function serving(view) {
    var label = document.getElementById("serving-label");
    var number = document.getElementById("serving");
    body.classList.toggle("paused", view.status === "paused");
    if (view.status === "serving" && view.ticket) {
      label.textContent = "当前办理";
      number.textContent = view.ticket;
    } else {
      label.textContent = "";
      number.textContent = { paused: "暂停服务", closed: "暂停服务", idle: "欢迎办理" }[view.status] || "";
    }
    document.getElementById("services").textContent = view.services.length ? "办理业务：" + view.services.join("、") : "";
  }
  function tick() {
    var left = Math.max(0, Math.ceil((deadline - Date.now()) / 1000));
    countdown.textContent = prompt && prompt.rated === null ? left + " 秒" : "";
    if (Date.now() >= deadline) { close(); return; }
    timer = setTimeout(tick, 250);
  }
  function close() {
    overlay.hidden = true;
    prompt = null;
    if (timer) { clearTimeout(timer); timer = null; }
  }
  function showThanks() {
    levels.hidden = true;
    reasons.hidden = true;
    thanks.hidden = false;
    countdown.textContent = "";
  }
  function send(level, reason) {
    if (!prompt) return;
    var ticket = prompt.ticket;
    fetch(body.dataset.rate, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ticket: ticket, level: level, reason: reason || "" })
    }).then(function (r) { return r.json(); }).then(function (answer) {
      if (answer.ok) { showThanks(); deadline = Date.now() + 4000; }
    }).catch(function () {});
  }
  function buildLevels(view) {
    levels.textContent = "";
    view.levels.forEach(function (l) {
      var b = quhao.el("button", "level level-" + l.level, l.name);
      b.dataset.level = l.level;
      b.disabled = !touch;
      b.onclick = function () {
        if (l.level <= 2) { chosen = l.level; levels.hidden = true; reasons.hidden = false; }
        else send(l.level, "");
      };
      levels.appendChild(b);
    });
    var list = document.getElementById("reason-list");
    list.textContent = "";
    view.reasons.concat(["不说明原因"]).forEach(function (text, i) {
      var b = quhao.el("button", "reason", text);
      b.dataset.reason = i < view.reasons.length ? text : "";
      b.onclick = function () { send(chosen, b.dataset.reason); };
      list.appendChild(b);
    });
  }
  function rating(view) {
    var r = view.rating;
    if (!r) { if (prompt && prompt.rated === null) close(); return; }
    var fresh = !prompt || prompt.ticket !== r.ticket;
    prompt = r;
    deadline = Date.now() + r.remaining_s * 1000;
    overlay.hidden = false;
    document.getElementById("rating-ticket").textContent = r.number;
    if (r.rated !== null) { showThanks(); }
    else if (fresh) { levels.hidden = false; reasons.hidden = true; thanks.hidden = true; chosen = null; }
    if (!timer) tick();
  }
  quhao.live(body.dataset.stream, {
    window: function (view) {
      touch = view.touch;
      quhao.hallOnline(view.hall.online);
      document.getElementById("hall-name").textContent = view.hall.name;
      clerks(view);
      serving(view);
      if (!levels.children.length) buildLevels(view);
      rating(view);
    }
  });
})();
