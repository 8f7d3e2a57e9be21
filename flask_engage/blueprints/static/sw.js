/* flask-engage service worker: shows web push notifications, opens the app on click
 * and reports the click to the signed URL the notification carries ("Push clicked"). */
"use strict";

self.addEventListener("push", function (event) {
  var data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch (e) {
    data = { body: event.data ? event.data.text() : "" };
  }
  var title = data.title || "New message";
  event.waitUntil(
    self.registration.showNotification(title, {
      body: data.body || "",
      tag: data.message_id ? "engage-" + data.message_id : undefined,
      data: { url: data.url || "/", report: data.report },
    })
  );
});

function reportClick(url) {
  if (!url) return Promise.resolve();
  /* no-cors: the report may go to ENGAGE_BASE_URL's origin; its answer is not needed */
  return fetch(url, { method: "POST", mode: "no-cors", credentials: "omit", keepalive: true })
    .catch(function () {});
}

self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  var data = event.notification.data || {};
  var target = new URL(data.url || "/", self.location.origin).href;
  var opened = self.clients.matchAll({ type: "window", includeUncontrolled: true })
    .then(function (list) {
      for (var i = 0; i < list.length; i++) {
        if (list[i].url === target && "focus" in list[i]) return list[i].focus();
      }
      return self.clients.openWindow(target);
    });
  event.waitUntil(Promise.all([opened, reportClick(data.report)]));
});
