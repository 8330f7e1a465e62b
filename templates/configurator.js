(function () {
  "use strict";
  // The configurator page's only script (gpufleet.page inlines it; the CSP allows it by hash).
  // Data comes from the JSON block and reaches the page as textContent only, never as markup.
  var data = JSON.parse(document.getElementById("gpufleet-data").textContent);
  var tip = document.getElementById("tip");
  var filter = document.getElementById("host-filter");
  var onlyFindings = document.getElementById("only-findings");
  var shown = document.getElementById("shown");
  var hosts = Array.prototype.slice.call(document.querySelectorAll("details.host"));

  function text(tag, value, cls) {
    var el = document.createElement(tag);
    el.textContent = value;
    if (cls) { el.className = cls; }
    return el;
  }

  function known(value, suffix) {
    return value === null || value === undefined || value === "" ? "—" : String(value) + (suffix || "");
  }

  function details(svc) {
    var rows = [
      ["model", known(svc.model) + (svc.revision ? " @ " + svc.revision : "")],
      ["kind", svc.kind],
      ["GPUs", svc.gpus + " · port " + svc.port],
      ["start order", "#" + svc.start + (svc.after.length ? " after " + svc.after.join(", ") : " (first on its GPUs)")],
      ["memory/GPU", svc.gib + " GiB: " + svc.parts.map(function (p) { return p[0] + " " + p[1]; }).join(", ")],
      ["utilization", known(svc.util)],
      ["max len", known(svc.max_model_len)],
      ["KV cache", known(svc.kv_gib, " GiB") + " · " + known(svc.kv_tokens) + " tokens"],
      ["concurrency", known(svc.concurrency)]
    ];
    if (!svc.starts) { rows.push(["fails", known(svc.error_kind)]); }
    if (svc.state !== undefined) {
      rows.push(["state", svc.state + (svc.healthy === true ? ", healthy" : svc.healthy === false ? ", UNHEALTHY" : "")]);
      rows.push(["measured", known(svc.measured_gib, " GiB/GPU") + " (planned " + svc.gib + ")"]);
    }
    return rows;
  }

  function show(el) {
    var ref = el.getAttribute("data-svc").split(":");
    var svc = data.hosts[Number(ref[0])].services[Number(ref[1])];
    var dl = document.createElement("dl");
    details(svc).forEach(function (row) {
      dl.appendChild(text("dt", row[0]));
      dl.appendChild(text("dd", row[1]));
    });
    var flags = document.createElement("dd");
    flags.appendChild(text("code", known(svc.flags)));
    dl.appendChild(text("dt", "flags"));
    dl.appendChild(flags);
    tip.replaceChildren(text("h3", data.hosts[Number(ref[0])].name + " / " + svc.name), dl);
    tip.hidden = false;
    var box = el.getBoundingClientRect();
    var top = box.bottom + 6;
    if (top + tip.offsetHeight > window.innerHeight) { top = Math.max(0, box.top - tip.offsetHeight - 6); }
    tip.style.top = top + "px";
    tip.style.left = Math.max(0, Math.min(box.left, window.innerWidth - tip.offsetWidth - 8)) + "px";
  }

  function hide() { tip.hidden = true; }

  document.addEventListener("mouseover", function (event) {
    var el = event.target.closest ? event.target.closest("[data-svc]") : null;
    if (el) { show(el); } else { hide(); }
  });
  document.addEventListener("focusin", function (event) {
    var el = event.target.closest ? event.target.closest("[data-svc]") : null;
    if (el) { show(el); } else { hide(); }
  });
  document.addEventListener("keydown", function (event) { if (event.key === "Escape") { hide(); } });

  function apply() {
    var query = filter.value.trim().toLowerCase();
    var matched = hosts.filter(function (host) {
      var hit = !query || host.getAttribute("data-host").toLowerCase().indexOf(query) >= 0 ||
        host.getAttribute("data-address").toLowerCase().indexOf(query) >= 0;
      var ok = hit && (!onlyFindings.checked || host.getAttribute("data-findings") !== "0");
      host.hidden = !ok;
      return ok;
    });
    if (query && matched.length <= data.openHosts) {  // a few hosts found: show them whole
      matched.forEach(function (host) { host.open = true; });
    }
    shown.textContent = matched.length + " of " + hosts.length + " hosts";
    hide();
  }

  filter.addEventListener("input", apply);
  onlyFindings.addEventListener("change", apply);
  document.getElementById("expand-all").addEventListener("click", function () {
    hosts.forEach(function (host) { if (!host.hidden) { host.open = true; } });
  });
  document.getElementById("collapse-all").addEventListener("click", function () {
    hosts.forEach(function (host) { host.open = false; });
    hide();
  });
}());
