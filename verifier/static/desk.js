"use strict";
// Desk page: plain script, no dependencies. Talks to the agency API with the staff member's key.
(function () {
  var T = {
    ca: { channel: "Canal", channelOid4vp: "Cartera OpenID4VP", channelAries: "Cartera Aries (DIDComm)",
      apiKey: "Clau d'API de l'organisme", connect: "Connecta", template: "Què cal demanar", show: "Mostra el codi QR",
      sameDevice: "Obre la cartera en aquest dispositiu", status: "Estat", again: "Nova sol·licitud",
      pending: "Esperant la resposta", verified: "Verificat", rejected: "Rebutjat", declined: "Denegat per la persona",
      expired: "Caducat", badKey: "Clau no vàlida", failed: "No s'ha pogut crear la sol·licitud", reasons: "Motius",
      disconnect: "Desconnecta" },
    es: { channel: "Canal", channelOid4vp: "Cartera OpenID4VP", channelAries: "Cartera Aries (DIDComm)",
      apiKey: "Clave de API del organismo", connect: "Conectar", template: "Qué pedir", show: "Mostrar el código QR",
      sameDevice: "Abrir la cartera en este dispositivo", status: "Estado", again: "Nueva solicitud",
      pending: "Esperando la respuesta", verified: "Verificado", rejected: "Rechazado", declined: "Denegado por la persona",
      expired: "Caducado", badKey: "Clave no válida", failed: "No se pudo crear la solicitud", reasons: "Motivos",
      disconnect: "Desconectar" },
    en: { channel: "Channel", channelOid4vp: "OpenID4VP wallet", channelAries: "Aries wallet (DIDComm)",
      apiKey: "Agency API key", connect: "Connect", template: "What to ask for", show: "Show QR code",
      sameDevice: "Open the wallet on this device", status: "Status", again: "New request",
      pending: "Waiting for the answer", verified: "Verified", rejected: "Rejected", declined: "Declined by the citizen",
      expired: "Expired", badKey: "Invalid key", failed: "The request could not be created", reasons: "Reasons",
      disconnect: "Disconnect" }
  };
  var lang = document.documentElement.lang in T ? document.documentElement.lang : "ca";
  var t = T[lang];
  var $ = function (id) { return document.getElementById(id); };
  var templates = [];
  var source = null;

  document.querySelectorAll("[data-i18n]").forEach(function (el) { el.textContent = t[el.dataset.i18n]; });

  function api(path, options, key) {
    options = options || {};
    options.headers = Object.assign({ "Authorization": "Bearer " + (key || sessionStorage.getItem("verifierKey")) },
                                    options.headers || {});
    return fetch(path, options).then(function (r) {
      if (!r.ok) { throw { status: r.status }; }
      return r;
    });
  }

  function message(text) { $("message").textContent = text || ""; }

  function showPurpose() {
    var chosen = templates[$("template").selectedIndex];
    $("purpose").textContent = chosen ? (chosen.purpose[lang] || Object.values(chosen.purpose)[0]) : "";
  }

  function connect() {
    // The key stays in this tab (sessionStorage) only once the service has taken it.
    var typed = $("api-key").value.trim();
    var key = typed || sessionStorage.getItem("verifierKey");
    if (!key) { message(t.badKey); return; }
    $("connect").disabled = true;
    api("/v1/templates", {}, key).then(function (r) { return r.json(); }).then(function (items) {
      sessionStorage.setItem("verifierKey", key);
      $("api-key").value = "";
      templates = items;
      var select = $("template");
      select.textContent = "";
      items.forEach(function (item) {
        var option = document.createElement("option");
        option.value = item.name;
        option.textContent = item.name;
        select.appendChild(option);
      });
      showPurpose();
      $("login").hidden = true;
      $("ask").hidden = false;
      $("disconnect").hidden = false;
      message("");
    }).catch(function (err) {
      // A refused key is not kept (nor one kept before that the service now refuses).
      if (err && (err.status === 401 || err.status === 403)) { sessionStorage.removeItem("verifierKey"); }
      message(t.badKey);
    }).then(function () { $("connect").disabled = false; });
  }

  function disconnect() {
    // Forget the key: whoever uses this browser next must type one.
    sessionStorage.removeItem("verifierKey");
    if (source) { source.close(); source = null; }
    templates = [];
    $("template").textContent = "";
    $("purpose").textContent = "";
    $("qr").textContent = "";
    $("outcome").textContent = "";
    $("same-device").href = "#";
    $("api-key").value = "";
    $("request").hidden = true;
    $("ask").hidden = true;
    $("disconnect").hidden = true;
    $("login").hidden = false;
    message("");
  }

  function render(result) {
    var status = $("status");
    status.textContent = t[result.status] || result.status;
    status.className = result.status;
    var out = $("outcome");
    out.textContent = "";
    if (result.status === "verified") {
      Object.keys(result.claims).forEach(function (qid) {
        var dl = document.createElement("dl");
        var claims = result.claims[qid];
        Object.keys(claims).forEach(function (name) {
          var dt = document.createElement("dt");
          var dd = document.createElement("dd");
          dt.textContent = name;
          var value = claims[name];
          dd.textContent = typeof value === "object" ? JSON.stringify(value) : String(value);
          dl.appendChild(dt);
          dl.appendChild(dd);
        });
        out.appendChild(dl);
      });
    } else if (result.errors && result.errors.length) {
      var p = document.createElement("p");
      p.textContent = t.reasons + ":";
      out.appendChild(p);
      var ul = document.createElement("ul");
      result.errors.forEach(function (e) {
        var li = document.createElement("li");
        li.textContent = e.code + (e.detail ? " — " + e.detail : "");
        ul.appendChild(li);
      });
      out.appendChild(ul);
    }
  }

  function channel() {
    // The switch exists only when the verifier runs the Aries channel; OpenID4VP otherwise.
    var chosen = document.querySelector("input[name=channel]:checked");
    return chosen ? chosen.value : "openid4vp";
  }

  function show() {
    var button = $("show");
    if (button.disabled) { return; }
    // One request per press: the button waits for this one (a double click would create two).
    button.disabled = true;
    message("");
    // Both request variants answer with the same fields (uri, qr_svg_url, events_url): one view for both.
    var path = channel() === "aries" ? "/v1/aries/requests" : "/v1/requests";
    api(path, { method: "POST", headers: { "Content-Type": "application/json" },
                          body: JSON.stringify({ template: $("template").value }) })
      .then(function (r) { return r.json(); })
      .then(function (created) {
        $("same-device").href = created.uri;
        $("same-device").dataset.requestId = created.id;
        render({ status: "pending", claims: {}, errors: [] });
        $("ask").hidden = true;
        $("request").hidden = false;
        return api(created.qr_svg_url).then(function (r) { return r.text(); }).then(function (svg) {
          var doc = new DOMParser().parseFromString(svg, "image/svg+xml");
          var qr = $("qr");
          qr.textContent = "";
          qr.appendChild(document.importNode(doc.documentElement, true));
          if (source) { source.close(); }
          source = new EventSource(created.events_url);
          source.addEventListener("status", function (event) {
            var result = JSON.parse(event.data);
            render(result);
            if (result.status !== "pending") { source.close(); }
          });
        });
      })
      .catch(function () { message(t.failed); })
      .then(function () { button.disabled = false; });
  }

  $("connect").addEventListener("click", connect);
  $("template").addEventListener("change", showPurpose);
  $("show").addEventListener("click", show);
  $("disconnect").addEventListener("click", disconnect);
  $("again").addEventListener("click", function () {
    if (source) { source.close(); }
    $("request").hidden = true;
    $("ask").hidden = false;
  });
  if (sessionStorage.getItem("verifierKey")) { connect(); }
})();
