// The operator page: static HTML + CSS + a small script that reads the JSON
// API every few seconds. No framework and no inline script, so the page runs
// under a strict Content-Security-Policy. Cells are filled with textContent.

export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>introvisor</title>
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<header>
  <h1>introvisor <span id="device"></span></h1>
  <p id="status">loading…</p>
</header>
<main>
  <section><h2>Guests</h2>
    <table id="guests"><thead><tr><th>Guest</th><th>Health</th><th>Open findings</th><th>Last scan</th><th>Note</th></tr></thead><tbody></tbody></table></section>
  <section><h2>Current findings</h2>
    <table id="findings"><thead><tr><th>Guest</th><th>Fault</th><th>Severity</th><th>Summary</th><th>Event #</th></tr></thead><tbody></tbody></table></section>
  <section><h2>Recovery ladders</h2>
    <table id="ladders"><thead><tr><th>Guest</th><th>Fault</th><th>Step</th><th>Action</th><th>Attempt</th><th>Reason</th></tr></thead><tbody></tbody></table></section>
  <section><h2>Action history</h2>
    <table id="actions"><thead><tr><th>Time</th><th>Guest</th><th>Action</th><th>Fault</th><th>Target</th><th>Result</th><th>Duration</th></tr></thead><tbody></tbody></table></section>
  <section><h2>Refused writes (KVM write trap)</h2>
    <ul id="trap-states"></ul>
    <table id="refused"><thead><tr><th>Time</th><th>Guest</th><th>vCPU</th><th>Table</th><th>Entry</th><th>GPA</th><th>RIP</th><th>Length</th><th>Value</th><th>Guest saw</th><th>Path</th><th>Lost before</th></tr></thead><tbody></tbody></table></section>
</main>
</body>
</html>
`;

export const PAGE_CSS = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1b1f24; background: #f6f7f9; }
header { background: #1b2a3a; color: #fff; padding: 10px 20px; }
header h1 { margin: 0; font-size: 20px; }
header p { margin: 4px 0 0; color: #c7d2de; }
main { padding: 10px 20px; }
section { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; margin: 12px 0; padding: 8px 12px; overflow-x: auto; }
h2 { font-size: 16px; margin: 4px 0 8px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eef0f3; vertical-align: top; }
td.mono { font-family: ui-monospace, monospace; }
tr.empty td { color: #7a8591; font-style: italic; }
.h-healthy { color: #137333; font-weight: 600; }
.h-faulty, .s-critical, .r-failed { color: #b3261e; font-weight: 600; }
.h-recovering, .s-warning { color: #a15c00; font-weight: 600; }
.h-down, .h-unknown { color: #5f6368; font-weight: 600; }
`;

export const PAGE_JS = `'use strict';
(function () {
  var m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) { sessionStorage.setItem('introvisor-token', decodeURIComponent(m[1])); history.replaceState(null, '', location.pathname); }
  var token = sessionStorage.getItem('introvisor-token');

  function get(path) {
    var headers = token ? { Authorization: 'Bearer ' + token } : {};
    return fetch(path, { headers: headers, cache: 'no-store' }).then(function (r) {
      if (!r.ok) return r.json().then(function (b) { throw new Error(path + ': ' + r.status + ' ' + (b && b.error || '')); });
      return r.json();
    });
  }
  function time(ms) { return ms == null ? '' : new Date(ms).toLocaleString(); }
  function fill(id, rows, cells, empty) {
    var body = document.querySelector('#' + id + ' tbody');
    var out = document.createDocumentFragment();
    if (rows.length === 0) {
      var tr = document.createElement('tr'); tr.className = 'empty';
      var td = document.createElement('td'); td.colSpan = document.querySelectorAll('#' + id + ' th').length; td.textContent = empty;
      tr.appendChild(td); out.appendChild(tr);
    }
    rows.forEach(function (row) {
      var tr = document.createElement('tr');
      cells(row).forEach(function (c) {
        var td = document.createElement('td');
        if (c && typeof c === 'object' && c.href) { var a = document.createElement('a'); a.href = c.href; a.textContent = String(c.text); td.appendChild(a); }
        else if (c && typeof c === 'object') { td.textContent = c.text == null ? '' : String(c.text); if (c.cls) td.className = c.cls; }
        else td.textContent = c == null ? '' : String(c);
        tr.appendChild(td);
      });
      out.appendChild(tr);
    });
    body.replaceChildren(out);
  }

  function refresh() {
    return Promise.all([
      get('/api/status'), get('/api/guests'), get('/api/findings'), get('/api/ladders'),
      get('/api/actions?limit=100'), get('/api/refused-writes?limit=200'),
    ]).then(function (r) {
      var st = r[0];
      document.getElementById('device').textContent = st.device;
      var parts = ['updated ' + time(st.now), 'outbox: ' + st.outbox.pending + ' undelivered'];
      if (st.outbox.droppedTotal) parts.push(st.outbox.droppedTotal + ' dropped');
      if (st.policyVersion != null) parts.push('policy v' + st.policyVersion);
      if (st.telemetry) parts.push('broker ' + (st.telemetry.connected ? 'connected' : 'disconnected'));
      document.getElementById('status').textContent = parts.join(' · ');
      fill('guests', r[1], function (g) { return [{ text: g.guest, href: '/guest.html?name=' + encodeURIComponent(g.guest) }, { text: g.health, cls: 'h-' + g.health }, g.openFindings, time(g.lastScanAtMs), g.note]; }, 'no guests reported yet');
      fill('findings', r[2], function (f) { return [f.guest, f.fault, { text: f.severity, cls: 's-' + f.severity }, f.summary, f.seq]; }, 'no open findings');
      fill('ladders', r[3], function (l) { return [l.guest, l.fault, l.step, l.action, l.attempt, l.reason]; }, 'no ladder active');
      fill('actions', r[4], function (e) { var a = e.payload; return [time(e.atMs), a.guest, a.action, a.fault, a.target, { text: a.outcome + (a.error ? ': ' + a.error : ''), cls: 'r-' + a.outcome }, Math.round(a.durationMs) + ' ms']; }, 'no actions taken');
      fill('refused', r[5], function (w) { return [time(w.refusedAtMs), w.guest, w.vcpu, w.table, w.entry, { text: w.gpa, cls: 'mono' }, { text: w.rip, cls: 'mono' }, w.length, { text: w.value, cls: 'mono' }, w.action === null ? '' : (w.action === 'gp' ? '#GP' : 'dropped'), w.source, w.lostBefore]; }, 'no refused writes');
      document.body.dataset.loaded = String(Date.now());
      // The trap's state per guest, so an empty table is not read as a protection that is on.
      if (!st.console) return;
      return get('/api/console/trap').then(function (ts) {
        var ul = document.getElementById('trap-states');
        var frag = document.createDocumentFragment();
        ts.forEach(function (t) {
          var li = document.createElement('li');
          li.textContent = t.guest + ': write trap ' + t.status + (t.detail ? ' — ' + t.detail : '');
          li.className = t.status === 'armed' ? 'h-healthy' : 'h-faulty';
          frag.appendChild(li);
        });
        ul.replaceChildren(frag);
      }, function () { /* no console on this server */ });
    }).catch(function (e) {
      document.getElementById('status').textContent = 'error: ' + e.message;
    });
  }
  refresh();
  setInterval(refresh, 5000);
})();
`;
