/* Engage filter builder: edits a whole filter tree, shows a live count, and helps
 * people get it right. Plain JavaScript, no build step.
 *
 * EngageBuilder.mount(container, options) renders one builder (the segment page has
 * one, the automation editor one per condition step). The tree is kept as the filter
 * JSON itself; each rendered node carries data-path (the validator's path, e.g.
 * "filters.all[1].op" belongs to the node with data-path "filters.all[1]"), so server
 * errors are shown next to the condition that is wrong, once that condition has been
 * touched or the form is saved.
 *
 * The grammar is not written here: node kinds, operators, windows, calendar choices,
 * measures and channels come from the served filter JSON Schema and its "x-engage"
 * block of labels. A node kind whose form is "choice" needs no code of its own here.
 *
 * Aids: suggestions of tracked attribute, event and property names and of an
 * attribute's most common values; a warning for a name never tracked (with the
 * closest tracked one) and for a value that matches only in another letter case;
 * an explicit "has not done"; units after numbers; date pickers. */
(function () {
  "use strict";

  var csrfMeta = document.querySelector('meta[name="engage-csrf"]');
  var CSRF = csrfMeta ? csrfMeta.getAttribute("content") : "";
  var grammars = {};
  var G = null; // the grammar of the last schema loaded
  var instances = 0;

  function grammar(schema) {
    var defs = schema.$defs, hints = schema["x-engage"], g = {};
    g.KINDS = hints.kinds;
    g.OPERATORS = hints.operators;
    g.ALL_OPS = defs.attribute.properties.op.enum;
    g.OPS_BY_TYPE = hints.operators_by_type;
    g.OP_LABELS = {};
    Object.keys(g.OPERATORS).forEach(function (op) { g.OP_LABELS[op] = g.OPERATORS[op].label; });
    g.DURATION_UNITS = Object.keys(defs.duration.properties);
    g.MEASURES = pairs(kindNamed(g, "event").measures);
    g.MEASURE_OPS = defs.measure.properties.op.enum;
    g.WINDOWS = [{name: "", label: "at any time"}].concat(hints.windows);
    g.CALENDAR = defs.window.properties.calendar.enum;
    g.CALENDAR_LABELS = hints.calendar;
    return g;
  }
  function kindNamed(g, name) { return g.KINDS.filter(function (k) { return k.name === name; })[0]; }
  // [{value, label}] -> {values: [...], labels: {value: label}} (lists keep their order).
  function pairs(list) {
    var labels = {};
    list.forEach(function (item) { labels[item.value] = item.label; });
    return {values: list.map(function (item) { return item.value; }), labels: labels};
  }

  function load(url) {
    if (!grammars[url]) {
      grammars[url] = fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (response) {
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.json();
        })
        .then(function (schema) { G = grammar(schema); return G; });
    }
    return grammars[url];
  }

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
  function debounce(fn, wait) {
    var timer = null;
    return function () {
      var args = arguments;
      clearTimeout(timer);
      timer = setTimeout(function () { fn.apply(null, args); }, wait);
    };
  }

  // -- values ---------------------------------------------------------------------------
  function parseNumber(text) {
    var t = String(text).trim();
    return t === "" || isNaN(Number(t)) ? null : Number(t);
  }
  function parseScalar(text, type) {
    var t = String(text).trim();
    if (type === "boolean") { if (t === "true") { return true; } if (t === "false") { return false; } }
    if ((type === "number" || type === undefined || type === null) && t !== "" && !isNaN(Number(t))) {
      return Number(t);
    }
    return text;
  }
  // Stored datetimes are UTC ISO text; a datetime-local box shows and takes UTC.
  function isoToBox(value) {
    var m = /^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2})/.exec(String(value || ""));
    return m ? m[1] + "T" + m[2] : "";
  }
  function boxToIso(value) { return value ? value + ":00Z" : ""; }
  function distance(a, b) {
    var i, j, prev, row = [];
    for (j = 0; j <= b.length; j++) { row.push(j); }
    for (i = 1; i <= a.length; i++) {
      prev = row[0];
      row[0] = i;
      for (j = 1; j <= b.length; j++) {
        var keep = row[j];
        row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
        prev = keep;
      }
    }
    return row[b.length];
  }
  // The tracked name closest to a typed one (same letters in another case first).
  function closest(name, known) {
    var lower = name.toLowerCase(), best = null, bestScore = Infinity;
    known.forEach(function (candidate) {
      var score = candidate.toLowerCase() === lower ? 0 : distance(lower, candidate.toLowerCase());
      if (score < bestScore) { best = candidate; bestScore = score; }
    });
    return best !== null && bestScore <= Math.max(2, Math.floor(name.length / 3)) ? best : null;
  }

  // -- one builder ----------------------------------------------------------------------
  function Builder(container, options) {
    var g = G;
    var self = this;
    var id = "b" + (++instances);
    var data = options.data || {};
    var attributes = data.attributes || {};
    var root = options.filters && typeof options.filters === "object" ? options.filters : {all: []};
    var base = options.path || "filters";
    var readOnly = !!options.readOnly;
    var touched = typeof WeakSet === "function" ? new WeakSet() : null;
    var revealAll = false;
    var lastError = null;
    var valuesCache = {};

    // A single condition at the root gets a group around it, so conditions can be added.
    if (!readOnly && root && kindOf(root) && kindOf(root).form !== "group") { root = {all: [root]}; }

    function shape(op) {
      var operand = g.OPERATORS[op] ? g.OPERATORS[op].operand : "scalar";
      return ["none", "pair", "list", "duration"].indexOf(operand) >= 0 ? operand : "scalar";
    }
    function opsFor(type) { return g.OPS_BY_TYPE[type] || g.ALL_OPS; }
    function kindOf(node) {
      if (!node || typeof node !== "object" || Array.isArray(node)) { return null; }
      for (var i = 0; i < g.KINDS.length; i++) {
        for (var j = 0; j < g.KINDS[i].keys.length; j++) { if (g.KINDS[i].keys[j] in node) { return g.KINDS[i]; } }
      }
      return null;
    }
    function datalist(name, values) {
      var listId = "engage-" + id + "-" + name.replace(/[^A-Za-z0-9_-]/g, "_");
      var existing = document.getElementById(listId);
      if (existing) { existing.remove(); }
      var list = el("datalist", {id: listId});
      values.forEach(function (value) { list.appendChild(el("option", {value: value})); });
      document.body.appendChild(list);
      return listId;
    }
    function touch(node) { if (touched) { touched.add(node); } }
    function isTouched(node) { return revealAll || !touched || touched.has(node); }
    // Mark the node touched whenever one of its fields is used.
    function watch(field, node) {
      ["input", "change"].forEach(function (type) { field.addEventListener(type, function () { touch(node); }); });
      if (readOnly) { field.disabled = true; }
      return field;
    }

    // A warning under a node, one per key (name, value...); empty text removes it.
    function warn(box, key, text, action) {
      if (readOnly) { return; }
      var list = box.querySelector(":scope > .node-warnings");
      if (!list) { list = el("div", {"class": "node-warnings"}); box.appendChild(list); }
      var existing = list.querySelector('[data-key="' + key + '"]');
      if (existing) { existing.remove(); }
      if (!text) { return; }
      var item = el("div", {"class": "node-warning", "data-key": key, text: text});
      if (action) { item.appendChild(document.createTextNode(" ")); item.appendChild(action); }
      list.appendChild(item);
    }
    function nameWarning(box, kindWord, name, known) {
      if (!name || known.indexOf(name) >= 0 || (kindWord === "attribute" && name === "email")) {
        warn(box, "name", "");
        return;
      }
      var near = closest(name, known);
      var text = "No customer has " + (kindWord === "event" ? "done an event" : "an " + kindWord) +
        " called “" + name + "” yet.";
      var fix = null;
      if (near) {
        text += " Did you mean “" + near + "”?";
        fix = near;
      }
      return {text: text, fix: fix};
    }

    // -- the value editor of a comparison (attribute or event property) -----------------
    function valueEditor(node, typeOf, owner, hooks) {
      var onValue = hooks.value;
      var wrap = el("span", {"class": "value-editor"});
      var kind = shape(node.op);
      var type = typeOf();
      if (kind === "none") { delete node.value; return wrap; }
      if (kind === "pair") {
        var pair = Array.isArray(node.value) ? node.value : ["", ""];
        node.value = pair;
        [0, 1].forEach(function (index) {
          var box = type === "datetime"
            ? input(index ? "value-high" : "value-low", isoToBox(pair[index]), {type: "datetime-local", title: "UTC"})
            : input(index ? "value-high" : "value-low", pair[index], {placeholder: index ? "to" : "from"});
          box.addEventListener("input", function () {
            node.value[index] = type === "datetime" ? boxToIso(box.value) : parseScalar(box.value, typeOf());
            changed();
          });
          wrap.appendChild(watch(box, owner));
          if (!index) { wrap.appendChild(el("span", {text: "and"})); }
        });
        return wrap;
      }
      if (kind === "list") {
        var list = input("value", Array.isArray(node.value) ? node.value.join(", ") : "", {placeholder: "a, b, c"});
        list.addEventListener("input", function () {
          node.value = list.value.split(",").map(function (s) { return s.trim(); })
            .filter(function (s) { return s !== ""; }).map(function (s) { return parseScalar(s, typeOf()); });
          changed();
          if (onValue) { onValue(); }
        });
        wrap.appendChild(watch(list, owner));
        return wrap;
      }
      if (kind === "duration") {
        var current = node.value && typeof node.value === "object" ? node.value : {days: 7};
        var unit = Object.keys(current)[0] || g.DURATION_UNITS[0];
        node.value = current;
        var amount = input("value", current[unit], {type: "number", min: "0", step: "any"});
        var units = select("value-unit", g.DURATION_UNITS, unit);
        var update = function () { var v = {}; v[units.value] = parseNumber(amount.value); node.value = v; changed(); };
        amount.addEventListener("input", update);
        units.addEventListener("change", update);
        wrap.appendChild(watch(amount, owner));
        wrap.appendChild(watch(units, owner));
        if (node.op === "more_than_ago") { wrap.appendChild(el("span", {text: "ago"})); }
        return wrap;
      }
      if (!("value" in node)) { node.value = ""; }
      var box;
      if (type === "datetime") {
        box = input("value", isoToBox(node.value), {type: "datetime-local", title: "UTC"});
        box.addEventListener("input", function () { node.value = boxToIso(box.value); changed(); });
        wrap.appendChild(watch(box, owner));
        wrap.appendChild(el("span", {"class": "text-muted small", text: "UTC"}));
        return wrap;
      }
      box = input("value", node.value, {placeholder: "value"});
      box.addEventListener("input", function () {
        node.value = parseScalar(box.value, typeOf());
        changed();
        if (onValue) { onValue(); }
      });
      if (hooks.valueList) { box.setAttribute("list", hooks.valueList(box)); }
      wrap.appendChild(watch(box, owner));
      return wrap;
    }

    // A name + operator + value row, shared by attribute conditions and event "where" rows.
    function comparisonRow(node, key, nameClass, names, typeOf, owner, hooks) {
      var row = el("span", {"class": "row-line comparison"});
      var name = input(nameClass, node[key], {list: datalist(key + "-" + nameClass, names()), placeholder: key});
      var ops = select("op", opsFor(typeOf()), node.op, g.OP_LABELS);
      var editor = valueEditor(node, typeOf, owner, hooks);
      name.addEventListener("input", function () {
        node[key] = name.value.trim();
        var allowed = opsFor(typeOf());
        var now = Array.prototype.map.call(ops.options, function (o) { return o.value; }).join();
        if (now !== allowed.join()) {
          var keep = allowed.indexOf(node.op) >= 0 ? node.op : allowed[0];
          var freshOps = watch(select("op", allowed, keep, g.OP_LABELS), owner);
          freshOps.addEventListener("change", onOp);
          ops.replaceWith(freshOps);
          ops = freshOps;
          if (keep !== node.op) { node.op = keep; }
          rebuildValue();
        }
        changed();
        if (hooks.name) { hooks.name(); }
      });
      function rebuildValue() {
        var next = valueEditor(node, typeOf, owner, hooks);
        editor.replaceWith(next);
        editor = next;
        if (hooks.value) { hooks.value(); }
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
      row.appendChild(watch(name, owner));
      row.appendChild(watch(ops, owner));
      row.appendChild(editor);
      return row;
    }

    // -- node renderers ------------------------------------------------------------------
    function controls(api) {
      var span = el("span", {"class": "node-controls ml-auto"});
      if (readOnly) { return span; }
      span.appendChild(button("btn-outline-secondary negate", "NOT", function () {
        api.replace({not: api.get()});
        render();
      }, "Match customers for whom this is not true"));
      if (api.remove) {
        span.appendChild(button("btn-outline-danger remove", "×", function () { api.remove(); render(); }, "Remove"));
      }
      return span;
    }

    var FORMS = {group: renderGroup, not: renderNot, comparison: renderComparison, event: renderEvent,
      choice: renderChoice};

    function renderNode(node, path, api) {
      var kind = kindOf(node);
      var box = kind && FORMS[kind.form]
        ? FORMS[kind.form](node, path, api, kind)
        : el("div", {"class": "node", "data-path": path, text: "Unknown filter: " + JSON.stringify(node)});
      box._engageNode = node;
      return box;
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
      var which = watch(select("group-kind", kind.keys, key, kind.labels), node);
      which.addEventListener("change", function () {
        var list = node[key];
        delete node[key];
        node[which.value] = list;
        render();
      });
      var head = el("div", {"class": "row-line"}, [which]);
      if (!readOnly) {
        // Conditions first, then groups.
        g.KINDS.filter(function (k) { return k["new"]; })
          .sort(function (a, b) { return (a.form === "group") - (b.form === "group"); })
          .forEach(function (what) {
            head.appendChild(button("btn-outline-primary add-" + what.name, "+ " + what.label, function () {
              children.push(fresh(what));
              render();
            }));
          });
      }
      head.appendChild(controls(api));
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
      if (!readOnly) {
        head.appendChild(button("btn-outline-secondary unnegate", "remove NOT", function () { api.replace(node.not); render(); }));
        if (api.remove) { head.appendChild(button("btn-outline-danger remove", "×", function () { api.remove(); render(); }, "Remove")); }
      }
      box.appendChild(head);
      box.appendChild(renderNode(node.not, path + ".not", {
        get: function () { return node.not; },
        replace: function (value) { node.not = value; },
        remove: null
      }));
      return box;
    }

    // Which values of an attribute people mean, checked against the data.
    function valueHints(box, node, key) {
      var check = debounce(function () {
        var name = node[key];
        var values = Array.isArray(node.value) ? node.value : [node.value];
        values = values.filter(function (v) { return typeof v === "string" && v !== ""; }).slice(0, 5);
        var type = attributes[name];
        if (!data.values_url || !name || (type && type !== "string") || !values.length ||
            ["eq", "ne", "in", "not_in"].indexOf(node.op) < 0) {
          warn(box, "value", "");
          return;
        }
        Promise.all(values.map(function (value) {
          var url = data.values_url + "?attribute=" + encodeURIComponent(name) + "&value=" + encodeURIComponent(value);
          return fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
            .then(function (r) { return r.ok ? r.json() : null; })
            .then(function (answer) { return {value: value, answer: answer}; });
        })).then(function (results) {
          var notes = [], fix = null;
          results.forEach(function (result) {
            var a = result.answer;
            if (!a || a.exact > 0) { return; }
            if (a.other_case && a.other_case.length) {
              var other = a.other_case[0];
              notes.push("No customer has " + name + " “" + result.value + "”, but " + other[1] +
                " have “" + other[0] + "” (letter case matters).");
              if (!fix) { fix = [result.value, other[0]]; }
            } else if (type === "string") {
              notes.push("No customer has " + name + " “" + result.value + "” yet.");
            }
          });
          var action = null;
          if (fix && !readOnly) {
            action = button("btn-link btn-sm p-0 use-value", "Use “" + fix[1] + "”", function () {
              if (Array.isArray(node.value)) {
                node.value = node.value.map(function (v) { return v === fix[0] ? fix[1] : v; });
              } else { node.value = fix[1]; }
              render();
            });
          }
          warn(box, "value", notes.join(" "), action);
        });
      }, 400);
      return check;
    }

    // The most common values of an attribute, offered while typing a value.
    function suggestValues(name) {
      return function (box) {
        var listId = "engage-" + id + "-values-" + String(Math.random()).slice(2);
        var list = el("datalist", {id: listId});
        document.body.appendChild(list);
        box.addEventListener("focus", function () {
          var attribute = name();
          if (!data.values_url || !attribute) { return; }
          var fill = function (values) {
            list.innerHTML = "";
            values.forEach(function (pair) { list.appendChild(el("option", {value: pair[0], label: pair[1] + " customers"})); });
          };
          if (valuesCache[attribute]) { fill(valuesCache[attribute]); return; }
          fetch(data.values_url + "?attribute=" + encodeURIComponent(attribute),
            {credentials: "same-origin", headers: {"Accept": "application/json"}})
            .then(function (r) { return r.ok ? r.json() : {values: []}; })
            .then(function (answer) { valuesCache[attribute] = answer.values || []; fill(valuesCache[attribute]); });
        });
        return listId;
      };
    }

    // {KEY: NAME, op, value} on names listed in the page's data (e.g. data.attributes: name -> type).
    function renderComparison(node, path, api, kind) {
      var key = kind.keys[0];
      var known = data[kind.names] || {};
      var box = el("div", {"class": "node condition " + kind.name + "-condition", "data-path": path});
      var row = el("div", {"class": "row-line"}, [el("span", {"class": "kind", text: kind.label})]);
      var checkValue = valueHints(box, node, key);
      var checkName = function () {
        var found = nameWarning(box, kind.name, node[key], Object.keys(known));
        if (!found) { return; }
        var fix = found.fix && !readOnly ? button("btn-link btn-sm p-0 use-name", "Use “" + found.fix + "”", function () {
          node[key] = found.fix;
          render();
        }) : null;
        warn(box, "name", found.text, fix);
      };
      row.appendChild(comparisonRow(node, key, "attr-name", function () { return Object.keys(known); },
        function () { return known[node[key]]; }, node, {
          name: function () { checkName(); checkValue(); },
          value: checkValue,
          valueList: suggestValues(function () { return node[key]; })
        }));
      row.appendChild(controls(api));
      box.appendChild(row);
      checkName();
      checkValue();
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
        var choices = choicesOf(kind, field);
        var values = choices.values.slice();
        if (!(field in node)) { node[field] = kind["new"][field]; }
        if (values.indexOf(String(node[field])) < 0) { values.push(String(node[field])); }
        var chooser = watch(select(field, values, node[field], choices.labels), node);
        chooser.addEventListener("change", function () { node[field] = chooser.value; changed(); });
        row.appendChild(chooser);
      });
      row.appendChild(controls(api));
      box.appendChild(row);
      return box;
    }

    function measureOf(node) {
      var names = g.MEASURES.values;
      for (var i = 0; i < names.length; i++) { if (names[i] in node) { return names[i]; } }
      return names[0];
    }
    function hasNotDone(node) {
      return node.count && node.count.op === "eq" && node.count.value === 0 && measureOf(node) === "count";
    }

    // The window's label around its number: "in the last N days" -> ["in the last", "days"].
    function windowWords(w) {
      var parts = w.label.split(" N ");
      return parts.length === 2 ? {before: parts[0], after: parts[1]} : {before: w.label, after: ""};
    }

    function renderEvent(node, path, api, kind) {
      var box = el("div", {"class": "node condition " + kind.name + "-condition", "data-path": path});
      var events = data.events || [];
      var props = function () { return (data.properties || {})[node.event] || {}; };
      var name = watch(input("event-name", node.event, {list: datalist("events", events), placeholder: "event"}), node);
      var propList = datalist("props-" + path, Object.keys(props()));
      var checkName = function () {
        var found = nameWarning(box, "event", node.event, events);
        if (!found) { return; }
        var fix = found.fix && !readOnly ? button("btn-link btn-sm p-0 use-name", "Use “" + found.fix + "”", function () {
          node.event = found.fix;
          render();
        }) : null;
        warn(box, "name", found.text, fix);
      };
      name.addEventListener("input", function () {
        node.event = name.value.trim();
        propList = datalist("props-" + path, Object.keys(props()));
        checkName();
        changed();
      });

      var did = watch(select("event-did", ["did", "did_not"], hasNotDone(node) ? "did_not" : "did",
        {did: "has done", did_not: "has not done"}), node);
      var measure = measureOf(node);
      if (!node[measure]) { node[measure] = {op: "gte", value: 1}; }
      var spec = node[measure];
      var measureSel = watch(select("measure", g.MEASURES.values, measure, g.MEASURES.labels), node);
      var prop = watch(input("measure-property", spec.property, {list: propList, placeholder: "property"}), node);
      prop.style.display = measure === "count" ? "none" : "";
      var op = watch(select("measure-op", g.MEASURE_OPS, spec.op, g.OP_LABELS), node);
      var valueBox = el("span", {"class": "measure-value-box"});
      var times = el("span", {"class": "measure-unit text-muted", text: "times"});
      function buildMeasureValue() {
        valueBox.innerHTML = "";
        if (spec.op === "between") {
          if (!Array.isArray(spec.value)) { spec.value = [0, 1]; }
          [0, 1].forEach(function (index) {
            var b = watch(input("measure-value measure-value-" + index, spec.value[index], {type: "number", step: "any"}), node);
            b.addEventListener("input", function () { spec.value[index] = parseNumber(b.value); changed(); });
            valueBox.appendChild(b);
          });
        } else {
          if (Array.isArray(spec.value)) { spec.value = spec.value[0]; }
          var b = watch(input("measure-value", spec.value, {type: "number", step: "any"}), node);
          b.addEventListener("input", function () { spec.value = parseNumber(b.value); changed(); });
          valueBox.appendChild(b);
        }
      }
      buildMeasureValue();
      var measureParts = el("span", {"class": "row-line measure-parts"}, [measureSel, prop, op, valueBox, times]);
      function showMeasure() {
        measureParts.style.display = did.value === "did_not" ? "none" : "";
        times.style.display = measure === "count" ? "" : "none";
      }
      showMeasure();
      did.addEventListener("change", function () {
        g.MEASURES.values.forEach(function (m) { delete node[m]; });
        if (did.value === "did_not") {
          node.count = {op: "eq", value: 0};
        } else {
          node.count = {op: "gte", value: 1};
        }
        measure = "count";
        spec = node.count;
        measureSel.value = "count";
        op.value = spec.op;
        prop.style.display = "none";
        buildMeasureValue();
        showMeasure();
        changed();
      });
      measureSel.addEventListener("change", function () {
        delete node[measure];
        measure = measureSel.value;
        node[measure] = spec;
        if (measure === "count") { delete spec.property; } else { spec.property = prop.value.trim(); }
        prop.style.display = measure === "count" ? "none" : "";
        showMeasure();
        changed();
      });
      prop.addEventListener("input", function () { spec.property = prop.value.trim(); changed(); });
      op.addEventListener("change", function () { spec.op = op.value; buildMeasureValue(); changed(); });

      var windowKind = node.window ? Object.keys(node.window)[0] : "";
      var windowSel = watch(select("window-kind", g.WINDOWS.map(function (w) { return w.name; }), windowKind,
        pairs(g.WINDOWS.map(function (w) { return {value: w.name, label: w.label.replace(" N ", " … ")}; })).labels), node);
      var windowBox = el("span", {"class": "window-box"});
      function windowNamed(name) { return g.WINDOWS.filter(function (w) { return w.name === name; })[0]; }
      function buildWindow() {
        windowBox.innerHTML = "";
        var chosen = windowSel.value;
        if (!chosen) { delete node.window; return; }
        var current = node.window && node.window[chosen];
        var w = {};
        var kindInput = windowNamed(chosen).input;
        if (kindInput === "choice") {
          var cal = watch(select("window-value", g.CALENDAR, current || g.CALENDAR[0], g.CALENDAR_LABELS), node);
          w[chosen] = cal.value;
          cal.addEventListener("change", function () { node.window = {}; node.window[chosen] = cal.value; changed(); });
          windowBox.appendChild(cal);
        } else if (kindInput === "pair") {
          var pair = Array.isArray(current) ? current : ["", ""];
          w[chosen] = pair;
          [0, 1].forEach(function (index) {
            var b = watch(input("window-value window-value-" + index, isoToBox(pair[index]), {type: "datetime-local", title: "UTC"}), node);
            b.addEventListener("input", function () { pair[index] = boxToIso(b.value); changed(); });
            windowBox.appendChild(b);
            if (!index) { windowBox.appendChild(el("span", {text: "and"})); }
          });
          windowBox.appendChild(el("span", {"class": "text-muted small", text: "UTC"}));
        } else if (kindInput === "datetime") {
          var at = watch(input("window-value", isoToBox(current), {type: "datetime-local", title: "UTC"}), node);
          w[chosen] = boxToIso(at.value);
          at.addEventListener("input", function () { node.window = {}; node.window[chosen] = boxToIso(at.value); changed(); });
          windowBox.appendChild(at);
          windowBox.appendChild(el("span", {"class": "text-muted small", text: "UTC"}));
        } else {
          var n = watch(input("window-value", current === undefined ? 30 : current, {type: "number", min: "0", step: "any"}), node);
          w[chosen] = parseNumber(n.value);
          n.addEventListener("input", function () { node.window = {}; node.window[chosen] = parseNumber(n.value); changed(); });
          windowBox.appendChild(n);
          windowBox.appendChild(el("span", {"class": "window-unit", text: windowWords(windowNamed(chosen)).after}));
        }
        node.window = w;
      }
      buildWindow();
      windowSel.addEventListener("change", function () { node.window = null; buildWindow(); changed(); });

      var head = el("div", {"class": "row-line"}, [el("span", {"class": "kind", text: "Customer"}), did, name,
        measureParts, windowSel, windowBox]);
      if (!readOnly) {
        head.appendChild(button("btn-outline-primary add-where", "+ where", function () {
          node.where = node.where || [];
          node.where.push({property: "", op: "eq", value: ""});
          render();
        }, "Only count events whose property matches"));
      }
      head.appendChild(controls(api));
      box.appendChild(head);
      (node.where || []).forEach(function (condition, index) {
        var wpath = path + ".where[" + index + "]";
        var row = el("div", {"class": "row-line where node", "data-path": wpath}, [el("span", {"class": "kind", text: "where"})]);
        row._engageNode = condition;
        row.appendChild(comparisonRow(condition, "property", "prop-name", function () { return Object.keys(props()); },
          function () { return props()[condition.property]; }, condition, {}));
        if (!readOnly) {
          row.appendChild(button("btn-outline-danger remove-where", "×", function () {
            node.where.splice(index, 1);
            if (!node.where.length) { delete node.where; }
            render();
          }, "Remove"));
        }
        box.appendChild(row);
      });
      checkName();
      return box;
    }

    // -- errors: shown next to the node, once it was touched or the form saved ------------
    function clearErrors() {
      container.querySelectorAll(".invalid").forEach(function (n) { n.classList.remove("invalid"); });
      container.querySelectorAll(".node-error").forEach(function (n) { n.remove(); });
    }
    function targetOf(field) {
      var path = field || base;
      var target = null;
      while (path) {
        target = container.querySelector('[data-path="' + path.replace(/"/g, '\\"') + '"]');
        if (target) { break; }
        var cut = Math.max(path.lastIndexOf("."), path.lastIndexOf("["));
        path = cut > 0 ? path.slice(0, cut) : "";
      }
      return target || container.firstChild;
    }
    // Empty text values match no one: a mistake the server accepts, so caught here.
    function localError() {
      var found = null;
      container.querySelectorAll(".node.condition, .node.where").forEach(function (box) {
        var node = box._engageNode;
        if (found || !node || !("op" in node) || shape(node.op) !== "scalar") { return; }
        if (node.value === "" || node.value === undefined) {
          found = {field: box.getAttribute("data-path") + ".value", message: "Enter a value (or choose “is not set”).",
            plain: "Enter a value (or choose “is not set”).", local: true};
        }
      });
      return found;
    }
    function paint() {
      clearErrors();
      var candidates = [localError(), lastError].filter(Boolean);
      for (var i = 0; i < candidates.length; i++) {
        var error = candidates[i];
        var target = targetOf(error.field);
        if (!target || !isTouched(target._engageNode || root)) { continue; }
        target.classList.add("invalid");
        target.setAttribute("data-error-field", error.field || "");
        var box = el("div", {"class": "node-error", text: error.plain || error.message});
        if (!error.local && error.plain && error.plain !== error.message) {
          box.appendChild(el("small", {"class": "d-block text-muted", text: "Details: " + error.message}));
        }
        target.appendChild(box);
        return error;
      }
      return null;
    }

    // -- rendering, change events, live count ------------------------------------------------
    function render(keepText) {
      container.innerHTML = "";
      container.appendChild(renderNode(root, base, {
        get: function () { return root; },
        replace: function (value) { root = value; },
        remove: null
      }));
      changed(keepText);
    }
    function changed(keepText) {
      if (options.onChange) { options.onChange(root, keepText); }
      paint();
      scheduleCount();
    }

    var sequence = 0;
    var preview = options.preview;
    var scheduleCount = debounce(function () {
      if (!options.countUrl) { return; }
      var mine = ++sequence;
      if (preview) { preview.className = preview.getAttribute("data-base-class") + " alert-secondary"; preview.textContent = "Counting…"; }
      fetch(options.countUrl, {
        method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": CSRF},
        body: JSON.stringify({filters: root})
      }).then(function (response) {
        return response.json().then(function (body) { return {ok: response.ok, body: body}; });
      }).then(function (result) {
        if (mine !== sequence) { return; }
        lastError = result.ok ? null : {field: result.body.field, message: result.body.error, plain: result.body.plain};
        var shown = paint();
        if (!preview) { return; }
        var baseClass = preview.getAttribute("data-base-class");
        if (result.ok) {
          preview.className = baseClass + " alert-info";
          preview.setAttribute("data-count", result.body.count);
          preview.textContent = "Matches " + result.body.count + " customers (" + Number(result.body.percent).toFixed(1) + "% of all " + result.body.total + ")";
        } else {
          preview.className = baseClass + " alert-warning";
          preview.removeAttribute("data-count");
          preview.textContent = shown ? "Not a valid filter yet: " + (shown.plain || shown.message)
            : "Finish the conditions to see how many customers match.";
        }
      }).catch(function (error) {
        if (mine === sequence && preview) { preview.className = preview.getAttribute("data-base-class") + " alert-danger"; preview.textContent = "Counting failed: " + error; }
      });
    }, 350);
    if (preview && !preview.getAttribute("data-base-class")) {
      preview.setAttribute("data-base-class", preview.className.replace(/\balert-\w+\b/g, "").trim() || "alert");
    }

    // -- the API ------------------------------------------------------------------------------
    self.get = function () { return root; };
    self.set = function (filters) { root = filters && typeof filters === "object" ? filters : {all: []}; render(true); };
    // Show every error now (the form is being saved); returns the one shown, if any.
    self.reveal = function () { revealAll = true; return paint(); };
    self.hasError = function () { return !!(localError() || lastError); };
    self.showError = function (field, message, plain) {
      revealAll = true;
      lastError = {field: field, message: message, plain: plain};
      paint();
    };
    render();
  }

  window.EngageBuilder = {
    load: load,
    mount: function (container, options) {
      return load(options.schemaUrl).then(function () { return new Builder(container, options); });
    }
  };
}());
