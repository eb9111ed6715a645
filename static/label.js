// Keyboard labelling: 1 / 2 / 3 give a verdict, d focuses the description, n skips, u undoes.
// Each key clicks the matching button of the current form, so htmx sends the same request a click would.
(function () {
  "use strict";

  var KEYS = {
    "1": "[data-key='1']",
    "2": "[data-key='2']",
    "3": "[data-key='3']",
    "n": "[data-key='n']",
    "u": "[data-key='u']",
  };

  function isTyping(target) {
    if (!target || !target.tagName) {
      return false;
    }
    var tag = target.tagName.toLowerCase();
    return tag === "textarea" || tag === "input" || tag === "select" || target.isContentEditable;
  }

  // htmx marks the element whose request is in flight; a key pressed meanwhile would act on a stale form.
  function busy(labelling) {
    return labelling.querySelector(".htmx-request") !== null;
  }

  document.addEventListener("keydown", function (event) {
    var labelling = document.getElementById("labelling");
    if (!labelling || event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    if (isTyping(event.target)) {
      if (event.key === "Escape") {
        event.target.blur();
      }
      return;
    }
    if (event.key === "d") {
      var description = labelling.querySelector("textarea[name='description']");
      if (description) {
        event.preventDefault();
        description.focus();
      }
      return;
    }
    var selector = KEYS[event.key];
    if (!selector || busy(labelling)) {
      return;
    }
    var button = labelling.querySelector(selector);
    if (button && !button.disabled) {
      event.preventDefault();
      button.click();
    }
  });
})();
