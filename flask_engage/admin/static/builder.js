/* Engage segment builder: edits the whole filter tree, shows a live count.
 * Plain JavaScript, no build step. The tree is kept as the filter JSON itself;
 * each rendered node carries data-path (the validator's path, e.g.
 * "filters.all[1].op" belongs to the node with data-path "filters.all[1]"),
 * so server errors are shown next to the condition that is wrong.
 *
 * The grammar is not written here: node kinds, operators, windows, calendar
 * choices, measures and channels come from the served filter JSON Schema
 * (data-schema-url) and its "x-engage" block of labels. A node kind whose form is
 * "choice" ({KEY: choice, "op": choice}) needs no code of its own here. */
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("engage-builder-data").textContent);
  var container = document.getElementById("engage-builder");
  var textarea = document.getElementById("filters-json");
  var jsonError = document.getElementById("json-error");
  var preview = document.getElementById("engage-preview");
  var csrf = document.querySelector('meta[name="engage-csrf"]').getAttribute("content");

  // Filled from the schema by grammar() before the first render.
  var KINDS, OPERATORS, ALL_OPS, OPS_BY_TYPE, OP_LABELS = {}, DURATION_UNITS, MEASURES,
    MEASURE_OPS, WINDOWS, CALENDAR, CALENDAR_LABELS;

  function grammar(schema) {
    var defs = schema.$defs, hints = schema["x-engage"];
    KINDS = hints.kinds;
    OPERATORS = hints.operators;
    ALL_OPS = defs.attribute.properties.op.enum;
    OPS_BY_TYPE = hints.operators_by_type;
    Object.keys(OPERATORS).forEach(function (op) { OP_LABELS[op] = OPERATORS[op].label; });
    DURATION_UNITS = Object.keys(defs.duration.properties);
    MEASURES = pairs(kindNamed("event").measures);
    MEASURE_OPS = defs.measure.properties.op.enum;
    WINDOWS = [{name: "", label: "any time"}].concat(hints.windows);
    CALENDAR = defs.window.properties.calendar.enum;
    CALENDAR_LABELS = hints.calendar;
  }
  function kindNamed(name) { return KINDS.filter(function (k) { return k.name === name; })[0]; }
  function kindOf(node) {
    if (!node || typeof node !== "object" || Array.isArray(node)) { return null; }
    for (var i = 0; i < KINDS.length; i++) {
      for (var j = 0; j < KINDS[i].keys.length; j++) { if (KINDS[i].keys[j] in node) { return KINDS[i]; } }
    }
    return null;
  }
  // [{value, label}] -> {values: [...], labels: {value: label}} (lists keep their order).
  function pairs(list) {
    var labels = {};
    list.forEach(function (item) { labels[item.value] = item.label; });
    return {values: list.map(function (item) { return item.value; }), labels: labels};
  }
  function windowNamed(name) { return WINDOWS.filter(function (w) { return w.name === name; })[0]; }

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
  // The value editor an operator needs: none, pair, list, duration or scalar.
  function shape(op) {
    var operand = OPERATORS[op] ? OPERATORS[op].operand : "scalar";
    return ["none", "pair", "list", "duration"].indexOf(operand) >= 0 ? operand : "scalar";
  }

  // -- the value editor of a comparison (attribute or event property) -------------------
  function valueEditor(node, typeOf) {
    var wrap = el("span", {"class": "value-editor"});
    var kind = shape(node.op);
    if (kind === "none") { delete node.value; return wrap; }
    if (kind === "pair") {
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
    if (kind === "list") {
      var list = input("value", Array.isArray(node.value) ? node.value.join(", ") : "", {placeholder: "a, b, c"});
      list.addEventListener("input", function () {
        node.value = list.value.split(",").map(function (s) { return s.trim(); })
          .filter(function (s) { return s !== ""; }).map(function (s) { return parseScalar(s, typeOf()); });
        changed();
      });
      wrap.appendChild(list);
      return wrap;
    }
    if (kind === "duration") {
      var current = node.value && typeof node.value === "object" ? node.value : {days: 7};
      var unit = Object.keys(current)[0] || DURATION_UNITS[0];
      node.value = current;
      var amount = input("value", current[unit], {type: "number", min: "0", step: "any"});
      var units = select("value-unit", DURATION_UNITS, unit);
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

  var FORMS = {group: renderGroup, not: renderNot, comparison: renderComparison, event: renderEvent,
    choice: renderChoice};

  function renderNode(node, path, api) {
    var kind = kindOf(node);
    if (kind && FORMS[kind.form]) { return FORMS[kind.form](node, path, api, kind); }
    return el("div", {"class": "node", "data-path": path, text: "Unknown filter: " + JSON.stringify(node)});
  }

  // The options of a choice field: a fixed {value: label} map, or the name of a list
  // in the page's data ("segments": [{slug, name}]), without the segment being edited.
  function choicesOf(kind, field) {
    var choices = kind.choices[field];
    if (typeof choices !== "string") { return pairs(choices); }
    var items = (data[choices] || []).filter(function (item) { return item.slug !== data.self_slug; });
    var labels = {};
    items.forEach(function (item) { labels[item.slug] = item.name; });
    return {values: items.map(function (item) { return item.slug; }), labels: labels};
  }

  // A fresh node of a kind, as its "+ Kind" button adds it.
  function fresh(kind) {
    var node = JSON.parse(JSON.stringify(kind["new"]));
    Object.keys(kind.choices || {}).forEach(function (field) {
      var first = choicesOf(kind, field).values[0];
      if (typeof kind.choices[field] === "string" && first !== undefined) { node[field] = first; }
    });
    return node;
  }

  function renderGroup(node, path, api, kind) {
    var key = "all" in node ? "all" : "any";
    var children = Array.isArray(node[key]) ? node[key] : (node[key] = []);
    var box = el("div", {"class": "node group", "data-path": path});
    var which = select("group-kind", kind.keys, key, kind.labels);
    which.addEventListener("change", function () {
      var list = node[key];
      delete node[key];
      node[which.value] = list;
      render();
    });
    var head = el("div", {"class": "row-line"}, [which]);
    // Conditions first, then groups.
    KINDS.filter(function (k) { return k["new"]; })
      .sort(function (a, b) { return (a.form === "group") - (b.form === "group"); })
      .forEach(function (what) {
        head.appendChild(button("btn-outline-primary add-" + what.name, "+ " + what.label, function () {
          children.push(fresh(what));
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

  function renderNot(node, path, api, kind) {
    var box = el("div", {"class": "node negated", "data-path": path});
    var head = el("div", {"class": "row-line"}, [el("span", {"class": "kind", text: kind.label})]);
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

  // {KEY: NAME, op, value} on names listed in the page's data (e.g. data.attributes: name -> type).
  function renderComparison(node, path, api, kind) {
    var key = kind.keys[0];
    var names = data[kind.names] || {};
    var box = el("div", {"class": "node condition " + kind.name + "-condition", "data-path": path});
    var listId = datalist("engage-" + kind.names, Object.keys(names));
    var row = el("div", {"class": "row-line"}, [el("span", {"class": "kind", text: kind.label})]);
    row.appendChild(comparisonRow(node, key, "attr-name", listId, function () { return names[node[key]]; }));
    row.appendChild(controls(path, api));
    box.appendChild(row);
    return box;
  }

  // {KEY: choice, op: choice}, laid out by the kind's sentence ("Customer {op} segment {segment}").
  function renderChoice(node, path, api, kind) {
    var box = el("div", {"class": "node condition " + kind.name + "-condition", "data-path": path});
    var row = el("div", {"class": "row-line"}, [el("span", {"class": "kind", text: kind.sentence[0]})]);
    kind.sentence.slice(1).forEach(function (part) {
      var field = /^\{(.+)\}$/.exec(part);
      if (!field) { row.appendChild(el("span", {text: part})); return; }
      field = field[1];
      var options = choicesOf(kind, field);
      var values = options.values.slice();
      if (!(field in node)) { node[field] = kind["new"][field]; }
      if (values.indexOf(String(node[field])) < 0) { values.push(String(node[field])); }
      var chooser = select(field, values, node[field], options.labels);
      chooser.addEventListener("change", function () { node[field] = chooser.value; changed(); });
      row.appendChild(chooser);
    });
    row.appendChild(controls(path, api));
    box.appendChild(row);
    return box;
  }

  function measureOf(node) {
    var names = MEASURES.values;
    for (var i = 0; i < names.length; i++) { if (names[i] in node) { return names[i]; } }
    return names[0];
  }

  function renderEvent(node, path, api, kind) {
    var box = el("div", {"class": "node condition " + kind.name + "-condition", "data-path": path});
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
    var measureSel = select("measure", MEASURES.values, measure, MEASURES.labels);
    var prop = input("measure-property", spec.property, {list: propList, placeholder: "property"});
    prop.style.display = measure === "count" ? "none" : "";
    var op = select("measure-op", MEASURE_OPS, spec.op, OP_LABELS);
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
    var windowSel = select("window-kind", WINDOWS.map(function (w) { return w.name; }), windowKind,
      pairs(WINDOWS.map(function (w) { return {value: w.name, label: w.label}; })).labels);
    var windowBox = el("span", {"class": "window-box"});
    function buildWindow() {
      windowBox.innerHTML = "";
      var chosen = windowSel.value;
      if (!chosen) { delete node.window; return; }
      var current = node.window && node.window[chosen];
      var w = {};
      var kindInput = windowNamed(chosen).input;
      if (kindInput === "choice") {
        var cal = select("window-value", CALENDAR, current || CALENDAR[0], CALENDAR_LABELS);
        w[chosen] = cal.value;
        cal.addEventListener("change", function () { node.window = {}; node.window[chosen] = cal.value; changed(); });
        windowBox.appendChild(cal);
      } else if (kindInput === "pair") {
        var pair = Array.isArray(current) ? current : ["", ""];
        w[chosen] = pair;
        [0, 1].forEach(function (index) {
          var b = input("window-value window-value-" + index, pair[index], {placeholder: "YYYY-MM-DDTHH:MM:SSZ"});
          b.addEventListener("input", function () { pair[index] = b.value.trim(); changed(); });
          windowBox.appendChild(b);
        });
      } else if (kindInput === "datetime") {
        var at = input("window-value", current || "", {placeholder: "YYYY-MM-DDTHH:MM:SSZ"});
        w[chosen] = at.value;
        at.addEventListener("input", function () { node.window = {}; node.window[chosen] = at.value.trim(); changed(); });
        windowBox.appendChild(at);
      } else {
        var n = input("window-value", current === undefined ? 30 : current, {type: "number", min: "0", step: "any"});
        w[chosen] = parseNumber(n.value);
        n.addEventListener("input", function () { node.window = {}; node.window[chosen] = parseNumber(n.value); changed(); });
        windowBox.appendChild(n);
      }
      node.window = w;
    }
    buildWindow();
    windowSel.addEventListener("change", function () { node.window = null; buildWindow(); changed(); });

    var head = el("div", {"class": "row-line"}, [el("span", {"class": "kind", text: kind.label}), name, measureSel, prop, op,
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
      if (KINDS) { render(true); }
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

  function start() {
    render();
    if (data.error_field) {
      textarea.value = data.filters_text;
      showError(data.error_field, data.error_message || "invalid");
    }
  }

  fetch(container.getAttribute("data-schema-url"), {credentials: "same-origin", headers: {"Accept": "application/json"}})
    .then(function (response) {
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      return response.json();
    })
    .then(function (schema) { grammar(schema); start(); })
    .catch(function (error) {
      preview.className = "alert alert-danger";
      preview.textContent = "Could not load the filter schema (" + error.message + "); edit the JSON below.";
    });
}());
