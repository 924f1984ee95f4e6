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

  var SVG = "http://www.w3.org/2000/svg";

  function svgEl(name, attrs, text) {
    var el = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { el.setAttribute(k, String(attrs[k])); });
    if (text !== undefined) el.textContent = text;  // labels are text nodes, never markup
    return el;
  }

  // The server computes the chart (edge/web/chart.py); this redraws the same geometry.
  function drawChart(c) {
    var svg = document.getElementById("temp-chart");
    if (!svg || !c || !c.cabinet) return;
    var f = c.frame, axes = svg.querySelector("g.axes");
    axes.textContent = "";
    axes.appendChild(svgEl("rect", {"class": "plot", x: f.x0, y: f.y0, width: f.x1 - f.x0, height: f.y1 - f.y0}));
    c.yticks.forEach(function (t) {
      axes.appendChild(svgEl("line", {"class": "grid", x1: f.x0, x2: f.x1, y1: t.y, y2: t.y}));
      axes.appendChild(svgEl("text", {"class": "ytick", x: f.x0 - 4, y: t.y + 4, "text-anchor": "end"}, t.label));
    });
    c.xticks.forEach(function (t) {
      axes.appendChild(svgEl("line", {"class": "grid", x1: t.x, x2: t.x, y1: f.y0, y2: f.y1}));
      axes.appendChild(svgEl("text", {"class": "xtick", x: t.x, y: c.h - 5, "text-anchor": "middle"}, t.label));
    });
    c.limits.forEach(function (l) {
      var cls = String(l.cls).replace(/[^a-z]/g, "");
      axes.appendChild(svgEl("line", {"class": "limit " + cls, "data-limit": l.key, x1: f.x0, x2: f.x1, y1: l.y, y2: l.y}));
      axes.appendChild(svgEl("text", {"class": "limit-label " + cls, x: l.lx, y: l.y - 3,
        "text-anchor": l.anchor === "start" ? "start" : "end"}, l.label));
    });
    svg.querySelector(".cab").setAttribute("points", c.cabinet);
    svg.querySelector(".evap").setAttribute("points", c.evap);
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
      li.textContent = (a.raised_text || a.raised_at || "") + " · " + (a.kind || "") + " · " + (a.message || "");
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
      tr.appendChild(cell(dev.seen_text || "–"));
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
    drawChart(snap.chart);
    document.body.dataset.liveTicks = String((+document.body.dataset.liveTicks || 0) + 1);
  }

  var es = new EventSource("/live");
  es.addEventListener("snapshot", function (ev) {
    try { apply(JSON.parse(ev.data)); } catch (e) { /* a bad frame must not stop the stream */ }
  });
})();
