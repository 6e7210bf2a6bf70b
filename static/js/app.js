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

// Type to confirm: an input with data-confirm-value keeps the button named by
// data-confirm-button disabled until its text matches. Without JavaScript the button stays
// enabled and the server checks the text.
function syncConfirm(input) {
  var button = document.getElementById(input.dataset.confirmButton);
  if (button) button.disabled = input.value.trim() !== input.dataset.confirmValue;
}
document.addEventListener('input', function (event) {
  if (event.target.matches('[data-confirm-value]')) syncConfirm(event.target);
});
function syncConfirms(root) {
  root.querySelectorAll('[data-confirm-value]').forEach(syncConfirm);
}
document.addEventListener('DOMContentLoaded', function () { syncConfirms(document); });
document.addEventListener('htmx:load', function (event) { syncConfirms(event.detail.elt); });

// Copy a secret the page does not hold: a button with data-copy-url POSTs there (with the
// CSRF token htmx sends too) and copies the text it answers, then says so in the live region
// named by data-copy-status. The text goes to the clipboard without ever entering the page.
document.addEventListener('click', function (event) {
  var button = event.target.closest('[data-copy-url]');
  if (!button) return;
  var status = document.getElementById(button.dataset.copyStatus);
  var headers = JSON.parse(document.body.getAttribute('hx-headers') || '{}');
  // A redirect means the login ended: copy nothing rather than the login page.
  var text = fetch(button.dataset.copyUrl, {method: 'POST', headers: headers,
                                            credentials: 'same-origin', redirect: 'error'})
    .then(function (response) {
      if (!response.ok) throw new Error(response.status);
      return response.text();
    });
  // A ClipboardItem takes the text still on its way, so the copy keeps the click's user
  // activation (Safari needs that); writeText after the fetch is the fallback.
  var copied = window.ClipboardItem
    ? navigator.clipboard.write([new ClipboardItem({'text/plain': text.then(function (value) {
        return new Blob([value], {type: 'text/plain'});
      })})])
    : text.then(function (value) { return navigator.clipboard.writeText(value); });
  if (status) status.textContent = '';
  copied.then(function () {
    if (status) status.textContent = 'Copied';
  }, function () {
    if (status) status.textContent = 'Could not copy. Reveal the password and copy it by hand.';
  });
});
