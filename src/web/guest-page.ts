// The per-guest console page: what the supervisor sees of one guest, and what
// an operator may do to it. No inline script (strict CSP); guest-controlled
// strings go into the DOM as text only. Plots: uPlot, served by the web server.

export const GUEST_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>introvisor guest</title>
<link rel="stylesheet" href="/app.css">
<link rel="stylesheet" href="/vendor/uplot.css">
<link rel="stylesheet" href="/guest.css">
<script src="/vendor/uplot.js" defer></script>
<script src="/guest.js" defer></script>
</head>
<body>
<header>
  <h1><a href="/">introvisor</a> / <span id="name"></span></h1>
  <p id="status">loading…</p>
</header>
<main>
  <section id="overview"><h2>State</h2>
    <table id="state"><tbody></tbody></table></section>
  <section id="operator"><h2>Operator actions</h2>
    <div id="login"><label>Access token <input id="token" type="password" autocomplete="off"></label> <button id="use-token">Use token</button></div>
    <div id="buttons">
      <button data-op="action" data-action="restart-process">Restart critical processes</button>
      <button data-op="action" data-action="reboot-os">Reboot the OS</button>
      <button data-op="action" data-action="restart-vm">Restart the VM</button>
      <button data-op="action" data-action="restore-image">Restore the image</button>
      <button data-op="release">Release hold</button>
      <button data-op="baseline-accept">Accept kernel baseline</button>
      <button data-op="pause">Pause watching</button>
      <button data-op="resume">Resume watching</button>
    </div>
    <div id="demo" hidden>Demo attacks (lab guest):
      <button data-op="demo-attack" data-attack="kill-critical">Kill the critical service</button>
      <button data-op="demo-attack" data-attack="hook-syscall">Hook syscalls</button>
      <button data-op="demo-attack" data-attack="hide-process">Hide a process</button>
      <button data-op="demo-attack" data-attack="hide-module">Hide a module</button>
    </div>
    <div id="confirm" hidden><p id="confirm-text"></p><button id="confirm-yes">Confirm</button> <button id="confirm-no">Cancel</button></div>
    <p id="op-result"></p></section>
  <section><h2>Scan latency</h2><div id="plot-latency" class="plot"></div></section>
  <section><h2>Findings raised and actions taken over time</h2><div id="plot-events" class="plot"></div></section>
  <section><h2>Open findings</h2>
    <table id="findings"><thead><tr><th>Fault</th><th>Severity</th><th>Summary</th><th>Since</th><th>Evidence</th></tr></thead><tbody></tbody></table></section>
  <section><h2>Ladder timeline</h2>
    <ol id="timeline"></ol></section>
  <section><h2>Processes: kernel task list (outside) vs the guest's ps (inside)</h2>
    <p class="hint">Rows marked on one side only are what a rootkit hides.</p>
    <table id="ps"><thead><tr><th>PID</th><th>PPID</th><th>Outside</th><th>Inside</th><th>Command</th><th></th></tr></thead><tbody></tbody></table></section>
  <section><h2>Modules: module list vs /sys/module</h2>
    <table id="modules"><thead><tr><th>Name</th><th>On list</th><th>In sysfs</th><th>Base</th><th>Size</th></tr></thead><tbody></tbody></table></section>
  <section><h2>Syscall tables</h2>
    <table id="syscalls"><thead><tr><th>Table</th><th>Slot</th><th>Target</th><th>Owner</th><th>Expected</th></tr></thead><tbody></tbody></table></section>
</main>
</body>
</html>
`;

export const GUEST_CSS = `
header a { color: #fff; }
tr.mismatch td { background: #fde7e5; color: #8c1d18; font-weight: 600; }
#trap-state.t-armed { color: #137333; font-weight: 600; }
#trap-state.t-unavailable, #trap-state.t-error, #trap-state.t-off { color: #b3261e; font-weight: 600; }
#confirm { border: 2px solid #b3261e; padding: 6px 10px; margin: 8px 0; border-radius: 6px; background: #fff4f3; }
#buttons button { margin: 2px; }
.plot { min-height: 220px; }
pre.evidence { margin: 0; max-width: 60ch; max-height: 12em; overflow: auto; font-size: 12px; }
.hint { color: #5f6368; margin: 0 0 6px; }
#timeline li { margin: 2px 0; }
#under-way progress { width: 12em; vertical-align: middle; }
#under-way .note { color: #5f6368; font-family: monospace; font-size: 12px; }
`;

export const GUEST_JS = `'use strict';
(function () {
  var name = new URLSearchParams(location.search).get('name') || '';
  var token = sessionStorage.getItem('introvisor-token');
  var csrf = null;
  var plots = {};
  document.getElementById('name').textContent = name;
  function headers(extra) { var h = extra || {}; if (token) h.Authorization = 'Bearer ' + token; return h; }
  function json(r, path) { return r.json().then(function (b) { if (!r.ok) throw new Error(path + ': ' + r.status + ' ' + (b && b.error || '')); return b; }); }
  function get(path) { return fetch(path, { headers: headers(), cache: 'no-store' }).then(function (r) { return json(r, path); }); }
  function time(ms) { return ms == null ? '' : new Date(ms).toLocaleString(); }
  function el(tag, text, cls) { var e = document.createElement(tag); if (text != null) e.textContent = String(text); if (cls) e.className = cls; return e; }
  function fill(id, rows, cells, empty, rowClass) {
    var body = document.querySelector('#' + id + ' tbody');
    var out = document.createDocumentFragment();
    if (rows.length === 0) { var tr0 = el('tr', null, 'empty'); var td0 = el('td', empty); td0.colSpan = 6; tr0.appendChild(td0); out.appendChild(tr0); }
    rows.forEach(function (row) {
      var tr = el('tr', null, rowClass ? rowClass(row) : '');
      cells(row).forEach(function (c) { var td = el('td'); if (c instanceof Node) td.appendChild(c); else td.textContent = c == null ? '' : String(c); tr.appendChild(td); });
      out.appendChild(tr);
    });
    body.replaceChildren(out);
  }

  function plot(id, opts, data) {
    var host = document.getElementById(id);
    var width = Math.max(300, host.clientWidth || 600);
    if (plots[id]) { plots[id].setData(data); return; }
    opts.width = width; opts.height = 200;
    plots[id] = new uPlot(opts, data, host);
  }

  function render(d) {
    var s = d.summary;
    var rows = [
      ['Watching', s.watching ? 'yes' : 'PAUSED by an operator'],
      ['Scans', s.scans + (s.lastScanAtMs ? ' (last ' + time(s.lastScanAtMs) + ', ' + s.lastScanMs + ' ms)' : '')],
      ['Kernel', s.kernel || ('unread: ' + (s.snapshotError || ''))],
      ['Guest agent', s.agent || '?'],
      ['Hold', s.held ? 'HELD since ' + time(s.held.sinceMs) + ': ' + s.held.reason : 'not held'],
      ['Action in progress', s.pending ? s.pending.action + ' for ' + s.pending.fault : 'none'],
    ];
    var body = document.querySelector('#state tbody');
    var frag = document.createDocumentFragment();
    rows.forEach(function (r) { var tr = el('tr'); tr.appendChild(el('th', r[0])); tr.appendChild(el('td', r[1])); frag.appendChild(tr); });
    // The boot or action under way: the same progress the CLI shows (percent estimated by the supervisor).
    var pr = s.progress, ptr = el('tr'); ptr.appendChild(el('th', 'Under way'));
    var ptd = el('td'); ptd.id = 'under-way';
    if (pr) {
      if (pr.percent !== null) { var bar = el('progress'); bar.max = 100; bar.value = pr.percent; ptd.appendChild(bar); ptd.appendChild(document.createTextNode(' ')); }
      ptd.appendChild(el('span', pr.action + (pr.phase ? ' (' + pr.phase + ')' : '') + ': ' + (pr.percent !== null ? pr.percent + '% · ' : '') +
        Math.round(pr.elapsedMs / 1000) + ' s' + (pr.expectedMs !== null ? ' of ~' + Math.round(pr.expectedMs / 1000) + ' s' : ' (no earlier run to estimate from)')));
      if (pr.note) ptd.appendChild(el('div', pr.note, 'note'));
      ptd.dataset.action = pr.action;
      ptd.dataset.percent = pr.percent === null ? '' : String(pr.percent);
    } else ptd.textContent = 'nothing';
    ptr.appendChild(ptd); frag.appendChild(ptr);
    document.body.dataset.underWay = pr ? pr.action : '';
    var tr = el('tr'); tr.appendChild(el('th', 'KVM write trap'));
    var td = el('td', d.trap.status + (d.trap.detail ? ': ' + d.trap.detail : '')); td.id = 'trap-state'; td.className = 't-' + d.trap.status;
    tr.appendChild(td); frag.appendChild(tr);
    body.replaceChildren(frag);
    document.body.dataset.held = s.held ? 'yes' : 'no';
    document.getElementById('demo').hidden = !s.demo;

    fill('findings', d.findings.findings, function (f) { return [f.kind, f.severity, f.summary, time(f.firstSeenMs), el('pre', JSON.stringify(f.evidence, null, 1), 'evidence')]; }, 'no open findings');
    var tl = document.getElementById('timeline');
    var items = document.createDocumentFragment();
    d.timeline.slice().reverse().forEach(function (e) {
      var p = e.payload, text;
      if (e.kind === 'finding') text = 'finding ' + p.state + ': ' + p.fault + ' — ' + p.summary;
      else if (e.kind === 'ladder-step') text = 'ladder ' + p.fault + (p.step === null ? ' reset' : ' → step ' + p.step + ' ' + p.action + ' (attempt ' + p.attempt + ')') + ': ' + p.reason;
      else if (e.kind === 'action') text = 'action ' + p.action + (p.target ? ' ' + p.target : '') + ': ' + p.outcome + (p.error ? ' — ' + p.error : '') + ' (' + Math.round(p.durationMs) + ' ms)';
      else text = 'operator (' + p.who + '): ' + p.operation + (p.detail ? ' ' + p.detail : '') + ': ' + p.outcome + (p.error ? ' — ' + p.error : '');
      items.appendChild(el('li', time(e.atMs) + '  ' + text, 'k-' + e.kind));
    });
    if (d.timeline.length === 0) items.appendChild(el('li', 'nothing happened yet'));
    tl.replaceChildren(items);

    fill('ps', d.ps.rows, function (r) { return [r.pid, r.ppid, r.outside || '—', r.inside || '—', r.comm + (r.kernelThread ? ' [kthread]' : ''), r.mismatch ? (r.outside === null ? 'not on the kernel task list' : 'hidden from the guest') : '']; },
      d.ps.outsideError || d.ps.insideError || 'no processes', function (r) { return r.mismatch ? 'mismatch' : ''; });
    fill('modules', d.modules.rows, function (m) { return [m.name, m.onList ? 'yes' : 'NO', m.inSysfs ? 'yes' : 'NO', m.coreBase, m.coreSize]; }, d.modules.error || 'no modules', function (m) { return m.mismatch ? 'mismatch' : ''; });
    var sc = [];
    d.syscalls.tables.forEach(function (t) {
      if (t.rows.length === 0) sc.push({ table: t.table, nr: '', target: t.address, owner: t.entries + ' entries, all hold their own handler', expected: '', ok: true });
      t.rows.forEach(function (r) { sc.push({ table: t.table, nr: r.nr, target: r.target, owner: r.owner, expected: r.expected, ok: false }); });
    });
    fill('syscalls', sc, function (r) { return [r.table, r.nr, r.target, r.owner, r.expected]; }, d.syscalls.error || 'no syscall tables read', function (r) { return r.ok ? '' : 'mismatch'; });

    // Scan latency (ms) over time.
    var xs = d.scans.map(function (x) { return x[0] / 1000; });
    plot('plot-latency', { series: [{}, { label: 'scan ms', stroke: '#1b6ef3', width: 1 }], axes: [{}, { label: 'ms' }] }, [xs, d.scans.map(function (x) { return x[1]; })]);
    // Findings raised and actions taken, counted from the oldest event shown (steps at each event).
    var evs = d.timeline.filter(function (e) { return (e.kind === 'finding' && e.payload.state === 'raised') || e.kind === 'action'; })
      .map(function (e) { return [e.atMs / 1000, e.kind === 'action' ? 1 : 0]; });
    if (xs.length) { evs.push([xs[0], -1]); evs.push([xs[xs.length - 1], -1]); }
    evs.sort(function (a, b) { return a[0] - b[0]; });
    var tx = [], nf = [], na = [], f = 0, a = 0;
    evs.forEach(function (e) { if (e[1] === 0) f++; else if (e[1] === 1) a++; tx.push(e[0]); nf.push(f); na.push(a); });
    var stepped = uPlot.paths.stepped({ align: 1 });
    plot('plot-events', { series: [{}, { label: 'findings raised', stroke: '#b3261e', width: 2, paths: stepped }, { label: 'actions', stroke: '#137333', width: 2, paths: stepped }], axes: [{}, { label: 'count' }] },
      [tx, nf, na]);
    document.body.dataset.loaded = String(Date.now());
  }

  function refresh() {
    return get('/api/console/guest?name=' + encodeURIComponent(name)).then(function (d) {
      document.getElementById('status').textContent = 'updated ' + time(Date.now());
      render(d);
    }).catch(function (e) { document.getElementById('status').textContent = 'error: ' + e.message; });
  }

  function session() {
    if (!token) { csrf = null; return Promise.resolve(); }
    return get('/api/console/session').then(function (s) { csrf = s.csrf; document.getElementById('login').hidden = true; })
      .catch(function (e) { csrf = null; document.getElementById('op-result').textContent = 'token refused: ' + e.message; });
  }

  function post(body) {
    var out = document.getElementById('op-result');
    out.textContent = 'started: ' + body.op + (body.action ? ' ' + body.action : '') + (body.attack ? ' ' + body.attack : '') + ' …';
    document.body.dataset.op = 'running';
    return fetch('/api/console/op', { method: 'POST', headers: headers({ 'content-type': 'application/json', 'x-csrf-token': csrf || '' }), body: JSON.stringify(body) })
      .then(function (r) { return json(r, '/api/console/op'); })
      .then(function (v) { out.textContent = 'done: ' + body.op + (body.action ? ' ' + body.action : '') + (body.attack ? ' ' + body.attack : '') + (v && v.detail ? ' — ' + v.detail : ''); document.body.dataset.op = 'done'; })
      .catch(function (e) { out.textContent = 'refused or failed: ' + e.message; document.body.dataset.op = 'failed'; })
      .then(refresh);
  }

  var destructive = ['reboot-os', 'restart-vm', 'restore-image'];
  var waiting = null;
  function clicked(ev) {
    var b = ev.target.closest('button'); if (!b) return;
    var body = { op: b.dataset.op, guest: name };
    if (b.dataset.action) body.action = b.dataset.action;
    if (b.dataset.attack) body.attack = b.dataset.attack;
    if (body.op === 'action' && destructive.indexOf(body.action) >= 0) {
      waiting = body;
      document.getElementById('confirm-text').textContent = body.action + ' on ' + name + ' destroys its running state. Confirm?';
      document.getElementById('confirm').hidden = false;
      return;
    }
    post(body);
  }
  document.getElementById('buttons').addEventListener('click', clicked);
  document.getElementById('demo').addEventListener('click', clicked);
  document.getElementById('confirm-yes').addEventListener('click', function () {
    if (!waiting) return;
    var body = waiting; waiting = null; body.confirm = name;
    document.getElementById('confirm').hidden = true;
    post(body);
  });
  document.getElementById('confirm-no').addEventListener('click', function () { waiting = null; document.getElementById('confirm').hidden = true; });
  document.getElementById('use-token').addEventListener('click', function () {
    token = document.getElementById('token').value; sessionStorage.setItem('introvisor-token', token); session().then(refresh);
  });
  session().then(refresh);
  setInterval(refresh, 3000);
})();
`;
