// arq dashboard: theme switch and live updates over server-sent events. No build step, no dependencies.
(function () {
  'use strict';
  var root = document.documentElement;
  var saved = null;
  try { saved = window.localStorage.getItem('arq-theme'); } catch (e) { /* storage off */ }
  if (saved === 'dark' || saved === 'light') { root.setAttribute('data-theme', saved); }

  function isDark() {
    var theme = root.getAttribute('data-theme');
    if (theme) { return theme === 'dark'; }
    return window.matchMedia && window.matchMedia('(prefers-color-scheme: dark)').matches;
  }

  document.addEventListener('DOMContentLoaded', function () {
    var button = document.getElementById('theme');
    if (button) {
      button.addEventListener('click', function () {
        var next = isDark() ? 'light' : 'dark';
        root.setAttribute('data-theme', next);
        try { window.localStorage.setItem('arq-theme', next); } catch (e) { /* storage off */ }
      });
    }
    var live = document.getElementById('live');
    var status = document.getElementById('live-status');
    var updated = document.getElementById('updated');
    if (!live || !live.dataset.stream || !window.EventSource) { return; }
    var source = new EventSource(live.dataset.stream);
    source.addEventListener('update', function (event) {
      // the server renders (and escapes) the fragment with the same template as the page
      live.innerHTML = JSON.parse(event.data);
      live.dataset.updates = String(Number(live.dataset.updates || '0') + 1);
      if (status) { status.className = 'live-status on'; status.title = 'live: updated ' + new Date().toLocaleTimeString(); }
      if (updated) { updated.textContent = 'live, updated ' + new Date().toLocaleTimeString(); }
    });
    // a browser allows six connections per host: close the stream when the page goes, or six pages block the next
    window.addEventListener('pagehide', function () { source.close(); });
    source.addEventListener('error', function () {
      if (status) { status.className = 'live-status off'; status.title = 'live updates interrupted, reconnecting'; }
    });
  });
}());
