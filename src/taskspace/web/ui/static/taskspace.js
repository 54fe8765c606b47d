// Behaviour of the pages, without inline scripts (the Content-Security-Policy forbids them).
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var opener = event.target.closest("[data-open-dialog]");
    if (opener) {
      var dialog = document.getElementById(opener.getAttribute("data-open-dialog"));
      if (dialog && dialog.showModal) { dialog.showModal(); }
      return;
    }
    var closer = event.target.closest("[data-close]");
    if (closer) {
      var box = closer.closest("dialog");
      if (box) { box.open && box.close ? box.close() : null; if (box.hasAttribute("data-remove")) { box.remove(); } }
    }
  });
  document.addEventListener("change", function (event) {
    if (event.target.matches("[data-autosubmit]")) { event.target.form.requestSubmit(); }
  });
  // A launch dialog replaced by htmx keeps its place in the page.
  document.addEventListener("htmx:afterSwap", function (event) {
    var dialog = event.target.querySelector && event.target.querySelector("dialog[open]");
    if (dialog) { dialog.scrollTop = 0; }
  });
})();
