// Keyboard labelling: 1 / 2 / 3 / 4 give a verdict (Shift+key chooses it without saving), t marks "one concept
// in the top contexts", c steps the confidence, d focuses the description (Ctrl+Enter there saves with the
// chosen verdict), n skips, u undoes. Each key clicks or sets the matching control of the current form, so
// htmx sends the same request a click would.
(function () {
  "use strict";

  var KEYS = {
    "1": "[data-key='1']",
    "2": "[data-key='2']",
    "3": "[data-key='3']",
    "4": "[data-key='4']",
    "n": "[data-key='n']",
    "u": "[data-key='u']",
  };
  // Shift+digit gives "!", "@", ... on most layouts: read the physical key instead.
  var DIGIT_CODES = { Digit1: "1", Digit2: "2", Digit3: "3", Digit4: "4" };

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

  // After a swap htmx waits its settle delay before it binds the new card's form: a submit in that window would
  // go out as a plain POST and reload the page. An action asked for then waits for the settle and runs after it.
  var pending = null;

  function settling(labelling) {
    return labelling.classList.contains("htmx-added") || labelling.classList.contains("htmx-settling");
  }

  function whenSettled(labelling, action) {
    if (settling(labelling)) {
      pending = action;
    } else {
      action();
    }
  }

  document.addEventListener("htmx:afterSettle", function () {
    var labelling = document.getElementById("labelling");
    if (pending && labelling && !settling(labelling)) {
      var action = pending;
      pending = null;
      action();
    }
  });

  // A mouse click on a verdict in the same window is held back the same way.
  document.addEventListener("submit", function (event) {
    var labelling = document.getElementById("labelling");
    if (labelling && labelling.contains(event.target) && settling(labelling)) {
      event.preventDefault();
      var form = event.target;
      var submitter = event.submitter;
      pending = function () {
        form.requestSubmit(submitter);
      };
    }
  }, true);

  function hint(labelling, text) {
    var box = labelling.querySelector("#card-hint");
    if (box) {
      box.textContent = text;
    }
  }

  // A verdict chosen with Shift+key waits in a hidden field until Ctrl+Enter saves the description with it.
  function choose(labelling, button) {
    var chosen = labelling.querySelector("#chosen-verdict");
    if (!chosen) {
      return;
    }
    labelling.querySelectorAll(".verdicts button").forEach(function (other) {
      other.classList.remove("chosen");
    });
    button.classList.add("chosen");
    chosen.value = button.value;
    chosen.disabled = false;
    hint(labelling, "Chosen: " + button.textContent.trim().replace(/\s+\S+$/, "") + ". Ctrl+Enter in the description saves.");
  }

  // A verdict button sends its own value: a waiting choice must not ride along as a second verdict.
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest(".verdicts button") : null;
    var labelling = document.getElementById("labelling");
    if (button && labelling) {
      var chosen = labelling.querySelector("#chosen-verdict");
      if (chosen) {
        chosen.disabled = true;
      }
    }
  }, true);

  function submitDescription(labelling, textarea) {
    var chosen = labelling.querySelector("#chosen-verdict");
    if (chosen && !chosen.disabled && chosen.value) {
      // htmx gives focus back to the element of the same id after the swap: the next card must not start in its box.
      var form = textarea.form;
      textarea.blur();
      whenSettled(labelling, function () {
        form.requestSubmit();
      });
      return;
    }
    textarea.blur();
    hint(labelling, "Now press 1-4 for the verdict: the description is saved with it.");
  }

  function stepConfidence(select) {
    select.selectedIndex = (select.selectedIndex + 1) % select.options.length;
  }

  document.addEventListener("keydown", function (event) {
    var labelling = document.getElementById("labelling");
    if (!labelling) {
      return;
    }
    if (isTyping(event.target)) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && event.target.name === "description") {
        event.preventDefault();
        if (!busy(labelling)) {
          submitDescription(labelling, event.target);
        }
      } else if (event.key === "Escape") {
        event.target.blur();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) {
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
    if (event.key === "t" || event.key === "c") {
      var control = labelling.querySelector("[data-key='" + event.key + "']");
      if (control && !control.disabled) {
        event.preventDefault();
        if (event.key === "t") {
          control.checked = !control.checked;
        } else {
          stepConfidence(control);
        }
      }
      return;
    }
    var digit = event.shiftKey ? DIGIT_CODES[event.code] : null;
    var selector = digit ? KEYS[digit] : KEYS[event.key];
    if (!selector || busy(labelling)) {
      return;
    }
    var button = labelling.querySelector(selector);
    if (button && !button.disabled) {
      event.preventDefault();
      if (digit) {
        choose(labelling, button);
      } else {
        whenSettled(labelling, function () {
          button.click();
        });
      }
    }
  });
})();
