// Small enhancements on top of htmx: menus close like menus, an error answer says what went
// wrong, the avatar card checks a file before sending it, and a step that needs more script
// loads it. (Where focus goes after a swap, the server says with autofocus; only Load more,
// which adds to a list, moves it here.)
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

// htmx swaps nothing for an error answer (base.html's htmx-config), so say what went wrong in
// the page's live flash region, in place of what it held: the error page's own message, or
// a plain one when the answer has none or never came. The avatar form, while on the page,
// says it beside its file input instead.
function flashError(event, message) {
  var elt = event.detail.elt;
  if (elt.id === 'avatar-form' && elt.isConnected) return;
  var region = document.getElementById('flash');  // every page with an htmx form has one
  if (!region) return;
  var line = document.createElement('p');
  line.textContent = message;
  line.className = 'flash-error';
  region.replaceChildren(line);
}
// What an error answer says in its alert, or '' (parsed, never inserted: only the text
// reaches the page).
function alertIn(xhr) {
  var answer = new DOMParser().parseFromString(xhr.responseText, 'text/html');
  var said = answer.querySelector('[role="alert"]');
  return said ? said.textContent.replace(/\s+/g, ' ').trim() : '';
}
document.addEventListener('htmx:responseError', function (event) {
  var xhr = event.detail.xhr;
  flashError(event, alertIn(xhr) ||
    'Something went wrong (status ' + xhr.status + '). Reload the page and try again.');
});
// A rotation refused by its limit (429) puts the Database Password section back, with the
// reason next to Rotate Password, as the page without JavaScript shows it.
document.addEventListener('htmx:beforeSwap', function (event) {
  if (event.detail.xhr.status === 429 && event.detail.target &&
      event.detail.target.id === 'database-password') {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});
document.addEventListener('htmx:sendError', function (event) {
  flashError(event, 'Penstock could not be reached. Check your connection and try again.');
});

// The flash region is a toast with JavaScript (app.css): a status goes after 10 s; an error
// stays until the next status replaces it. The region itself stays, empty, so the next status
// is read out too.
var flashTimer;
function toastFlash() {
  var region = document.getElementById('flash');
  clearTimeout(flashTimer);
  if (!region || !region.childElementCount || region.querySelector('.flash-error')) return;
  var shown = region.firstElementChild;
  flashTimer = setTimeout(function () {
    if (region.firstElementChild === shown) region.replaceChildren();
  }, 10000);
}
document.addEventListener('DOMContentLoaded', toastFlash);
document.addEventListener('htmx:afterSettle', toastFlash);
document.addEventListener('htmx:oobAfterSwap', toastFlash);

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

// Times: a <time datetime="…Z"> shows the moment in the browser's own time zone, named as the
// server names UTC ("Dec 2, 2026, 9:05 AM EST"); its title keeps the UTC value. (dateStyle
// cannot be combined with timeZoneName, hence the fields.)
var DATE_FORMAT = {year: 'numeric', month: 'short', day: 'numeric'};
var CLOCK_FORMAT = {hour: 'numeric', minute: '2-digit', timeZoneName: 'short'};
var TIME_FORMAT = Object.assign({}, DATE_FORMAT, CLOCK_FORMAT);
function localizeTimes(root) {
  root.querySelectorAll('time[datetime]').forEach(function (time) {
    var when = new Date(time.getAttribute('datetime'));
    if (isNaN(when.getTime())) return;
    if (time.classList.contains('split')) {  // its date over its clock (_time.html)
      time.firstElementChild.textContent = when.toLocaleDateString(undefined, DATE_FORMAT);
      time.lastElementChild.textContent = when.toLocaleTimeString(undefined, CLOCK_FORMAT);
      return;
    }
    time.textContent = when.toLocaleString(undefined, TIME_FORMAT);
  });
}
document.addEventListener('DOMContentLoaded', function () { localizeTimes(document); });
document.addEventListener('htmx:load', function (event) { localizeTimes(event.detail.elt); });

// Load more (audit/_more.html) adds entries to the end of the list and comes back in its own
// place, or not at all after the last page, which left focus on <body>. Focus goes to the first
// entry added instead, so a keyboard or screen reader user reads on where the list grew.
document.addEventListener('htmx:afterSwap', function (event) {
  if (event.target.id !== 'audit-rows') return;
  var first = event.target.querySelector(':scope > .htmx-added');  // htmx's mark on new content
  if (!first) return;
  first.tabIndex = -1;
  first.focus();
});

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

// A script that only one step needs (the crop step's square) is named by data-script="URL"
// on an element of that step, and loaded, once, when the step first appears: on page load or
// swapped in. Pages without it never fetch it.
var requestedScripts = {};
function loadScripts(root) {
  var named = Array.prototype.slice.call(root.querySelectorAll('[data-script]'));
  if (root.matches && root.matches('[data-script]')) named.push(root);
  named.forEach(function (element) {
    var src = element.dataset.script;
    if (requestedScripts[src]) return;
    requestedScripts[src] = true;
    var script = document.createElement('script');
    script.src = src;
    document.head.appendChild(script);
  });
}
document.addEventListener('DOMContentLoaded', function () { loadScripts(document); });
document.addEventListener('htmx:load', function (event) { loadScripts(event.detail.elt); });

// The avatar card: a size check before an upload, its progress bar, and what to say when the
// upload fails.
(function () {
  var MEGABYTE = 1024 * 1024;

  // "12.3": megabytes with at most one decimal; rounded up, so a file just over the limit
  // never reads as equal to it.
  function megabytes(bytes) {
    return String(Math.ceil(bytes / MEGABYTE * 10) / 10);
  }

  // Take back what the last refusal said (the server's or refuse()'s): a new file is a new try.
  function forget(form) {
    var input = form.querySelector('#avatar-file');
    var old = form.querySelector('#avatar-error');
    if (old) old.remove();
    input.removeAttribute('aria-invalid');
    input.setAttribute('aria-describedby', 'avatar-limits');
    return input;
  }
  // Say what is wrong beside the file input, as the server's refusals do. A fresh element
  // each time, so the alert is read out again when the same mistake is repeated.
  function refuse(form, message) {
    var input = forget(form);
    var error = document.createElement('p');
    error.id = 'avatar-error';
    error.className = 'field-error';
    error.setAttribute('role', 'alert');
    error.textContent = message;
    form.querySelector('#avatar-limits').after(error);
    input.setAttribute('aria-invalid', 'true');
    input.setAttribute('aria-describedby', 'avatar-limits avatar-error');
  }

  document.addEventListener('htmx:beforeRequest', function (event) {
    var elt = event.detail.elt;
    if (elt.id !== 'avatar-form') return;
    var input = elt.querySelector('#avatar-file');
    var file = input.files[0];
    var limit = Number(input.dataset.maxBytes);
    forget(elt);
    if (file && limit && file.size > limit) {
      // Sending it would only earn a 413 after the whole upload; say so now instead.
      event.preventDefault();
      input.value = '';  // so that choosing the same file again is a change too
      refuse(elt, 'The file is ' + megabytes(file.size) + ' MB; the limit is ' +
             megabytes(limit) + ' MB. Choose a smaller image.');
      return;
    }
    show(elt, 0);
    elt.querySelector('.upload-status').hidden = false;
    // The crop step's stylesheet, fetched while the image goes up, so that the step is
    // styled as soon as it is swapped in (it links the same file: one fetch).
    if (!document.querySelector('link[href="' + elt.dataset.style + '"]')) {
      var sheet = document.createElement('link');
      sheet.rel = 'stylesheet';
      sheet.href = elt.dataset.style;
      document.head.appendChild(sheet);
    }
  });

  // The bar and its words at `percent`: 0 to start, else never back from where they are.
  function show(form, percent) {
    var progress = form.querySelector('.upload-progress');
    if (percent) percent = Math.max(progress.value, percent);
    progress.value = percent;
    form.querySelector('.upload-percent').textContent = 'Uploading… ' + percent + '%';
  }

  // htmx reports the upload's progress and then the response's; the bar only moves forward.
  document.addEventListener('htmx:xhr:progress', function (event) {
    var detail = event.detail;
    if (event.target.id !== 'avatar-form' || !detail.lengthComputable || !detail.total) return;
    show(event.target, Math.round(detail.loaded / detail.total * 100));
  });

  document.addEventListener('htmx:afterRequest', function (event) {
    var status = event.detail.elt.id === 'avatar-form' &&
      event.detail.elt.querySelector('.upload-status');
    if (status) status.hidden = true;
  });

  // Answers that htmx does not swap (a lost connection, an expired form, too many uploads,
  // a busy server) would otherwise leave the person waiting for a crop step that never comes.
  // The file can be chosen again at once: clearing it makes that a change too.
  function uploadFailed(event) {
    var form = event.detail.elt;
    if (form.id !== 'avatar-form' || !form.isConnected) return;
    form.querySelector('#avatar-file').value = '';
    refuse(form, (event.type === 'htmx:responseError' && alertIn(event.detail.xhr)) ||
           'The upload did not go through. Reload the page and try again.');
  }
  document.addEventListener('htmx:sendError', uploadFailed);
  document.addEventListener('htmx:responseError', uploadFailed);
}());
