// The console's live updates: one EventSource, no framework, no inline script (CSP).
"use strict";
(function () {
  const live = document.querySelector("[data-live]");
  const FIELDS = ["mode", "playing_text", "battery", "last_seen", "last_end", "node", "connected_since",
    "buttons", "cert_serial", "session_id"];

  function setText(root, field, text) {
    root.querySelectorAll('[data-field="' + field + '"]').forEach(function (el) { el.textContent = text; });
  }

  function renderLeds(container, leds) {
    container.replaceChildren.apply(container, leds.map(function (led) {
      const cell = document.createElement("span");
      cell.className = "led-cell";
      const dot = document.createElement("span");
      dot.className = "led led-" + led.cls;
      dot.setAttribute("aria-hidden", "true");
      const text = document.createElement("span");
      text.className = "led-text";
      text.textContent = led.index + ": " + led.label;
      cell.append(dot, text);
      return cell;
    }));
  }

  function startProgress(bar) {
    bar.dataset.started = String(Date.now() / 1000 - Number(bar.value));
  }

  function update(root, d) {
    root.dataset.state = d.state;
    root.querySelectorAll('[data-field="state"]').forEach(function (el) {
      el.textContent = d.state;
      el.className = "state state-" + d.state.replace(/ /g, "-");
    });
    FIELDS.forEach(function (field) { if (field in d) setText(root, field, String(d[field])); });
    root.querySelectorAll('[data-field="cert"]').forEach(function (el) {
      el.textContent = d.cert + (d.cert_warn ? " (look at renewal)" : "");
      el.className = d.cert_warn ? "warn" : "";
    });
    root.querySelectorAll('[data-field="renewal"]').forEach(function (el) {
      el.textContent = d.renewal;
      el.className = d.renewal_warn ? "warn" : "";
    });
    root.querySelectorAll('[data-field="leds"]').forEach(function (el) { renderLeds(el, d.leds); });
    root.querySelectorAll('[data-field="progress"]').forEach(function (bar) {
      if (d.playing) {
        bar.hidden = false;
        bar.max = d.playing.length;
        bar.value = d.playing.position;
        startProgress(bar);
      } else {
        bar.hidden = true;
        delete bar.dataset.started;
      }
    });
  }

  function cell(label, child) {
    const td = document.createElement("td");
    td.dataset.label = label;
    td.append(child);
    return td;
  }

  function field(name, tag) {
    const el = document.createElement(tag || "span");
    el.dataset.field = name;
    return el;
  }

  function newRow(d) {
    const body = live.querySelector("tbody");
    if (!body) return null;
    const row = document.createElement("tr");
    row.dataset.device = d.key;
    const link = document.createElement("a");
    link.href = "/devices/" + encodeURIComponent(d.tenant) + "/" + encodeURIComponent(d.device_id);
    link.textContent = live.dataset.scope ? d.device_id : d.key;  // a tenant's own page omits the tenant
    const playing = document.createElement("span");
    const bar = field("progress", "progress");
    bar.hidden = true;
    playing.append(field("playing_text"), bar);
    const leds = field("leds");
    leds.className = "leds";
    row.append(cell("Device", link), cell("State", field("state")), cell("LEDs", leds),
      cell("Mode", field("mode")), cell("Playing", playing), cell("Battery", field("battery")),
      cell("Last seen", field("last_seen")), cell("Last end", field("last_end")),
      cell("Certificate", field("cert")), cell("Labels", document.createTextNode(d.labels_text)));
    body.append(row);
    const empty = document.querySelector(".empty");
    if (empty) empty.remove();
    return row;
  }

  function recount() {
    const rows = Array.from(live.querySelectorAll("tbody tr"));
    const count = function (state) { return rows.filter(function (r) { return r.dataset.state === state; }).length; };
    const set = function (name, value) {
      const el = document.querySelector('[data-count="' + name + '"]');
      if (el) el.textContent = String(value);
    };
    set("total", rows.length);
    set("online", count("online"));
    set("offline", count("offline"));
    set("revoked", count("revoked"));
  }

  document.querySelectorAll('progress[data-field="progress"]:not([hidden])').forEach(startProgress);
  setInterval(function () {
    document.querySelectorAll("progress[data-started]").forEach(function (bar) {
      bar.value = Math.min(Number(bar.max), Date.now() / 1000 - Number(bar.dataset.started));
    });
  }, 500);

  if (!live) return;
  live.querySelectorAll("[data-device]").forEach(function (row) {
    const state = row.querySelector('[data-field="state"]');
    if (state) row.dataset.state = state.textContent.trim();
  });
  if (live.dataset.device) live.dataset.state = live.querySelector('[data-field="state"]').textContent.trim();
  const single = live.dataset.live === "device" ? live.dataset.device : "";
  const source = new EventSource("/events" + (single ? "?device=" + encodeURIComponent(single) : ""));
  source.addEventListener("open", function () { document.body.dataset.live = "connected"; });
  source.addEventListener("device", function (event) {
    const message = JSON.parse(event.data);
    const d = message.device;
    let root = document.querySelector('[data-device="' + CSS.escape(d.key) + '"]');
    if (!root && live.dataset.live === "fleet" && !location.search) root = newRow(d);  // filtered: reload shows it
    if (root) update(root, d);
    if (live.dataset.live === "fleet") recount();
    document.body.dataset.lastChange = message.change;
  });
})();
