"use strict";
// Service worker of the Cartera web wallet: caches the app shell only (page, script, styles, decoder,
// icons) so the app opens offline. API calls (/v1/...) are never cached: they carry tokens and
// personal data, and always go to the network. Nor is an address with a query: the login callback
// (?code=) and the issuer's return (?offer_id=&completion=) carry one-time secrets.
// v2: v1 could hold such an address; activating v2 deletes that cache.
var CACHE = "cartera-shell-v2";
var SHELL = ["/app/", "/app/app.js", "/app/app.css", "/app/vendor/jsQR.js", "/app/manifest.json", "/app/icon.svg",
             "/app/icon-192.png", "/app/icon-512.png"];

self.addEventListener("install", function (event) {
  event.waitUntil(caches.open(CACHE).then(function (cache) { return cache.addAll(SHELL); }).then(function () {
    return self.skipWaiting();
  }));
});

self.addEventListener("activate", function (event) {
  event.waitUntil(caches.keys().then(function (names) {
    return Promise.all(names.filter(function (name) { return name !== CACHE; }).map(function (name) {
      return caches.delete(name);
    }));
  }).then(function () { return self.clients.claim(); }));
});

self.addEventListener("fetch", function (event) {
  var url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin) { return; }
  var path = url.pathname === "/app/callback" ? "/app/" : url.pathname;
  if (SHELL.indexOf(path) < 0) { return; }
  // Network first, so a new version shows at once; the cached shell when offline.
  event.respondWith(fetch(event.request).then(function (response) {
    if (response.ok && path === url.pathname && url.search === "") {
      var copy = response.clone();
      caches.open(CACHE).then(function (cache) { cache.put(path, copy); });
    }
    return response;
  }).catch(function () { return caches.match(path); }));
});
