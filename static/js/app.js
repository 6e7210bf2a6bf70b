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

// After the settings panel is swapped in, move focus to its heading so screen readers and
// keyboard users start from the new content.
document.addEventListener('htmx:afterSwap', function (event) {
  if (event.detail.target.id !== 'panel') return;
  var heading = document.getElementById('panel-heading');
  if (heading) heading.focus();
});
