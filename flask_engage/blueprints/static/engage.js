/* flask-engage browser script: web push opt-in, an in-app inbox widget, event tracking.
 *
 *   <script src="/engage/static/engage.js" defer></script>
 *   <div data-engage-inbox></div>          (the inbox widget mounts here)
 *   engage.track("Viewed pricing", {plan: "pro"});
 *   engage.push.subscribe();               (call from a user gesture, e.g. a button)
 */
(function () {
  "use strict";

  var script = document.currentScript;
  var base = script ? script.src.replace(/\/static\/engage\.js(\?.*)?$/, "") : "/engage";

  function request(method, path, body) {
    var options = { method: method, credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(base + path, options).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) {
          var error = new Error(data.error || response.statusText);
          error.status = response.status;
          error.field = data.field;
          throw error;
        }
        return data;
      });
    });
  }

  function track(event, props) {
    return request("POST", "/browser/track", { event: event, properties: props || {} });
  }

  function urlBase64ToUint8Array(value) {
    var padded = (value + "===".slice((value.length + 3) % 4)).replace(/-/g, "+").replace(/_/g, "/");
    var raw = atob(padded);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes;
  }

  function pushSupported() {
    return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
  }

  function registration() {
    return navigator.serviceWorker.register(base + "/sw.js", { scope: "/" });
  }

  function subscribe() {
    if (!pushSupported()) return Promise.reject(new Error("web push is not supported here"));
    return Promise.all([request("GET", "/push/key"), registration()]).then(function (results) {
      var key = results[0].publicKey;
      var reg = results[1];
      return Notification.requestPermission().then(function (permission) {
        if (permission !== "granted") throw new Error("notifications were not allowed");
        return reg.pushManager.getSubscription().then(function (existing) {
          return existing || reg.pushManager.subscribe({
            userVisibleOnly: true,
            applicationServerKey: urlBase64ToUint8Array(key),
          });
        });
      });
    }).then(function (subscription) {
      var json = subscription.toJSON();
      return request("POST", "/push/subscribe", {
        endpoint: json.endpoint,
        keys: { p256dh: json.keys.p256dh, auth: json.keys.auth },
      });
    });
  }

  function unsubscribe() {
    if (!pushSupported()) return Promise.resolve({ removed: 0 });
    return navigator.serviceWorker.getRegistration(base + "/sw.js").then(function (reg) {
      return reg ? reg.pushManager.getSubscription() : null;
    }).then(function (subscription) {
      if (!subscription) return { removed: 0 };
      var endpoint = subscription.endpoint;
      return subscription.unsubscribe().then(function () {
        return request("POST", "/push/unsubscribe", { endpoint: endpoint });
      });
    });
  }

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function renderInbox(container, data) {
    container.textContent = "";
    var header = element("div", "engage-inbox-header", "Messages");
    if (data.unread) header.appendChild(element("span", "engage-inbox-unread", " (" + data.unread + ")"));
    container.appendChild(header);
    if (!data.messages.length) {
      container.appendChild(element("p", "engage-inbox-empty", "No messages yet."));
      return;
    }
    var list = element("ul", "engage-inbox-list");
    data.messages.forEach(function (message) {
      var item = element("li", "engage-inbox-item" + (message.read ? " engage-read" : ""));
      item.setAttribute("data-message-id", message.id);
      if (message.subject) item.appendChild(element("strong", "engage-inbox-subject", message.subject));
      item.appendChild(element("p", "engage-inbox-body", message.text));
      if (!message.read) {
        var button = element("button", "engage-inbox-mark", "Mark as read");
        button.type = "button";
        button.addEventListener("click", function () {
          request("POST", "/inbox/" + message.id + "/read").then(function () {
            return loadInbox(container);
          });
        });
        item.appendChild(button);
      }
      list.appendChild(item);
    });
    container.appendChild(list);
  }

  function loadInbox(container) {
    return request("GET", "/inbox").then(function (data) {
      renderInbox(container, data);
      return data;
    }, function (error) {
      if (error.status !== 401) throw error;
      container.textContent = "";
      return { messages: [], unread: 0 };
    });
  }

  function mountAll() {
    var nodes = document.querySelectorAll("[data-engage-inbox]");
    for (var i = 0; i < nodes.length; i++) loadInbox(nodes[i]);
  }

  window.engage = {
    track: track,
    push: { supported: pushSupported, subscribe: subscribe, unsubscribe: unsubscribe },
    inbox: { load: function () { return request("GET", "/inbox"); }, mount: loadInbox,
             read: function (id) { return request("POST", "/inbox/" + id + "/read"); } },
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", mountAll);
  else mountAll();
})();
