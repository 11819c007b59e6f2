// Live follow of a running job's log: an EventSource on the page's stream appends each
// line as text (never as HTML), with its ANSI colours as classes.
"use strict";
(function () {
  var log = document.getElementById("log");
  if (!log || !log.dataset.stream) { return; }
  var status = document.getElementById("log-status");
  var skip = parseInt(log.dataset.lines || "0", 10);
  var number = skip;
  var group = null;
  var SGR = /\x1b\[([0-9;]*)m|\x1b\[[0-9;?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]/g;

  function apply(codes, state) {
    var parts = codes ? codes.split(";").map(Number) : [0];
    for (var i = 0; i < parts.length; i++) {
      var c = parts[i];
      if (c === 0) { for (var k in state) { delete state[k]; } }
      else if (c === 1) { state.b = "ansi-bold"; }
      else if (c === 3) { state.i = "ansi-italic"; }
      else if (c === 4) { state.u = "ansi-underline"; }
      else if (c === 22) { delete state.b; }
      else if (c === 23) { delete state.i; }
      else if (c === 24) { delete state.u; }
      else if ((c >= 30 && c <= 37) || (c >= 90 && c <= 97)) { state.fg = "ansi-fg-" + (c < 90 ? c - 30 : c - 82); }
      else if ((c >= 40 && c <= 47) || (c >= 100 && c <= 107)) { state.bg = "ansi-bg-" + (c < 100 ? c - 40 : c - 92); }
      else if (c === 39) { delete state.fg; }
      else if (c === 49) { delete state.bg; }
      else if (c === 38 || c === 48) { i += parts[i + 1] === 5 ? 2 : 4; }
    }
  }

  function classes(state) {
    return Object.keys(state).map(function (k) { return state[k]; }).sort().join(" ");
  }

  function fill(into, text) {
    var state = {};
    var pos = 0;
    var m;
    SGR.lastIndex = 0;
    function add(piece) {
      if (!piece) { return; }
      var span = document.createElement("span");
      var cls = classes(state);
      if (cls) { span.className = cls; }
      span.textContent = piece;
      into.appendChild(span);
    }
    while ((m = SGR.exec(text)) !== null) {
      add(text.slice(pos, m.index));
      if (m[1] !== undefined) { apply(m[1], state); }
      pos = SGR.lastIndex;
    }
    add(text.slice(pos));
  }

  function clock(stamp) {
    var d = stamp ? new Date(stamp) : new Date();
    return isNaN(d.getTime()) ? "" : d.toISOString().slice(11, 19);
  }

  function lineElement(text, stamp) {
    number += 1;
    var div = document.createElement("div");
    div.className = text.indexOf("##[ci-pool]") === 0 ? "line own" : "line";
    div.id = "L" + number;
    var a = document.createElement("a");
    a.className = "ln";
    a.href = "#L" + number;
    a.textContent = String(number);
    var t = document.createElement("time");
    t.className = "ts";
    t.textContent = clock(stamp);
    var tx = document.createElement("span");
    tx.className = "tx";
    fill(tx, text);
    div.appendChild(a);
    div.appendChild(t);
    div.appendChild(tx);
    return div;
  }

  function append(text, stamp) {
    if (text.indexOf("##[endgroup]") === 0 && group) { group = null; number += 1; return; }
    if (text.indexOf("##[group]") === 0) {
      var details = document.createElement("details");
      details.className = "group";
      var summary = document.createElement("summary");
      summary.appendChild(lineElement(text.slice(9), stamp));
      details.appendChild(summary);
      log.appendChild(details);
      group = details;
      return;
    }
    var el = lineElement(text, stamp);
    (group || log).appendChild(el);
    var atEnd = window.innerHeight + window.scrollY >= document.body.offsetHeight - 40;
    if (atEnd) { el.scrollIntoView({block: "end"}); }
  }

  var source = new EventSource(log.dataset.stream);
  var seen = 0;
  source.addEventListener("line", function (event) {
    var data = JSON.parse(event.data);
    seen += 1;
    if (seen <= skip) { return; }  // already rendered by the server
    append(String(data.line), data.t);
  });
  source.addEventListener("end", function (event) {
    source.close();
    var data = JSON.parse(event.data);
    var state = document.querySelector("[data-test=job-state]");
    if (state) {
      state.textContent = data.state;
      state.className = "state state-" + data.state;
    }
    if (status) { status.textContent = "The job ended: " + data.state + "."; }
  });
  source.onerror = function () {
    if (status && source.readyState === EventSource.CLOSED) { status.textContent = "The live log stopped; reload the page."; }
  };
}());
