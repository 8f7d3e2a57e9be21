/* Engage admin: confirmations and live broadcast progress. Plain JavaScript. */
(function () {
  "use strict";
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });
  var progress = document.getElementById("broadcast-progress");
  if (!progress) { return; }
  var active = ["queued", "sending"];
  function poll() {
    fetch(progress.getAttribute("data-url"), {headers: {"Accept": "application/json"}, credentials: "same-origin"})
      .then(function (r) { return r.json(); })
      .then(function (data) {
        var counts = data.counts || {};
        Object.keys(counts).forEach(function (key) {
          var el = progress.querySelector('[data-count="' + key + '"]');
          if (el) { el.textContent = counts[key]; }
        });
        var done = counts.total ? (counts.total - counts.queued) / counts.total * 100 : 0;
        progress.querySelector(".progress-bar").style.width = Math.round(done) + "%";
        var badge = document.getElementById("broadcast-status");
        if (badge) { badge.textContent = data.status; }
        if (active.indexOf(data.status) >= 0) { setTimeout(poll, 1500); }
      });
  }
  if (active.indexOf(progress.getAttribute("data-status")) >= 0) { setTimeout(poll, 1000); }
}());
