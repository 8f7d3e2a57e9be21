/* Engage admin: confirmations, the send dialog (who gets it, a check of the templates,
 * then progress while it sends), live broadcast progress, channel fields that follow
 * the chosen channel, and an automation's trigger fields that follow its kind.
 * Plain JavaScript. */
(function () {
  "use strict";
  var csrfMeta = document.querySelector('meta[name="engage-csrf"]');
  var CSRF = csrfMeta ? csrfMeta.getAttribute("content") : "";

  function json(url, options) {
    options = options || {};
    options.credentials = "same-origin";
    options.headers = Object.assign({"Accept": "application/json", "X-CSRFToken": CSRF}, options.headers || {});
    return fetch(url, options).then(function (response) {
      return response.json().catch(function () { return {error: "HTTP " + response.status}; })
        .then(function (body) { return {ok: response.ok, status: response.status, body: body}; });
    });
  }
  function text(tag, content, cls) {
    var node = document.createElement(tag);
    node.textContent = content;
    if (cls) { node.className = cls; }
    return node;
  }
  function number(n) { return Number(n).toLocaleString("en"); }

  // -- confirmations ---------------------------------------------------------------------
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });

  // -- fields that belong to some channels only ---------------------------------------------
  var channel = document.getElementById("channel");
  function showChannelFields() {
    document.querySelectorAll("[data-channels]").forEach(function (group) {
      var names = group.getAttribute("data-channels").split(" ");
      group.hidden = names.indexOf(channel.value) < 0;
    });
  }
  if (channel) { channel.addEventListener("change", showChannelFields); showChannelFields(); }

  // -- an automation's trigger: the segment, list or event its kind needs -------------------
  var triggerKind = document.getElementById("trigger_kind");
  function showTriggerFields() {
    document.querySelectorAll("[data-trigger-kinds]").forEach(function (group) {
      group.hidden = group.getAttribute("data-trigger-kinds").split(" ").indexOf(triggerKind.value) < 0;
    });
  }
  if (triggerKind) { triggerKind.addEventListener("change", showTriggerFields); showTriggerFields(); }

  // -- broadcast progress ----------------------------------------------------------------------
  var ACTIVE = ["queued", "sending"];
  function showCounts(box, data) {
    var counts = data.counts || {};
    Object.keys(counts).forEach(function (key) {
      var el = box.querySelector('[data-count="' + key + '"]');
      if (el) { el.textContent = counts[key]; }
    });
    var done = counts.total ? (counts.total - counts.queued) / counts.total * 100 : 0;
    var bar = box.querySelector(".progress-bar");
    if (bar) { bar.style.width = Math.round(done) + "%"; bar.setAttribute("aria-valuenow", Math.round(done)); }
    return counts;
  }
  var progress = document.getElementById("broadcast-progress");
  function poll() {
    json(progress.getAttribute("data-url")).then(function (result) {
      if (!result.ok) { return; }
      progress.hidden = false;
      showCounts(progress, result.body);
      var badge = document.getElementById("broadcast-status");
      if (badge) { badge.textContent = result.body.status; }
      if (ACTIVE.indexOf(result.body.status) >= 0) { setTimeout(poll, 1500); } else { window.location.reload(); }
    });
  }
  if (progress && ACTIVE.indexOf(progress.getAttribute("data-status")) >= 0) { setTimeout(poll, 1000); }

  // -- the send dialog ---------------------------------------------------------------------------
  var dialog = document.getElementById("send-dialog");
  if (!dialog) { return; }
  var title = document.getElementById("send-title");
  var body = document.getElementById("send-body");
  var state = document.getElementById("send-state");
  var confirmButton = document.getElementById("confirm-send");
  var bar = document.getElementById("send-progress");
  var form = document.getElementById("broadcast-form") || document.getElementById("send-form");
  var checkUrl = form.getAttribute("data-check-url");
  var pending = null;

  function formFields(f) {
    var data = new FormData(f);
    var when = data.get("scheduled_at");
    return {
      name: data.get("name"), channel: data.get("channel"), subject: data.get("subject"),
      body: data.get("body"), url: data.get("url"), headers: data.get("headers"),
      segments: data.getAll("segments").map(Number),
      lists: data.getAll("lists").map(Number),
      send_to_unsubscribed: data.get("send_to_unsubscribed") === "y",
      scheduled_at: when ? when : null
    };
  }
  function open() { if (typeof dialog.showModal === "function") { dialog.showModal(); } else { dialog.setAttribute("open", ""); } }
  function close() { if (typeof dialog.close === "function" && dialog.open) { dialog.close(); } else { dialog.removeAttribute("open"); } }
  document.getElementById("cancel-send").addEventListener("click", close);

  function describe(answer, name) {
    body.innerHTML = "";
    var who = number(answer.recipients) + " customer" + (answer.recipients === 1 ? "" : "s");
    if (answer.scheduled_at) {
      title.textContent = "Schedule “" + name + "” for " + answer.scheduled_at + "?";
      body.appendChild(text("p", "It will go by " + answer.channel.toLowerCase() + " to " + who +
        " (counted now; customers who join or leave its segments or lists by then are counted then)."));
    } else {
      title.textContent = "Send “" + name + "” now to " + who + "?";
      body.appendChild(text("p", "It goes by " + answer.channel.toLowerCase() + " to " + who + ", each once."));
    }
    var skipped = [];
    if (answer.no_address) { skipped.push(number(answer.no_address) + " have no address"); }
    if (answer.unsubscribed) {
      skipped.push(number(answer.unsubscribed) + " unsubscribed" + (answer.send_to_unsubscribed ? " (sent to anyway: transactional)" : " (not sent to)"));
    }
    body.appendChild(text("p", number(answer.customers) + " customers are " + answer.audience +
      (skipped.length ? "; of them " + skipped.join(", ") : "") + ".", "small text-muted"));
    if (answer.failed) {
      var alert = text("div", answer.blocked, "alert alert-danger");
      alert.id = "send-blocked";
      var list = document.createElement("ul");
      list.className = "mb-0";
      answer.failures.forEach(function (f) {
        var names = f.customers.join(", ") + (f.more ? " and " + number(f.more) + " more" : "");
        list.appendChild(text("li", f.plain + " (for " + names + ")"));
      });
      alert.appendChild(list);
      body.appendChild(alert);
      confirmButton.disabled = true;
      confirmButton.textContent = "Fix the message first";
      return;
    }
    body.appendChild(text("p", "Checked: the message renders for " + answer.sampled + " sampled recipient" +
      (answer.sampled === 1 ? "" : "s") + ".", "small text-success"));
    confirmButton.disabled = answer.recipients === 0 && !answer.scheduled_at;
    confirmButton.textContent = (answer.scheduled_at ? "Schedule for " : "Send to ") + who;
  }

  function check(event) {
    if (event) { event.preventDefault(); }
    var draft = form.getAttribute("data-broadcast");
    var request = draft ? {broadcast_id: Number(draft)} : formFields(form);
    var name = draft ? document.querySelector("h2").firstChild.textContent.trim() : (request.name || "this broadcast");
    title.textContent = "Checking…";
    body.innerHTML = "";
    state.textContent = "";
    bar.hidden = true;
    confirmButton.disabled = true;
    confirmButton.textContent = "Send";
    open();
    pending = null;
    json(checkUrl, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(request)})
      .then(function (result) {
        if (!result.ok) {
          title.textContent = "This broadcast cannot be sent yet";
          body.appendChild(text("div", result.body.plain || result.body.error, "alert alert-danger"));
          return;
        }
        pending = result.body;
        describe(result.body, name);
      });
  }
  document.querySelectorAll("[data-send]").forEach(function (b) { b.addEventListener("click", check); });
  var when = document.getElementById("scheduled_at");
  var sendNow = document.getElementById("send-now");
  if (when && sendNow && form.id === "broadcast-form") {
    var label = function () { sendNow.textContent = when.value ? "Schedule…" : "Send now…"; };
    when.addEventListener("input", label);
    label();
  }

  // Save the draft first (the form), then send it while showing its progress.
  function saved() {
    if (form.id !== "broadcast-form") {
      return Promise.resolve({send_url: form.getAttribute("action"), counts_url: progress && progress.getAttribute("data-url"),
        url: window.location.pathname});
    }
    var data = new FormData(form);
    data.set("action", "draft");
    return json(form.getAttribute("action") || window.location.pathname, {method: "POST", body: data}).then(function (result) {
      if (!result.ok) { throw new Error(result.body.plain || result.body.error); }
      return result.body;
    });
  }
  confirmButton.addEventListener("click", function () {
    if (!pending) { return; }
    confirmButton.disabled = true;
    document.getElementById("cancel-send").disabled = true;
    state.textContent = pending.scheduled_at ? "Scheduling…" : "Sending…";
    saved().then(function (links) {
      var done = false;
      if (!pending.scheduled_at && links.counts_url) {
        bar.hidden = false;
        var watch = function () {
          if (done) { return; }
          json(links.counts_url).then(function (result) {
            if (done || !result.ok) { return; }
            var counts = showCounts(dialog, result.body);
            state.textContent = number(counts.sent || 0) + " sent, " + number(counts.failed || 0) + " failed, " +
              number(counts.queued || 0) + " to go";
            setTimeout(watch, 700);
          });
        };
        setTimeout(watch, 300);
      }
      return json(links.send_url, {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"},
        body: "csrf_token=" + encodeURIComponent(CSRF)}).then(function (result) {
        done = true;
        window.location.assign(links.url);
      });
    }).catch(function (error) {
      state.textContent = "";
      body.appendChild(text("div", String(error.message || error), "alert alert-danger"));
      document.getElementById("cancel-send").disabled = false;
    });
  });
}());
