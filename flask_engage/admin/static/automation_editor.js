/* The automation editor: steps as forms (wait, condition, send, end, wait for an event,
 * if/otherwise with the steps of each arm nested), moved and removed with buttons, written to the steps JSON that the form posts (editable too, for power
 * users). Conditions use the segment builder (builder.js); a send step previews its
 * message for a customer and sends a test. Plain JavaScript. */
(function () {
  "use strict";
  var form = document.getElementById("automation-form");
  if (!form) { return; }
  var data = JSON.parse(document.getElementById("automation-editor-data").textContent);
  var list = document.getElementById("steps-editor");
  var textarea = document.getElementById("steps");
  var jsonError = document.getElementById("steps-json-error");
  var segmentSelect = document.getElementById("segment");
  var csrf = document.querySelector('meta[name="engage-csrf"]').getAttribute("content");
  var LABELS = {};
  data.kinds.forEach(function (k) { LABELS[k.key] = k.label; });
  var CHANNELS = {};
  data.channels.forEach(function (c) { CHANNELS[c.name] = c; });
  var steps;
  try { steps = JSON.parse(textarea.value); } catch (e) { steps = []; }
  if (!Array.isArray(steps)) { steps = []; }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") { node.textContent = attrs[key]; } else { node.setAttribute(key, attrs[key]); }
    });
    (children || []).forEach(function (child) { if (child) { node.appendChild(typeof child === "string" ? document.createTextNode(child) : child); } });
    return node;
  }
  function field(label, control, help) {
    var id = "f" + Math.random().toString(36).slice(2);
    control.id = id;
    return el("div", {"class": "form-group mb-2"}, [
      el("label", {"for": id, "class": "small mb-0", text: label}), control,
      help ? el("small", {"class": "form-text text-muted", text: help}) : null
    ]);
  }
  function button(cls, text, onClick, title) {
    var b = el("button", {type: "button", "class": "btn btn-sm " + cls, text: text, title: title || text});
    b.addEventListener("click", onClick);
    return b;
  }
  function options(select, values, labels, current) {
    values.forEach(function (value) {
      var o = el("option", {value: value, text: labels[value] || value});
      if (String(value) === String(current)) { o.selected = true; }
      select.appendChild(o);
    });
    return select;
  }
  function post(url, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrf},
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().then(function (answer) { return {ok: response.ok, body: answer}; });
    });
  }
  function sync() {
    textarea.value = JSON.stringify(steps, null, 2);
    jsonError.textContent = "";
  }

  // -- one card per step -------------------------------------------------------------------
  function keyOf(step) { return Object.keys(step)[0]; }

  function waitBody(step) {
    var spec = step.wait;
    var box = el("div", {"class": "step-body"});
    var mode = options(el("select", {"class": "form-control form-control-sm wait-mode"}), ["for", "until"],
      {"for": "for a while", until: "until a time of day"}, "until" in spec ? "until" : "for");
    var detail = el("div", {"class": "engage-toolbar mt-1"});
    function draw() {
      detail.innerHTML = "";
      if (mode.value === "until") {
        var at = el("input", {"class": "form-control form-control-sm wait-until", type: "time", required: "required"});
        at.value = spec.until || "09:00";
        step.wait = spec = {until: at.value};
        at.addEventListener("input", function () { spec.until = at.value; sync(); });
        detail.appendChild(at);
        detail.appendChild(el("span", {"class": "small text-muted",
          text: "in the customer’s time zone (their “timezone” attribute, else " + data.timezone + ")"}));
        return;
      }
      // A stored wait may combine units: shown in the smallest of them.
      duration(spec, sync).forEach(function (node) { detail.appendChild(node); });
    }
    mode.addEventListener("change", function () { spec = step.wait = {}; draw(); sync(); });
    draw();
    box.appendChild(el("div", {"class": "engage-toolbar"}, [el("span", {text: "Wait"}), mode]));
    box.appendChild(detail);
    return box;
  }

  // An amount and a unit (days, hours or minutes) written into spec; other units go.
  function duration(spec, onChange) {
    var factor = {days: 1440, hours: 60, minutes: 1};
    var units = Object.keys(spec).filter(function (u) { return u in factor; });
    var unit = units.length ? units.reduce(function (a, b) { return factor[a] <= factor[b] ? a : b; }) : "days";
    var minutes = units.reduce(function (sum, u) { return sum + Number(spec[u] || 0) * factor[u]; }, 0);
    var amount = el("input", {"class": "form-control form-control-sm wait-amount", type: "number", min: "0", step: "any"});
    amount.value = units.length ? minutes / factor[unit] : 1;
    var unitSelect = options(el("select", {"class": "form-control form-control-sm wait-unit"}), data.wait_units, {}, unit);
    function update() {
      Object.keys(factor).forEach(function (u) { delete spec[u]; });
      spec[unitSelect.value] = amount.value.trim() === "" ? null : Number(amount.value);
      onChange();
    }
    amount.addEventListener("input", update);
    unitSelect.addEventListener("change", update);
    update();
    return [amount, unitSelect];
  }

  // The steps of a branch's two arms, each a list of cards with its own add buttons.
  function arms(spec, depth, labels) {
    var box = el("div", {"class": "step-arms"});
    ["then", "else"].forEach(function (arm) {
      if (!Array.isArray(spec[arm])) { spec[arm] = []; }
      var inner = el("div", {"class": "arm-steps"});
      cards(inner, spec[arm], depth + 1);
      var tools = el("div", {"class": "engage-toolbar"});
      addButtons(tools, spec[arm], depth + 1);
      box.appendChild(el("div", {"class": "step-arm mt-2", "data-arm": arm}, [
        el("div", {"class": "small font-weight-bold mb-1", text: labels[arm]}), inner, tools
      ]));
    });
    return box;
  }

  function waitForBody(step, depth) {
    var spec = step.wait_for;
    var box = el("div", {"class": "step-body"});
    var event = el("input", {"class": "form-control form-control-sm wait-for-event", list: "event-names",
      placeholder: "Event name", "aria-label": "Event to wait for"});
    event.value = spec.event || "";
    event.addEventListener("input", function () { spec.event = event.value; sync(); });
    box.appendChild(el("div", {"class": "engage-toolbar"},
      [el("span", {text: "Wait for"}), event, el("span", {text: "for up to"})].concat(duration(spec, sync))));
    var where = el("textarea", {"class": "form-control form-control-sm text-monospace wait-for-where", rows: "1",
      placeholder: '[{"property": "amount", "op": "gte", "value": 100}]', "aria-label": "Only when its properties match"});
    where.value = spec.where ? JSON.stringify(spec.where) : "";
    where.addEventListener("input", function () {
      if (!where.value.trim()) { delete spec.where; where.classList.remove("is-invalid"); sync(); return; }
      try { spec.where = JSON.parse(where.value); where.classList.remove("is-invalid"); sync(); } catch (e) { where.classList.add("is-invalid"); }
    });
    box.appendChild(el("details", {"class": "small mt-1"}, [
      el("summary", {text: "Only when its properties match (optional, JSON)"}), where]));
    box.appendChild(arms(spec, depth, {then: "If they do it in time:", "else": "If the time runs out:"}));
    return box;
  }

  function branchBody(step, depth) {
    var spec = step.branch;
    var box = el("div", {"class": "step-body"});
    box.appendChild(el("p", {"class": "mb-1", text: "If the customer matches (checked when the run reaches this step):"}));
    var preview = el("div", {"class": "alert alert-info py-1 small step-count", text: "Counting…"});
    var holder = el("div", {"class": "engage-builder step-builder"});
    box.appendChild(holder);
    box.appendChild(preview);
    EngageBuilder.mount(holder, {
      schemaUrl: data.schema_url, filters: spec["if"], data: data.names, countUrl: data.count_url,
      preview: preview, onChange: function (root) { spec["if"] = root; sync(); }
    });
    box.appendChild(arms(spec, depth, {then: "Then:", "else": "Otherwise:"}));
    return box;
  }

  function ifBody(step) {
    var box = el("div", {"class": "step-body"});
    box.appendChild(el("p", {"class": "mb-1", text: "Go on only if the customer matches (checked when the run reaches this step; otherwise they leave the automation):"}));
    var preview = el("div", {"class": "alert alert-info py-1 small step-count", text: "Counting…"});
    var holder = el("div", {"class": "engage-builder step-builder"});
    box.appendChild(holder);
    box.appendChild(preview);
    EngageBuilder.mount(holder, {
      schemaUrl: data.schema_url,
      filters: step["if"],
      data: data.names,
      countUrl: data.count_url,
      preview: preview,
      onChange: function (root) { step["if"] = root; sync(); }
    }).then(function (builder) { holder._builder = builder; });
    return box;
  }

  function sendBody(step) {
    var spec = step.send;
    var box = el("div", {"class": "step-body"});
    var channel = options(el("select", {"class": "form-control form-control-sm send-channel"}),
      data.channels.map(function (c) { return c.name; }),
      data.channels.reduce(function (labels, c) { labels[c.name] = c.label; return labels; }, {}), spec.channel);
    var fields = el("div", {"class": "send-fields"});
    var result = el("div", {"class": "send-result mt-2"});
    function text(cls, key, placeholder) {
      var input = el("input", {"class": "form-control form-control-sm " + cls, placeholder: placeholder || ""});
      input.value = spec[key] || "";
      input.addEventListener("input", function () { spec[key] = input.value; sync(); });
      return input;
    }
    function draw() {
      fields.innerHTML = "";
      var kind = CHANNELS[spec.channel] || {options: [], needs_subject: false};
      Object.keys(spec).forEach(function (key) {
        var keep = key === "channel" || key === "body" || (key === "subject" && kind.needs_subject) ||
          kind.options.indexOf(key) >= 0;
        if (!keep) { delete spec[key]; }
      });
      if (kind.needs_subject) { fields.appendChild(field("Subject", text("send-subject", "subject", "Hi {{ customer.first_name }}"))); }
      if (kind.options.indexOf("url") >= 0) { fields.appendChild(field("Web address (URL)", text("send-url", "url", "https://"))); }
      if (kind.options.indexOf("headers") >= 0) {
        var headers = el("textarea", {"class": "form-control form-control-sm text-monospace send-headers", rows: "2",
          placeholder: "Name: value"});
        headers.value = Object.keys(spec.headers || {}).map(function (k) { return k + ": " + spec.headers[k]; }).join("\n");
        headers.addEventListener("input", function () {
          var parsed = {};
          headers.value.split("\n").forEach(function (line) {
            var at = line.indexOf(":");
            if (at > 0) { parsed[line.slice(0, at).trim()] = line.slice(at + 1).trim(); }
          });
          if (Object.keys(parsed).length) { spec.headers = parsed; } else { delete spec.headers; }
          sync();
        });
        fields.appendChild(field("Headers (one “Name: value” per line)", headers));
      }
      var body = el("textarea", {"class": "form-control form-control-sm text-monospace send-body", rows: "5"});
      body.value = spec.body || "";
      body.addEventListener("input", function () { spec.body = body.value; sync(); });
      fields.appendChild(field("Message", body, "HTML allowed; {{ customer.first_name }} and other attributes fill in per customer."));
      testEmail.hidden = kind.test !== "email";
      testButton.textContent = kind.test === "request" ? "Send a test request" : "Send test";
      testButton.hidden = !kind.test;
    }
    var customer = el("input", {"class": "form-control form-control-sm send-customer",
      placeholder: "Customer (email, name or id)", "aria-label": "Write it for the customer"});
    var previewButton = button("btn-outline-secondary send-preview", "Preview", function () {
      result.innerHTML = "Rendering…";
      post(data.preview_url, {step: spec, customer: customer.value, segment: Number(segmentSelect.value)}).then(function (answer) {
        result.innerHTML = "";
        if (!answer.ok) { result.appendChild(el("div", {"class": "alert alert-danger py-1", text: answer.body.plain || answer.body.error})); return; }
        var card = el("div", {"class": "card send-preview-box"}, [
          el("div", {"class": "card-header small", text: "For " + answer.body.customer + (answer.body.subject ? " · " + answer.body.subject : "")})
        ]);
        var inner = el("div", {"class": "card-body p-2"});
        if (answer.body.html) {
          var frame = el("iframe", {sandbox: "", "class": "engage-preview"});
          frame.srcdoc = answer.body.html;
          inner.appendChild(frame);
        } else { inner.appendChild(el("pre", {"class": "engage-pre mb-0", text: answer.body.text})); }
        card.appendChild(inner);
        result.appendChild(card);
      });
    });
    var testEmail = el("input", {"class": "form-control form-control-sm send-test-email", type: "email",
      placeholder: "you@example.com", "aria-label": "Send a test to"});
    var testButton = button("btn-outline-secondary send-test", "Send test", function () {
      result.innerHTML = "Sending…";
      post(data.test_url, {step: spec, customer: customer.value, segment: Number(segmentSelect.value), email: testEmail.value})
        .then(function (answer) {
          result.innerHTML = "";
          var good = answer.ok && answer.body.ok !== false;
          var words = !answer.ok ? (answer.body.plain || answer.body.error)
            : answer.body.sent_to ? "Test sent to " + answer.body.sent_to + ", written for " + answer.body.customer + "."
            : good ? "The receiver answered " + answer.body.status + " in " + answer.body.latency_ms + " ms."
            : "The request failed: " + answer.body.error;
          result.appendChild(el("div", {"class": "alert py-1 " + (good ? "alert-success" : "alert-danger"), text: words}));
        });
    });
    var tools = el("div", {"class": "engage-toolbar send-tools"}, [customer, previewButton, testEmail, testButton]);
    channel.addEventListener("change", function () { spec.channel = channel.value; draw(); sync(); });
    box.appendChild(field("Channel", channel));
    box.appendChild(fields);
    box.appendChild(tools);
    box.appendChild(result);
    draw();
    return box;
  }

  function exitBody() {
    return el("div", {"class": "step-body", text: "The customer leaves the automation here."});
  }
  function otherBody(step) {
    var area = el("textarea", {"class": "form-control form-control-sm text-monospace step-json", rows: "3"});
    area.value = JSON.stringify(step[keyOf(step)]);
    area.addEventListener("input", function () {
      try { step[keyOf(step)] = JSON.parse(area.value); area.classList.remove("is-invalid"); sync(); } catch (e) { area.classList.add("is-invalid"); }
    });
    return el("div", {"class": "step-body"}, [area]);
  }
  var BODIES = {wait: waitBody, "if": ifBody, send: sendBody, exit: exitBody, wait_for: waitForBody, branch: branchBody};

  // The cards of a list of steps: the automation's own (depth 0), or a branch arm's.
  function cards(container, arr, depth) {
    arr.forEach(function (step, index) {
      var key = keyOf(step);
      var attrs = {"class": "card step-card mb-2" + (depth ? " nested-step" : ""), "data-kind": key, "data-depth": depth};
      if (!depth) { attrs["data-index"] = index; }  // errors name top-level steps by index
      var card = el("div", attrs);
      var head = el("div", {"class": "card-header py-1 engage-toolbar"}, [
        el("strong", {"class": "step-title", text: (index + 1) + ". " + (LABELS[key] || key)})
      ]);
      var moves = el("span", {"class": "ml-auto"});
      if (index > 0) { moves.appendChild(button("btn-outline-secondary step-up", "↑", function () { move(arr, index, -1); }, "Move up")); }
      if (index < arr.length - 1) { moves.appendChild(button("btn-outline-secondary step-down", "↓", function () { move(arr, index, 1); }, "Move down")); }
      moves.appendChild(button("btn-outline-danger step-remove", "×", function () {
        if (window.confirm("Remove step " + (index + 1) + " (" + (LABELS[key] || key) + ")?")) { arr.splice(index, 1); render(); }
      }, "Remove this step"));
      head.appendChild(moves);
      card.appendChild(head);
      var body = el("div", {"class": "card-body py-2"});
      body.appendChild((BODIES[key] || otherBody)(step, depth));
      card.appendChild(body);
      container.appendChild(card);
    });
    if (!arr.length) {
      container.appendChild(el("p", {"class": "text-muted small", text: depth ? "No steps: the run goes on after the branch." : "No steps yet: add one below."}));
    }
  }
  function render() {
    list.innerHTML = "";
    cards(list, steps, 0);
    sync();
  }
  function move(arr, index, by) {
    var step = arr.splice(index, 1)[0];
    arr.splice(index + by, 0, step);
    render();
  }
  var FRESH = {
    wait: function () { return {wait: {days: 1}}; },
    "if": function () { return {"if": {all: []}}; },
    send: function () {
      var first = data.channels[0];
      var spec = {channel: first.name, body: ""};
      if (first.needs_subject) { spec.subject = ""; }
      return {send: spec};
    },
    exit: function () { return {exit: true}; },
    wait_for: function () { return {wait_for: {event: "", days: 3, then: [], "else": []}}; },
    branch: function () { return {branch: {"if": {all: []}, then: [], "else": []}}; }
  };
  // "+ Wait", "+ Send a message"... buttons that add a step to arr.
  function addButtons(container, arr, depth) {
    data.kinds.forEach(function (kind) {
      if (!FRESH[kind.key]) { return; }
      container.appendChild(button("btn-outline-primary add-step-" + kind.key, "+ " + kind.label, function () {
        arr.push(FRESH[kind.key]());
        render();
        if (!depth) {
          var all = list.querySelectorAll(".step-card[data-index]");
          all[all.length - 1].scrollIntoView({block: "nearest"});
        }
      }));
    });
  }
  addButtons(document.getElementById("add-steps"), steps, 0);

  var timer = null;
  textarea.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(function () {
      try {
        var parsed = JSON.parse(textarea.value);
        if (!Array.isArray(parsed)) { throw new Error("expected a list of steps"); }
        steps.length = 0;  // the same list: the add buttons hold it
        Array.prototype.push.apply(steps, parsed);
        render();
      } catch (e) { jsonError.textContent = "Not valid JSON: " + e.message; }
    }, 500);
  });

  // A server error names its step ("steps[2].send.subject: ..."): shown on that card.
  function showError() {
    if (!data.error_field) { return; }
    var found = /^steps\[(\d+)\](?:\.(\w+))?(?:\.(\w+))?/.exec(data.error_field);
    if (!found) { return; }
    var card = list.querySelector('.step-card[data-index="' + found[1] + '"]');
    if (!card) { return; }
    card.classList.add("border-danger");
    var names = {subject: ".send-subject", body: ".send-body", url: ".send-url", headers: ".send-headers",
      channel: ".send-channel", until: ".wait-until", days: ".wait-amount", hours: ".wait-amount", minutes: ".wait-amount"};
    var target = found[3] && names[found[3]] ? card.querySelector(names[found[3]]) : null;
    if (target) { target.classList.add("is-invalid"); }
    var message = el("div", {"class": "step-error text-danger small mt-1", text: data.error_plain || data.error_message});
    if (data.error_plain && data.error_plain !== data.error_message) {
      message.appendChild(el("small", {"class": "d-block text-muted", text: "Details: " + data.error_message}));
    }
    card.querySelector(".card-body").appendChild(message);
    card.scrollIntoView({block: "center"});
  }
  render();
  showError();
}());
