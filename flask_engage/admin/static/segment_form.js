/* The segment page: the builder, the JSON for power users, and the impact of an edit
 * (who joins, who leaves, which automations would start) shown before it is saved. */
(function () {
  "use strict";
  var form = document.getElementById("segment-form");
  if (!form) { return; }
  var data = JSON.parse(document.getElementById("engage-builder-data").textContent);
  var container = document.getElementById("engage-builder");
  var textarea = document.getElementById("filters-json");
  var jsonError = document.getElementById("json-error");
  var preview = document.getElementById("engage-preview");
  var confirmed = document.getElementById("confirmed");
  var dialog = document.getElementById("impact-dialog");
  var csrf = document.querySelector('meta[name="engage-csrf"]').getAttribute("content");
  var filters;
  try { filters = JSON.parse(data.filters_text); } catch (e) { filters = {all: []}; }

  function openDialog(impact) {
    document.getElementById("impact-summary").textContent =
      impact.joining + " customer(s) will join and " + impact.leaving + " will leave this segment.";
    var list = document.getElementById("impact-list");
    list.innerHTML = "";
    impact.automations.forEach(function (a) {
      var item = document.createElement("li");
      var link = document.createElement("a");
      link.href = a.url;
      link.textContent = a.name;
      item.appendChild(link);
      var strong = document.createElement("strong");
      strong.textContent = a.customers;
      item.appendChild(document.createTextNode(" would start for "));
      item.appendChild(strong);
      item.appendChild(document.createTextNode(
        " customer(s) who " + (a.trigger === "joins" ? "join " : "leave ") + a.segment));
      list.appendChild(item);
    });
    document.getElementById("impact-segment-list").textContent = impact.segments.map(function (s) {
      return s.name + " (" + s.joining + " join, " + s.leaving + " leave)";
    }).join("; ");
    document.getElementById("impact-segments").hidden = !impact.segments.length;
    document.getElementById("impact-automations").hidden = !impact.automations.length;
    document.getElementById("trigger_automations").checked = false;
    confirmed.value = "1";
    if (typeof dialog.showModal === "function") { dialog.showModal(); } else { dialog.setAttribute("open", ""); }
  }
  function closeDialog() {
    confirmed.value = "";
    if (typeof dialog.close === "function" && dialog.open) { dialog.close(); } else { dialog.removeAttribute("open"); }
  }
  document.getElementById("impact-cancel").addEventListener("click", closeDialog);

  EngageBuilder.mount(container, {
    schemaUrl: container.getAttribute("data-schema-url"),
    filters: filters,
    data: data,
    countUrl: data.count_url,
    preview: preview,
    readOnly: data.read_only,
    onChange: function (root, keepText) {
      if (!keepText) { textarea.value = JSON.stringify(root, null, 2); jsonError.textContent = ""; }
    }
  }).then(function (builder) {
    if (data.error_field) {
      textarea.value = data.filters_text;
      builder.showError(data.error_field, data.error_message, data.error_plain);
    }
    var timer = null;
    textarea.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        try {
          builder.set(JSON.parse(textarea.value));
          jsonError.textContent = "";
        } catch (e) {
          jsonError.textContent = "Not valid JSON: " + e.message;
        }
      }, 500);
    });
    form.addEventListener("submit", function (event) {
      if (confirmed.value === "1") { return; }  // the impact was shown and accepted
      var shown = builder.reveal();
      if (shown) {
        event.preventDefault();
        var bad = container.querySelector(".invalid");
        if (bad) { bad.scrollIntoView({block: "center"}); }
        return;
      }
      if (!data.impact_url) { return; }  // a new segment starts no automation
      event.preventDefault();
      fetch(data.impact_url, {
        method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrf},
        body: JSON.stringify({filters: builder.get()})
      }).then(function (response) {
        return response.json().then(function (body) { return {ok: response.ok, body: body}; });
      }).then(function (result) {
        if (!result.ok) {
          builder.showError(result.body.field, result.body.error, result.body.plain);
          return;
        }
        if (result.body.unchanged || (!result.body.joining && !result.body.leaving)) {
          confirmed.value = "1";
          form.submit();
          return;
        }
        openDialog(result.body);
      });
    });
  }).catch(function (error) {
    preview.className = "alert alert-danger";
    preview.textContent = "Could not load the filter builder (" + error.message + "); edit the JSON below.";
  });
}());
