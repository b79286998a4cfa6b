// The agent admin form has one fieldset of options per backend: show the chosen backend's only.
// An external script, not an inline one, so a strict Content-Security-Policy allows it.
// Without it every fieldset shows, and the server still saves only the chosen backend's options.
(function () {
  "use strict";

  function showChosen(select) {
    var fieldsets = document.querySelectorAll("fieldset.backend-options");
    for (var i = 0; i < fieldsets.length; i++) {
      fieldsets[i].hidden = !fieldsets[i].classList.contains("backend-" + select.value);
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var select = document.getElementById("id_backend");
    if (!select) return;
    showChosen(select);
    select.addEventListener("change", function () {
      showChosen(select);
    });
  });
})();
