/* Engage segment builder: edits the whole filter tree, shows a live count.
 * Plain JavaScript, no build step. The tree is kept as the filter JSON itself;
 * each rendered node carries data-path (the validator's path, e.g.
 * "filters.all[1].op" belongs to the node with data-path "filters.all[1]"),
 * so server errors are shown next to the condition that is wrong. */
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("engage-builder-data").textContent);
  var container = document.getElementById("engage-builder");
  var textarea = document.getElementById("filters-json");
  var jsonError = document.getElementById("json-error");
  var preview = document.getElementById("engage-preview");
  var csrf = document.querySelector('meta[name="engage-csrf"]').getAttribute("content");

  var ALL_OPS = ["eq", "ne", "gt", "gte", "lt", "lte", "between", "in", "not_in", "contains",
    "not_contains", "starts_with", "ends_with", "exists", "not_exists", "is_true", "is_false",
    "within_last", "more_than_ago"];
  var OPS_BY_TYPE = {
    string: ["eq", "ne", "in", "not_in", "contains", "not_contains", "starts_with", "ends_with",
      "gt", "gte", "lt", "lte", "exists", "not_exists"],
    number: ["eq", "ne", "gt", "gte", "lt", "lte", "between", "in", "not_in", "exists", "not_exists"],
    boolean: ["is_true", "is_false", "eq", "ne", "exists", "not_exists"],
    datetime: ["within_last", "more_than_ago", "gt", "gte", "lt", "lte", "between", "eq", "ne",
      "exists", "not_exists"],
    list: ["contains", "not_contains", "exists", "not_exists"]
  };
  var OP_LABELS = {
    eq: "is", ne: "is not", gt: ">", gte: ">=", lt: "<", lte: "<=", between: "between",
    "in": "is one of", not_in: "is none of", contains: "contains", not_contains: "does not contain",
    starts_with: "starts with", ends_with: "ends with", exists: "is set", not_exists: "is not set",
    is_true: "is true", is_false: "is false", within_last: "within the last",
    more_than_ago: "more than ... ago"
  };
  var NUMERIC_OPS = ["eq", "ne", "gt", "gte", "lt", "lte", "between"];
  var NO_VALUE = ["exists", "not_exists", "is_true", "is_false"];
  var MEASURES = ["count", "sum", "avg", "min", "max"];
  var WINDOWS = {"": "any time", last_days: "in the last N days", last_hours: "in the last N hours",
    older_than_days: "more than N days ago", since: "since", until: "until", between: "between",
    calendar: "calendar"};
  var CALENDAR = ["today", "this_week", "this_month", "last_month"];

  var root;
  try { root = JSON.parse(data.filters_text); } catch (e) { root = {all: []}; }
  if (!root || typeof root !== "object") { root = {all: []}; }

  // -- small DOM helpers --------------------------------------------------------------
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") { node.textContent = attrs[key]; } else { node.setAttribute(key, attrs[key]); }
    });
    (children || []).forEach(function (child) { if (child) { node.appendChild(child); } });
    return node;
  }
  function select(cls, options, value, labels) {
    var s = el("select", {"class": "form-control form-control-sm " + cls});
    options.forEach(function (opt) {
      var o = el("option", {value: opt, text: labels ? (labels[opt] || opt) : opt});
      if (String(opt) === String(value)) { o.selected = true; }
      s.appendChild(o);
    });
    return s;
  }
  function input(cls, value, attrs) {
    var i = el("input", Object.assign({"class": "form-control form-control-sm " + cls}, attrs || {}));
    i.value = value === undefined || value === null ? "" : value;
    return i;
  }
  function button(cls, text, onClick, title) {
    var b = el("button", {type: "button", "class": "btn btn-sm " + cls, text: text, title: title || text});
    b.addEventListener("click", onClick);
    return b;
  }
  function datalist(id, names) {
    var existing = document.getElementById(id);
    if (existing) { existing.remove(); }
    var list = el("datalist", {id: id});
    names.forEach(function (name) { list.appendChild(el("option", {value: name})); });
    document.body.appendChild(list);
    return id;
  }

  // -- value parsing ------------------------------------------------------------------
  function parseScalar(text, type) {
    var t = String(text).trim();
    if (type === "boolean") { if (t === "true") { return true; } if (t === "false") { return false; } }
    if ((type === "number" || type === undefined || type === null) && t !== "" && !isNaN(Number(t))) {
      return Number(t);
    }
    return text;
  }
  function parseNumber(text) {
    var t = String(text).trim();
    return t === "" || isNaN(Number(t)) ? null : Number(t);
  }
  function opsFor(type) { return OPS_BY_TYPE[type] || ALL_OPS; }

  // -- the value editor of a comparison (attribute or event property) -------------------
  function valueEditor(node, typeOf) {
    var wrap = el("span", {"class": "value-editor"});
    var op = node.op;
    if (NO_VALUE.indexOf(op) >= 0) { delete node.value; return wrap; }
    if (op === "between") {
      var pair = Array.isArray(node.value) ? node.value : ["", ""];
      node.value = pair;
      var low = input("value-low", pair[0], {placeholder: "from"});
      var high = input("value-high", pair[1], {placeholder: "to"});
      [low, high].forEach(function (box, index) {
        box.addEventListener("input", function () { node.value[index] = parseScalar(box.value, typeOf()); changed(); });
        wrap.appendChild(box);
      });
      return wrap;
    }
    if (op === "in" || op === "not_in") {
      var list = input("value", Array.isArray(node.value) ? node.value.join(", ") : "", {placeholder: "a, b, c"});
      list.addEventListener("input", function () {
        node.value = list.value.split(",").map(function (s) { return s.trim(); })
          .filter(function (s) { return s !== ""; }).map(function (s) { return parseScalar(s, typeOf()); });
        changed();
      });
      wrap.appendChild(list);
      return wrap;
    }
    if (op === "within_last" || op === "more_than_ago") {
      var current = node.value && typeof node.value === "object" ? node.value : {days: 7};
      var unit = Object.keys(current)[0] || "days";
      node.value = current;
      var amount = input("value", current[unit], {type: "number", min: "0", step: "any"});
      var units = select("value-unit", ["days", "hours", "minutes"], unit);
      function update() { var v = {}; v[units.value] = parseNumber(amount.value); node.value = v; changed(); }
      amount.addEventListener("input", update);
      units.addEventListener("change", update);
      wrap.appendChild(amount);
      wrap.appendChild(units);
      return wrap;
    }
    var box = input("value", node.value, {placeholder: "value"});
    if (!("value" in node)) { node.value = ""; }
    box.addEventListener("input", function () { node.value = parseScalar(box.value, typeOf()); changed(); });
    wrap.appendChild(box);
    return wrap;
  }

  // A name + operator + value row, shared by attribute conditions and event "where" rows.
  function comparisonRow(node, key, nameClass, listId, typeOf) {
    var row = el("span", {"class": "row-line comparison"});
    var name = input(nameClass, node[key], {list: listId, placeholder: key});
    var ops = select("op", opsFor(typeOf()), node.op, OP_LABELS);
    var editor = valueEditor(node, typeOf);
    name.addEventListener("input", function () {
      node[key] = name.value.trim();
      var allowed = opsFor(typeOf());
      var now = Array.prototype.map.call(ops.options, function (o) { return o.value; }).join();
      if (now !== allowed.join()) {
        var keep = allowed.indexOf(node.op) >= 0 ? node.op : allowed[0];
        var fresh = select("op", allowed, keep, OP_LABELS);
        fresh.addEventListener("change", onOp);
        ops.replaceWith(fresh);
        ops = fresh;
        if (keep !== node.op) { node.op = keep; rebuildValue(); }
      }
      changed();
    });
    function rebuildValue() {
      var next = valueEditor(node, typeOf);
      editor.replaceWith(next);
      editor = next;
    }
    function onOp() {
      var before = node.op;
      node.op = ops.value;
      var shape = function (op) {
        if (NO_VALUE.indexOf(op) >= 0) { return "none"; }
        if (op === "between" || op === "in" || op === "not_in" || op === "within_last" || op === "more_than_ago") { return op; }
        return "scalar";
      };
      if (shape(before) !== shape(node.op)) { delete node.value; }
      rebuildValue();
      changed();
    }
    if (!node.op) { node.op = ops.value; }
    ops.addEventListener("change", onOp);
    row.appendChild(name);
    row.appendChild(ops);
    row.appendChild(editor);
    return row;
  }

  // -- node renderers -----------------------------------------------------------------
  function controls(path, api) {
    var span = el("span", {"class": "node-controls ml-auto"});
    span.appendChild(button("btn-outline-secondary negate", "NOT", function () {
      api.replace({not: api.get()});
      render();
    }, "Negate this condition"));
    if (api.remove) {
      span.appendChild(button("btn-outline-danger remove", "×", function () { api.remove(); render(); }, "Remove"));
    }
    return span;
  }

  function renderNode(node, path, api) {
    if (node && (node.all || node.any)) { return renderGroup(node, path, api); }
    if (node && "not" in node) { return renderNot(node, path, api); }
    if (node && "attribute" in node) { return renderAttribute(node, path, api); }
    if (node && "event" in node) { return renderEvent(node, path, api); }
    if (node && "segment" in node) { return renderSegment(node, path, api); }
    if (node && "channel" in node) { return renderChannel(node, path, api); }
    return el("div", {"class": "node", "data-path": path, text: "Unknown filter: " + JSON.stringify(node)});
  }

  var NEW_NODES = {
    attribute: function () { return {attribute: "", op: "eq", value: ""}; },
    event: function () { return {event: "", count: {op: "gte", value: 1}}; },
    segment: function () { return {segment: (data.segments[0] || {}).slug || "all", op: "in"}; },
    channel: function () { return {channel: "email", op: "subscribed"}; },
    group: function () { return {any: []}; }
  };

  function renderGroup(node, path, api) {
    var key = node.all ? "all" : "any";
    var children = node[key];
    var box = el("div", {"class": "node group", "data-path": path});
    var kind = select("group-kind", ["all", "any"], key, {all: "All of these", any: "Any of these"});
    kind.addEventListener("change", function () {
      var list = node[key];
      delete node[key];
      node[kind.value] = list;
      render();
    });
    var head = el("div", {"class": "row-line"}, [kind]);
    Object.keys(NEW_NODES).forEach(function (what) {
      head.appendChild(button("btn-outline-primary add-" + what, "+ " + what[0].toUpperCase() + what.slice(1), function () {
        children.push(NEW_NODES[what]());
        render();
      }));
    });
    head.appendChild(controls(path, api));
    box.appendChild(head);
    var list = el("div", {"class": "children"});
    children.forEach(function (child, index) {
      list.appendChild(renderNode(child, path + "." + key + "[" + index + "]", {
        get: function () { return children[index]; },
        replace: function (value) { children[index] = value; },
        remove: function () { children.splice(index, 1); }
      }));
    });
    if (!children.length) { list.appendChild(el("div", {"class": "text-muted small", text: "Empty: matches everyone. Add a condition."})); }
    box.appendChild(list);
    return box;
  }

  function renderNot(node, path, api) {
    var box = el("div", {"class": "node negated", "data-path": path});
    var head = el("div", {"class": "row-line"}, [el("span", {"class": "kind", text: "Not"})]);
    head.appendChild(button("btn-outline-secondary unnegate", "remove NOT", function () { api.replace(node.not); render(); }));
    if (api.remove) { head.appendChild(button("btn-outline-danger remove", "×", function () { api.remove(); render(); }, "Remove")); }
    box.appendChild(head);
    box.appendChild(renderNode(node.not, path + ".not", {
      get: function () { return node.not; },
      replace: function (value) { node.not = value; },
      remove: null
    }));
    return box;
  }

  function renderAttribute(node, path, api) {
    var box = el("div", {"class": "node condition attribute-condition", "data-path": path});
    var listId = datalist("engage-attributes", Object.keys(data.attributes));
    var row = el("div", {"class": "row-line"}, [el("span", {"class": "kind", text: "Attribute"})]);
    row.appendChild(comparisonRow(node, "attribute", "attr-name", listId, function () { return data.attributes[node.attribute]; }));
    row.appendChild(controls(path, api));
    box.appendChild(row);
    return box;
  }

  function measureOf(node) {
    for (var i = 0; i < MEASURES.length; i++) { if (MEASURES[i] in node) { return MEASURES[i]; } }
    return "count";
  }

  function renderEvent(node, path, api) {
    var box = el("div", {"class": "node condition event-condition", "data-path": path});
    var props = function () { return data.properties[node.event] || {}; };
    var name = input("event-name", node.event, {list: datalist("engage-events", data.events), placeholder: "event"});
    name.addEventListener("input", function () {
      node.event = name.value.trim();
      datalist("engage-props-" + path, Object.keys(props()));
      changed();
    });
    var propList = datalist("engage-props-" + path, Object.keys(props()));
    var measure = measureOf(node);
    if (!node[measure]) { node[measure] = {op: "gte", value: 1}; }
    var spec = node[measure];
    var measureSel = select("measure", MEASURES, measure, {count: "count", sum: "sum of", avg: "average of", min: "min of", max: "max of"});
    var prop = input("measure-property", spec.property, {list: propList, placeholder: "property"});
    prop.style.display = measure === "count" ? "none" : "";
    var op = select("measure-op", NUMERIC_OPS, spec.op, OP_LABELS);
    var valueBox = el("span", {"class": "measure-value-box"});
    function buildMeasureValue() {
      valueBox.innerHTML = "";
      if (spec.op === "between") {
        if (!Array.isArray(spec.value)) { spec.value = [0, 1]; }
        [0, 1].forEach(function (index) {
          var b = input("measure-value measure-value-" + index, spec.value[index], {type: "number", step: "any"});
          b.addEventListener("input", function () { spec.value[index] = parseNumber(b.value); changed(); });
          valueBox.appendChild(b);
        });
      } else {
        if (Array.isArray(spec.value)) { spec.value = spec.value[0]; }
        var b = input("measure-value", spec.value, {type: "number", step: "any"});
        b.addEventListener("input", function () { spec.value = parseNumber(b.value); changed(); });
        valueBox.appendChild(b);
      }
    }
    buildMeasureValue();
    measureSel.addEventListener("change", function () {
      delete node[measure];
      measure = measureSel.value;
      node[measure] = spec;
      if (measure === "count") { delete spec.property; } else { spec.property = prop.value.trim(); }
      prop.style.display = measure === "count" ? "none" : "";
      changed();
    });
    prop.addEventListener("input", function () { spec.property = prop.value.trim(); changed(); });
    op.addEventListener("change", function () { spec.op = op.value; buildMeasureValue(); changed(); });

    var windowKind = node.window ? Object.keys(node.window)[0] : "";
    var windowSel = select("window-kind", Object.keys(WINDOWS), windowKind, WINDOWS);
    var windowBox = el("span", {"class": "window-box"});
    function buildWindow() {
      windowBox.innerHTML = "";
      var kind = windowSel.value;
      if (!kind) { delete node.window; return; }
      var current = node.window && node.window[kind];
      var w = {};
      if (kind === "calendar") {
        var cal = select("window-value", CALENDAR, current || "this_month");
        w[kind] = cal.value;
        cal.addEventListener("change", function () { node.window = {calendar: cal.value}; changed(); });
        windowBox.appendChild(cal);
      } else if (kind === "between") {
        var pair = Array.isArray(current) ? current : ["", ""];
        w[kind] = pair;
        [0, 1].forEach(function (index) {
          var b = input("window-value window-value-" + index, pair[index], {placeholder: "YYYY-MM-DDTHH:MM:SSZ"});
          b.addEventListener("input", function () { pair[index] = b.value.trim(); changed(); });
          windowBox.appendChild(b);
        });
      } else if (kind === "since" || kind === "until") {
        var at = input("window-value", current || "", {placeholder: "YYYY-MM-DDTHH:MM:SSZ"});
        w[kind] = at.value;
        at.addEventListener("input", function () { node.window = {}; node.window[kind] = at.value.trim(); changed(); });
        windowBox.appendChild(at);
      } else {
        var n = input("window-value", current === undefined ? 30 : current, {type: "number", min: "0", step: "any"});
        w[kind] = parseNumber(n.value);
        n.addEventListener("input", function () { node.window = {}; node.window[kind] = parseNumber(n.value); changed(); });
        windowBox.appendChild(n);
      }
      node.window = w;
    }
    buildWindow();
    windowSel.addEventListener("change", function () { node.window = null; buildWindow(); changed(); });

    var head = el("div", {"class": "row-line"}, [el("span", {"class": "kind", text: "Event"}), name, measureSel, prop, op,
      valueBox, el("span", {text: "when"}), windowSel, windowBox]);
    head.appendChild(button("btn-outline-primary add-where", "+ where", function () {
      node.where = node.where || [];
      node.where.push({property: "", op: "eq", value: ""});
      render();
    }));
    head.appendChild(controls(path, api));
    box.appendChild(head);
    (node.where || []).forEach(function (condition, index) {
      var wpath = path + ".where[" + index + "]";
      var row = el("div", {"class": "row-line where node", "data-path": wpath}, [el("span", {"class": "kind", text: "where"})]);
      row.appendChild(comparisonRow(condition, "property", "prop-name", propList, function () { return props()[condition.property]; }));
      row.appendChild(button("btn-outline-danger remove-where", "×", function () {
        node.where.splice(index, 1);
        if (!node.where.length) { delete node.where; }
        render();
      }, "Remove"));
      box.appendChild(row);
    });
    return box;
  }

  function renderSegment(node, path, api) {
    var box = el("div", {"class": "node condition segment-condition", "data-path": path});
    var slugs = data.segments.filter(function (s) { return s.slug !== data.self_slug; });
    var names = {};
    slugs.forEach(function (s) { names[s.slug] = s.name; });
    var values = slugs.map(function (s) { return s.slug; });
    if (values.indexOf(String(node.segment)) < 0) { values.push(String(node.segment)); }
    var op = select("op", ["in", "not_in"], node.op, {"in": "is in", not_in: "is not in"});
    var seg = select("segment-ref", values, node.segment, names);
    op.addEventListener("change", function () { node.op = op.value; changed(); });
    seg.addEventListener("change", function () { node.segment = seg.value; changed(); });
    box.appendChild(el("div", {"class": "row-line"}, [el("span", {"class": "kind", text: "Customer"}), op,
      el("span", {text: "segment"}), seg, controls(path, api)]));
    return box;
  }

  function renderChannel(node, path, api) {
    var box = el("div", {"class": "node condition channel-condition", "data-path": path});
    var channel = select("channel", ["email", "push", "in_app"], node.channel);
    var op = select("op", ["subscribed", "unsubscribed"], node.op);
    channel.addEventListener("change", function () { node.channel = channel.value; changed(); });
    op.addEventListener("change", function () { node.op = op.value; changed(); });
    box.appendChild(el("div", {"class": "row-line"}, [el("span", {"class": "kind", text: "Channel"}), channel,
      el("span", {text: "is"}), op, controls(path, api)]));
    return box;
  }

  // -- rendering, JSON sync, live count -----------------------------------------------
  function render(keepText) {
    container.innerHTML = "";
    container.appendChild(renderNode(root, "filters", {
      get: function () { return root; },
      replace: function (value) { root = value; },
      remove: null
    }));
    changed(keepText);
  }

  function changed(keepText) {
    if (!keepText) { textarea.value = JSON.stringify(root, null, 2); jsonError.textContent = ""; }
    scheduleCount();
  }

  textarea.addEventListener("input", debounce(function () {
    try {
      root = JSON.parse(textarea.value);
      jsonError.textContent = "";
      render(true);
    } catch (e) {
      jsonError.textContent = "Not valid JSON: " + e.message;
    }
  }, 500));

  function debounce(fn, wait) {
    var timer = null;
    return function () { clearTimeout(timer); timer = setTimeout(fn, wait); };
  }

  function clearErrors() {
    container.querySelectorAll(".invalid").forEach(function (n) { n.classList.remove("invalid"); });
    container.querySelectorAll(".node-error").forEach(function (n) { n.remove(); });
  }

  function showError(field, message) {
    var path = field || "filters";
    var target = null;
    while (path) {
      target = container.querySelector('[data-path="' + path.replace(/"/g, '\\"') + '"]');
      if (target) { break; }
      var cut = Math.max(path.lastIndexOf("."), path.lastIndexOf("["));
      path = cut > 0 ? path.slice(0, cut) : "";
    }
    target = target || container.firstChild;
    if (!target) { return; }
    target.classList.add("invalid");
    target.setAttribute("data-error-field", field || "");
    target.appendChild(el("div", {"class": "node-error", text: message}));
  }

  var sequence = 0;
  var scheduleCount = debounce(function () {
    var mine = ++sequence;
    preview.className = "alert alert-secondary";
    preview.textContent = "Counting…";
    fetch(data.count_url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrf},
      body: JSON.stringify({filters: root})
    }).then(function (response) {
      return response.json().then(function (body) { return {ok: response.ok, body: body}; });
    }).then(function (result) {
      if (mine !== sequence) { return; }
      clearErrors();
      if (result.ok) {
        preview.className = "alert alert-info";
        preview.setAttribute("data-count", result.body.count);
        preview.textContent = "Matches " + result.body.count + " customers (" + Number(result.body.percent).toFixed(1) + "% of all " + result.body.total + ")";
      } else {
        preview.className = "alert alert-warning";
        preview.removeAttribute("data-count");
        preview.textContent = "Not a valid filter yet: " + result.body.error;
        showError(result.body.field, result.body.error);
      }
    }).catch(function (error) {
      if (mine === sequence) { preview.className = "alert alert-danger"; preview.textContent = "Count failed: " + error; }
    });
  }, 350);

  render();
  if (data.error_field) {
    textarea.value = data.filters_text;
    showError(data.error_field, data.error_message || "invalid");
  }
}());
