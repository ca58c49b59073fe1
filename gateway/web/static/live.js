// Live updates for the commissioning page: server-sent events carry server-rendered fragments.
// Without this script every page still works; it only saves reloading.
(function () {
  "use strict";
  var body = document.body;
  var topic = body.getAttribute("data-live");
  var liveState = document.getElementById("live-state");
  var skew = 0; // server clock minus ours, from each event

  function fmtAge(s) {
    s = Math.max(0, Math.floor(s));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }
  function tickAges() {
    var now = Date.now() / 1000 + skew;
    document.querySelectorAll("[data-last]").forEach(function (el) {
      el.textContent = fmtAge(now - parseFloat(el.getAttribute("data-last"))) + " ago";
    });
  }
  function fromHtml(html) {
    var t = document.createElement("template");
    t.innerHTML = html.trim();
    return t.content.firstElementChild;
  }
  function apply(ev) {
    if (ev.now) skew = ev.now - Date.now() / 1000;
    var replace = ev.replace || {};
    Object.keys(replace).forEach(function (id) {
      var old = document.getElementById(id);
      if (!old) return;
      if (old.tagName === "TR") {
        var row = fromHtml(replace[id]);
        if (row && old.innerHTML !== row.innerHTML) { row.classList.add("flash"); old.replaceWith(row); }
      } else if (old.innerHTML !== replace[id]) {
        old.innerHTML = replace[id];
      }
    });
    var prepend = ev.prepend || {};
    Object.keys(prepend).forEach(function (id) {
      var list = document.getElementById(id);
      if (!list) return;
      var keep = parseInt(list.getAttribute("data-keep") || "50", 10);
      list.querySelectorAll(".empty-row").forEach(function (r) { r.remove(); });
      prepend[id].forEach(function (html) {
        var row = fromHtml(html);
        row.classList.add("flash");
        list.insertBefore(row, list.firstChild);
      });
      while (list.children.length > keep) list.removeChild(list.lastElementChild);
    });
    tickAges();
  }
  function connect() {
    if (!topic || !window.EventSource) return;
    var es = new EventSource("/events?topic=" + encodeURIComponent(topic));
    es.onopen = function () { liveState.hidden = false; liveState.classList.remove("off"); liveState.textContent = "Live"; };
    es.onerror = function () { liveState.hidden = false; liveState.classList.add("off"); liveState.textContent = "Reconnecting"; };
    es.onmessage = function (m) { try { apply(JSON.parse(m.data)); } catch (e) { /* one bad event */ } };
  }

  // Actions: same-origin POST with the page token; the answer is shown without leaving the page.
  var notice = document.getElementById("notice");
  var token = document.querySelector('meta[name="csrf-token"]').getAttribute("content");
  function say(text, bad) {
    notice.textContent = text;
    notice.classList.toggle("error", !!bad);
    notice.hidden = false;
  }
  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form.classList.contains("action")) return;
    var q = form.getAttribute("data-confirm");
    if (q && !window.confirm(q)) { e.preventDefault(); return; }
    e.preventDefault();
    var data = new FormData(form);
    if (e.submitter && e.submitter.name) data.append(e.submitter.name, e.submitter.value);
    fetch(form.action, {
      method: "POST", body: new URLSearchParams(data), credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRF-Token": token }
    }).then(function (r) {
      return r.text().then(function (t) {
        var msg;
        try { msg = JSON.parse(t).message; } catch (x) { msg = t.trim(); }
        if (r.status === 401) msg = "Sign in first (link at the top right), then try again.";
        say(msg || ("HTTP " + r.status), !r.ok);
      });
    }).catch(function () { say("The gateway did not answer.", true); });
  });

  // Points: filter as you type (the form still works without this script).
  var table = document.getElementById("points-table");
  if (table) {
    var q = document.getElementById("q"), fs = document.getElementById("f-sensor"),
        ft = document.getElementById("f-type"), fw = document.getElementById("f-writable"),
        count = document.getElementById("points-count");
    var rows = table.tBodies[0].rows, original = count.textContent;
    var filter = function () {
      var text = q.value.trim().toLowerCase(), shown = 0;
      for (var i = 0; i < rows.length; i++) {
        var r = rows[i];
        var ok = (!text || r.getAttribute("data-text").indexOf(text) >= 0) &&
          (!fs.value || r.getAttribute("data-owner") === fs.value) &&
          (!ft.value || r.getAttribute("data-type") === ft.value) &&
          (!fw.value || r.getAttribute("data-writable") === fw.value);
        r.hidden = !ok; if (ok) shown++;
      }
      var all = !text && !fs.value && !ft.value && !fw.value;
      var paged = parseInt(count.getAttribute("data-pages"), 10) > 1;
      count.textContent = all ? original : shown + " of the " + rows.length + " points on this page match" +
        (paged ? " (press Filter to search every page)" : "");
    };
    [q, fs, ft, fw].forEach(function (el) { el.addEventListener("input", filter); });
  }

  connect();
  setInterval(tickAges, 1000);
})();
