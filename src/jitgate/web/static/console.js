// jitgate console: refresh marked fragments in place and count down deadlines. No framework.
(function () {
  "use strict";

  function fmt(seconds) {
    if (seconds <= 0) return "now";
    var s = Math.floor(seconds), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    if (h) return h + "h " + String(m).padStart(2, "0") + "m";
    if (m) return m + "m " + String(r).padStart(2, "0") + "s";
    return r + "s";
  }

  function tickCountdowns() {
    var now = Date.now();
    document.querySelectorAll(".countdown[data-deadline]").forEach(function (el) {
      var deadline = Date.parse(el.getAttribute("data-deadline"));
      if (!isNaN(deadline)) {
        var left = (deadline - now) / 1000;
        el.textContent = fmt(left);
        el.classList.toggle("soon", left < 120);
      }
    });
  }

  // While someone is typing a comment in a fragment, leave it alone.
  function busy(el) {
    var active = document.activeElement;
    if (active && el.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) return true;
    return Array.prototype.some.call(el.querySelectorAll("input[type=text], textarea"), function (i) {
      return i.value !== "";
    });
  }

  function poll(el) {
    var url = el.getAttribute("data-poll");
    var every = parseInt(el.getAttribute("data-every") || "3000", 10);
    function schedule() { window.setTimeout(tick, every); }
    function tick() {
      if (document.hidden || busy(el)) { schedule(); return; }
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          if (response.status === 401) { window.location.reload(); return null; }
          if (!response.ok) return null;
          var version = response.headers.get("X-Version");
          var count = response.headers.get("X-Count");
          if (count !== null) {
            document.querySelectorAll("[data-count-of='" + el.id + "']").forEach(function (c) { c.textContent = count; });
          }
          if (version && version === el.getAttribute("data-version")) return null;
          return response.text().then(function (html) {
            if (busy(el)) return;
            el.innerHTML = html;
            if (version) el.setAttribute("data-version", version);
            tickCountdowns();
          });
        })
        .catch(function () {})
        .then(schedule);
    }
    schedule();
  }

  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    var message = (button && button.getAttribute("data-confirm")) || event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll]").forEach(poll);
    tickCountdowns();
    window.setInterval(tickCountdowns, 1000);
  });
})();
