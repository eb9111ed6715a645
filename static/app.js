// Shared by every page: htmx requests echo the page's CSRF token (from <meta name="csrf-token">), and a
// failed htmx request shows the server's message instead of failing silently.
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function errorMessage(xhr) {
    var text = xhr.responseText || "";
    try {
      var body = JSON.parse(text);
      if (body && body.detail) {
        return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      }
    } catch (ignored) {
      // Not JSON: fall back to the status line.
    }
    return "request failed (" + xhr.status + " " + xhr.statusText + ")";
  }

  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRF-Token"] = csrfToken();
  });

  // A 4xx page fragment (HTML, e.g. the inspector's "no such feature") is meant to be shown in place;
  // JSON errors (a failed CSRF check, a bad field) go to the banner instead.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    var type = xhr.getResponseHeader("Content-Type") || "";
    if (xhr.status >= 400 && xhr.status < 500 && type.indexOf("text/html") === 0) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  document.addEventListener("htmx:responseError", function (event) {
    var banner = document.getElementById("error-banner");
    if (banner) {
      banner.textContent = errorMessage(event.detail.xhr);
      banner.hidden = false;
    }
  });

  document.addEventListener("htmx:afterSwap", function () {
    var banner = document.getElementById("error-banner");
    if (banner) {
      banner.hidden = true;
    }
  });
})();

// The feature browser: the arrow keys turn its pages (not while typing in a field).
(function () {
  "use strict";
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (event.altKey || event.ctrlKey || event.metaKey || !document.getElementById("feature-table")) {
      return;
    }
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable)) {
      return;
    }
    var which = event.key === "ArrowRight" ? "next" : event.key === "ArrowLeft" ? "previous" : null;
    var link = which && document.querySelector('#feature-table a[data-page="' + which + '"]');
    if (link) {
      event.preventDefault();
      link.click();
    }
  });
})();
