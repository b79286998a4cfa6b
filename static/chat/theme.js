// Light or dark theme: the system's choice unless the user picked one with the toggle.
// A classic script in <head>, so the page is painted in the right theme from the start.
(function () {
  "use strict";
  var KEY = "chatsite-theme";
  var system = window.matchMedia("(prefers-color-scheme: dark)");
  var picked = null; // this page's choice, for when storage is blocked

  function chosen() {
    if (picked) return picked;
    try {
      var value = localStorage.getItem(KEY);
      return value === "light" || value === "dark" ? value : null;
    } catch (e) {
      return null; // storage blocked: follow the system
    }
  }

  function current() {
    return chosen() || (system.matches ? "dark" : "light");
  }

  function apply() {
    var theme = current();
    document.documentElement.dataset.theme = theme;
    // The code-highlighting stylesheets come in a light and a dark file; only one applies.
    var links = document.querySelectorAll("link[data-code-theme]");
    for (var i = 0; i < links.length; i++) {
      links[i].media = links[i].dataset.codeTheme === theme ? "all" : "not all";
    }
    var toggles = document.querySelectorAll("[data-theme-toggle]");
    for (var j = 0; j < toggles.length; j++) {
      var label = theme === "dark" ? "Switch to light theme" : "Switch to dark theme";
      toggles[j].setAttribute("aria-label", label);
      toggles[j].title = label;
    }
  }

  function toggle() {
    picked = current() === "dark" ? "light" : "dark";
    try {
      localStorage.setItem(KEY, picked);
    } catch (e) {
      /* not remembered across pages; this page still switches */
    }
    apply();
  }

  apply();
  system.addEventListener("change", apply);
  window.addEventListener("storage", function (event) {
    if (event.key === KEY) {
      picked = null;
      apply();
    }
  });
  document.addEventListener("DOMContentLoaded", function () {
    apply();
    document.addEventListener("click", function (event) {
      if (event.target.closest && event.target.closest("[data-theme-toggle]")) toggle();
    });
  });
})();
