// The avatar crop step: a movable, resizable square over the image, kept in step with the
// numbers the form sends. app.js loads this file when a crop step appears (data-script).
'use strict';

(function () {
  var CROP_STAGE = '.crop-stage[data-crop]';

  function clamp(value, low, high) {
    return Math.min(Math.max(value, low), high);
  }

  // The square is in the image's own pixels (data-width × data-height, the original's
  // upright size), as are the x, y, size fields.
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
    // The round preview beside the stage: the square's part of the working copy, redrawn as
    // the square moves (and once the image has loaded).
    var result = stage.closest('.crop-step').querySelector('canvas.crop-result-image');
    var paint = result.getContext('2d');
    function draw() {
      if (!image.complete || !image.naturalWidth) return;
      var across = image.naturalWidth / width;
      var down = image.naturalHeight / height;
      paint.drawImage(image, box.x * across, box.y * down, box.size * across, box.size * down,
                      0, 0, result.width, result.height);
    }
    image.addEventListener('load', function () { draw(); });

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
      draw();
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
  // Loaded only once a crop stage is in the page, which has been parsed by then: set up what
  // is there now, and what htmx swaps in later.
  setUpCrops(document);
  document.addEventListener('htmx:load', function (event) { setUpCrops(event.detail.elt); });
}());
