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
