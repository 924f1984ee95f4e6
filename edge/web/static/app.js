// vendedge diagnostics: live updates over Server-Sent Events (GET /live). No libraries, no inline script (CSP).
"use strict";
(function () {
  if (document.body.dataset.live !== "on" || !window.EventSource) return;

  function get(obj, path) {
    return path.split(".").reduce(function (o, k) { return o == null ? undefined : o[k]; }, obj);
  }

  function show(path, value) {
    if (value === undefined || value === null) return "–";
    if (path === "door") return (value.closed ? "closed" : "OPEN") + ", " + (value.locked ? "locked" : "unlocked");
    if (path === "temperature.compressor_on") return value ? "on" : "off";
    return String(value);
  }

  function drawChart(t) {
    var svg = document.getElementById("temp-chart");
    if (!svg || !t || !t.points || t.points.length < 2) return;
    var w = svg.viewBox.baseVal.width, h = svg.viewBox.baseVal.height, pts = t.points;
    var vals = [];
    pts.forEach(function (p) { if (p[1] != null) vals.push(p[1]); if (p[2] != null) vals.push(p[2]); });
    var lo = Math.min.apply(null, vals) - 0.5, hi = Math.max.apply(null, vals) + 0.5;
    var t0 = pts[0][0], t1 = Math.max(pts[pts.length - 1][0], t0 + 1);
    function line(i) {
      return pts.filter(function (p) { return p[i] != null; }).map(function (p) {
        return ((p[0] - t0) / (t1 - t0) * w).toFixed(1) + "," + (h - (p[i] - lo) / (hi - lo) * h).toFixed(1);
      }).join(" ");
    }
    svg.querySelector(".cab").setAttribute("points", line(1));
    svg.querySelector(".evap").setAttribute("points", line(2));
    var range = document.getElementById("chart-range");
    if (range) range.textContent = lo.toFixed(1) + "…" + hi.toFixed(1) + " °C";
  }

  function drawAlarms(alarms) {
    var ul = document.getElementById("alarms");
    if (!ul || !alarms) return;
    ul.textContent = "";  // built with text nodes only: alarm messages are data, never markup
    if (!alarms.length) {
      var none = document.createElement("li"); none.className = "muted"; none.textContent = "none";
      ul.appendChild(none); return;
    }
    alarms.forEach(function (a) {
      var li = document.createElement("li");
      li.className = "sev-" + String(a.severity || "info").replace(/[^a-z]/g, "");
      li.textContent = (a.raised_at || "") + " · " + (a.kind || "") + " · " + (a.message || "");
      ul.appendChild(li);
    });
  }

  function cell(text, cls) {
    var td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; return td;
  }

  function drawDevices(devices) {
    var body = document.getElementById("devices-body");
    if (!body || !devices) return;
    body.textContent = "";  // text nodes only: device names and counters are data, never markup
    devices.forEach(function (dev) {
      var tr = document.createElement("tr");
      tr.dataset.device = dev.name;
      var counters = Object.keys(dev.counters || {}).filter(function (k) { return dev.counters[k]; })
        .map(function (k) { return k + "=" + dev.counters[k]; }).join(" ");
      tr.appendChild(cell(dev.name));
      tr.appendChild(cell(dev.online ? "online" : "offline", dev.online ? "ok" : "bad"));
      tr.appendChild(cell(dev.seen_s_ago == null ? "–" : String(dev.seen_s_ago)));
      tr.appendChild(cell(counters || "none", "small"));
      body.appendChild(tr);
    });
  }

  function apply(snap) {
    document.querySelectorAll("[data-live]").forEach(function (el) {
      if (el === document.body) return;
      var path = el.dataset.live;
      if (path === "alarms.length") { el.textContent = (snap.alarms || []).length; return; }
      var v = get(snap, path);
      if (v !== undefined) el.textContent = show(path, v);
    });
    document.querySelectorAll("[data-count]").forEach(function (el) {
      var s = snap.stock && snap.stock[el.dataset.count];
      if (!s) return;
      el.textContent = s[0];
      var box = el.closest(".slot");
      if (box) box.classList.toggle("low", !!s[2]);
    });
    drawAlarms(snap.alarms);
    drawDevices(snap.devices);
    drawChart(snap.temperature);
    document.body.dataset.liveTicks = String((+document.body.dataset.liveTicks || 0) + 1);
  }

  var es = new EventSource("/live");
  es.addEventListener("snapshot", function (ev) {
    try { apply(JSON.parse(ev.data)); } catch (e) { /* a bad frame must not stop the stream */ }
  });
})();
