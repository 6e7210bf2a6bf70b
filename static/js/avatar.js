// The avatar card: a size check before an upload, its progress bar, the crop step's movable
// square, and where focus goes when the card is swapped.
'use strict';

(function () {
  var MEGABYTE = 1024 * 1024;
  var CROP_STAGE = '.crop-stage[data-crop]';
  var cardRequest = false;  // whether the request in flight will swap #profile-card

  function clamp(value, low, high) {
    return Math.min(Math.max(value, low), high);
  }

  // "12.3": megabytes with at most one decimal; rounded up, so a file just over the limit
  // never reads as equal to it.
  function megabytes(bytes) {
    return String(Math.ceil(bytes / MEGABYTE * 10) / 10);
  }

  // Say what is wrong beside the file input, as the server's refusals do. A fresh element
  // each time, so the alert is read out again when the same mistake is repeated.
  function refuse(form, message) {
    var input = form.querySelector('#avatar-file');
    var old = form.querySelector('#avatar-error');
    if (old) old.remove();
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
    cardRequest = Boolean(elt.closest('#profile-card'));
    if (elt.id !== 'avatar-form') return;
    var input = elt.querySelector('#avatar-file');
    var file = input.files[0];
    var limit = Number(input.dataset.maxBytes);
    if (file && limit && file.size > limit) {
      // Sending it would only earn a 413 after the whole upload; say so now instead.
      event.preventDefault();
      cardRequest = false;
      input.value = '';  // so that choosing the same file again is a change too
      refuse(elt, 'The file is ' + megabytes(file.size) + ' MB; the limit is ' +
             megabytes(limit) + ' MB. Choose a smaller image.');
      return;
    }
    var progress = elt.querySelector('.upload-progress');
    progress.value = 0;
    progress.hidden = false;
  });

  // htmx reports the upload's progress and then the response's; the bar only moves forward.
  document.addEventListener('htmx:xhr:progress', function (event) {
    var detail = event.detail;
    if (event.target.id !== 'avatar-form' || !detail.lengthComputable || !detail.total) return;
    var progress = event.target.querySelector('.upload-progress');
    progress.value = Math.max(progress.value, Math.round(detail.loaded / detail.total * 100));
  });

  document.addEventListener('htmx:afterRequest', function (event) {
    var progress = event.detail.elt.id === 'avatar-form' &&
      event.detail.elt.querySelector('.upload-progress');
    if (progress) progress.hidden = true;
  });

  // Answers that htmx does not swap (a lost connection, an expired form) would otherwise
  // leave the person waiting for a crop step that never comes.
  function uploadFailed(event) {
    if (event.detail.elt.id !== 'avatar-form' || !event.detail.elt.isConnected) return;
    cardRequest = false;
    refuse(event.detail.elt, 'The upload did not go through. Reload the page and try again.');
  }
  document.addEventListener('htmx:sendError', uploadFailed);
  document.addEventListener('htmx:responseError', uploadFailed);

  // After the card is swapped, focus goes to the crop step's heading, or back to the control
  // that starts again (Save, Cancel and Reset say what they did in the flash's live region).
  document.addEventListener('htmx:afterSettle', function () {
    if (!cardRequest) return;
    cardRequest = false;
    var focus = document.querySelector('#profile-card.crop-step') ?
      document.getElementById('crop-heading') : document.getElementById('avatar-file');
    if (focus) focus.focus();
  });

  // The crop step: a square over the image, in the image's own pixels (data-width ×
  // data-height, the original's upright size), kept in step with the x, y, size fields that
  // the form sends.
  function setUpCrop(stage) {
    if (stage.dataset.cropReady) return;
    stage.dataset.cropReady = 'true';
    var width = Number(stage.dataset.width);
    var height = Number(stage.dataset.height);
    var largest = Math.min(width, height);
    var smallest = Math.max(1, Math.round(largest / 20));
    var step = Math.max(1, Math.round(largest / 100));
    var form = stage.closest('.crop-step').querySelector('.crop-form');
    var fields = {x: form.querySelector('#crop-x'), y: form.querySelector('#crop-y'),
                  size: form.querySelector('#crop-size')};
    var image = stage.querySelector('.crop-image');
    image.draggable = false;

    var square = document.createElement('div');
    square.className = 'crop-square';
    square.tabIndex = 0;
    square.setAttribute('role', 'slider');
    square.setAttribute('aria-label', 'Crop square');
    square.setAttribute('aria-describedby', 'crop-hint');
    square.setAttribute('aria-valuemin', smallest);
    square.setAttribute('aria-valuemax', largest);
    var handle = document.createElement('div');
    handle.className = 'crop-handle';
    square.appendChild(handle);
    stage.appendChild(square);

    var box;
    // Percentages, so the square stays put when the image is shown at another size.
    function place(x, y, size) {
      size = clamp(Math.round(size), smallest, largest);
      box = {x: clamp(Math.round(x), 0, width - size), y: clamp(Math.round(y), 0, height - size),
             size: size};
      square.style.left = box.x / width * 100 + '%';
      square.style.top = box.y / height * 100 + '%';
      square.style.width = box.size / width * 100 + '%';
      square.style.height = box.size / height * 100 + '%';
      square.setAttribute('aria-valuenow', box.size);
      square.setAttribute('aria-valuetext', box.size + ' by ' + box.size + ' pixels, ' + box.x +
                          ' from the left, ' + box.y + ' from the top');
    }
    function write() {
      fields.x.value = box.x;
      fields.y.value = box.y;
      fields.size.value = box.size;
    }
    function read() {
      var x = parseInt(fields.x.value, 10);
      var y = parseInt(fields.y.value, 10);
      var size = parseInt(fields.size.value, 10);
      if (isNaN(x) || isNaN(y) || isNaN(size)) return false;
      place(x, y, size);
      return true;
    }
    function zoom(change) {
      var size = clamp(box.size + change, smallest, largest);
      place(box.x + (box.size - size) / 2, box.y + (box.size - size) / 2, size);
    }

    if (!read()) place((width - largest) / 2, (height - largest) / 2, largest);
    write();

    // Typing moves the square at once; the field is corrected only when it is left, so a
    // number is not rewritten while it is half typed.
    form.addEventListener('input', function (event) {
      if (event.target.type === 'number') read();
    });
    form.addEventListener('change', function (event) {
      if (event.target.type === 'number' && read()) write();
    });

    square.addEventListener('keydown', function (event) {
      var distance = event.shiftKey ? step * 10 : step;
      switch (event.key) {
        case 'ArrowLeft': place(box.x - distance, box.y, box.size); break;
        case 'ArrowRight': place(box.x + distance, box.y, box.size); break;
        case 'ArrowUp': place(box.x, box.y - distance, box.size); break;
        case 'ArrowDown': place(box.x, box.y + distance, box.size); break;
        case '+': case '=': zoom(smallest); break;
        case '-': case '_': zoom(-smallest); break;
        default: return;
      }
      event.preventDefault();
      write();
    });

    // Drag the square to move it, or its corner to resize it (the top-left corner stays).
    // Pointer capture keeps the drag going when the pointer leaves the square.
    square.addEventListener('pointerdown', function (event) {
      if (event.button !== 0) return;
      event.preventDefault();
      square.focus({preventScroll: true});
      var scale = width / image.getBoundingClientRect().width;  // image pixels per CSS pixel
      var start = {x: event.clientX, y: event.clientY, box: box};
      var resizing = event.target === handle;
      square.setPointerCapture(event.pointerId);

      function drag(move) {
        var dx = (move.clientX - start.x) * scale;
        var dy = (move.clientY - start.y) * scale;
        var from = start.box;
        if (resizing) {
          var room = Math.min(width - from.x, height - from.y);
          place(from.x, from.y, Math.min(from.size + Math.max(dx, dy), room));
        } else {
          place(from.x + dx, from.y + dy, from.size);
        }
        write();
      }
      function stop() {
        square.removeEventListener('pointermove', drag);
        square.removeEventListener('lostpointercapture', stop);
      }
      square.addEventListener('pointermove', drag);
      square.addEventListener('lostpointercapture', stop);
    });
  }

  function setUpCrops(root) {
    if (root.matches && root.matches(CROP_STAGE)) setUpCrop(root);
    root.querySelectorAll(CROP_STAGE).forEach(setUpCrop);
  }
  document.addEventListener('DOMContentLoaded', function () { setUpCrops(document); });
  document.addEventListener('htmx:load', function (event) { setUpCrops(event.detail.elt); });
}());
