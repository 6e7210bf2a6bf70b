// Small enhancements on top of htmx: menus close like menus, and a swapped panel gets focus.
'use strict';

function closeMenus(except) {
  document.querySelectorAll('details.menu[open]').forEach(function (menu) {
    if (!except || !menu.contains(except)) menu.removeAttribute('open');
  });
}

document.addEventListener('click', function (event) {
  closeMenus(event.target);
});

document.addEventListener('keydown', function (event) {
  if (event.key !== 'Escape') return;
  var open = document.activeElement && document.activeElement.closest('details.menu[open]');
  closeMenus();
  if (open) open.querySelector('summary').focus();
});

// After a swap, put focus where the person needs it: on the new panel's heading, or on the
// first field a refused form marks invalid (its error is read out with it).
document.addEventListener('htmx:afterSettle', function (event) {
  var focus = null;
  if (event.detail.xhr && event.detail.xhr.status === 422) {
    focus = document.querySelector('[aria-invalid="true"]');
  } else if (event.detail.target.id === 'panel') {
    focus = document.getElementById('panel-heading');
  }
  if (focus) focus.focus();
});

// Copy: a button with data-copy="ID" copies the value (or text) of element ID, then says
// "Copied" in its own live region. Reveal: a button with data-reveal="ID" toggles input ID
// between masked and shown, and reports its state with aria-pressed.
document.addEventListener('click', function (event) {
  var copy = event.target.closest('[data-copy]');
  if (copy) {
    var source = document.getElementById(copy.dataset.copy);
    var text = source.value !== undefined ? source.value : source.textContent;
    navigator.clipboard.writeText(text.trim()).then(function () {
      var status = document.getElementById(copy.dataset.copy + '-copied');
      if (status) status.textContent = 'Copied';
    });
    return;
  }
  var reveal = event.target.closest('[data-reveal]');
  if (reveal) {
    var field = document.getElementById(reveal.dataset.reveal);
    var shown = field.type === 'password';
    field.type = shown ? 'text' : 'password';
    reveal.setAttribute('aria-pressed', shown ? 'true' : 'false');
  }
});

// Buttons that only work with JavaScript (copy, reveal) are hidden until it runs.
document.documentElement.classList.add('js');

// Times: a <time datetime="…Z"> shows the moment in the browser's own time zone; its title
// keeps the UTC value.
function localizeTimes(root) {
  root.querySelectorAll('time[datetime]').forEach(function (time) {
    var when = new Date(time.getAttribute('datetime'));
    if (isNaN(when.getTime())) return;
    time.textContent = when.toLocaleString(undefined, {dateStyle: 'medium', timeStyle: 'short'});
  });
}
document.addEventListener('DOMContentLoaded', function () { localizeTimes(document); });
document.addEventListener('htmx:load', function (event) { localizeTimes(event.detail.elt); });
