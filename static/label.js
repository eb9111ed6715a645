// Keyboard labelling: 1 / 2 / 3 / 4 save a verdict at once (Shift+key only chooses it, to save with a
// description), t marks "one concept in the top contexts", c steps the confidence, d focuses the description
// (Ctrl+Enter there saves with the chosen verdict), n skips, u undoes the action its button names. Each key
// clicks or sets the matching control of the current form, so htmx sends the same request a click would.
//
// Labels are data: a card takes keys and clicks only once it has been visible for READY_MS (its ready state
// shows it); anything pressed while a card is changing, or before the new one is ready, is dropped, never
// queued for the next card. The time the card was visible goes with its verdict (seconds_on_screen).
(function () {
  "use strict";

  var READY_MS = 250; // the server refuses a verdict measured shorter (CARD_READY_SECONDS in app/web/pages.py)
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

  // The card on screen: its element, the visible time it has had, and since when it is visible (null if hidden).
  var card = { el: null, visibleMs: 0, since: null, timer: null };

  function now() {
    return window.performance.now();
  }

  function visibleMs() {
    return card.visibleMs + (card.since === null ? 0 : now() - card.since);
  }

  function readyState(text) {
    var state = card.el && card.el.querySelector("#card-ready");
    if (state) {
      state.textContent = text;
    }
  }

  function markReady() {
    card.el.dataset.ready = "1";
    card.el.classList.add("ready");
    readyState("ready: 1-4 save");
  }

  function schedule() {
    window.clearTimeout(card.timer);
    if (!card.el || card.since === null || isReady(card.el)) {
      return;
    }
    var left = READY_MS - visibleMs();
    if (left <= 0) {
      markReady();
    } else {
      card.timer = window.setTimeout(schedule, left);
    }
  }

  // A new card (first load or an htmx swap) starts not ready; it becomes ready after READY_MS visible.
  function arm() {
    var labelling = document.getElementById("labelling");
    if (!labelling || labelling === card.el) {
      return;
    }
    window.clearTimeout(card.timer);
    card = { el: labelling, visibleMs: 0, since: document.visibilityState === "visible" ? now() : null, timer: null };
    if (labelling.dataset.feature !== undefined) {
      readyState(card.since === null ? "not visible" : "getting ready…");
      schedule();
    }
  }

  document.addEventListener("visibilitychange", function () {
    if (!card.el) {
      return;
    }
    if (document.visibilityState === "visible") {
      card.since = now();
      schedule();
    } else if (card.since !== null) {
      card.visibleMs += now() - card.since;
      card.since = null;
      window.clearTimeout(card.timer);
    }
  });

  document.addEventListener("htmx:afterSettle", arm);
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", arm);
  } else {
    arm();
  }

  function isReady(labelling) {
    return labelling === card.el && labelling.dataset.ready === "1" && !labelling.classList.contains("htmx-settling");
  }

  // htmx marks the element whose request is in flight; a key pressed meanwhile would act on a card being replaced.
  function busy(labelling) {
    return labelling.querySelector(".htmx-request") !== null || labelling.classList.contains("htmx-request");
  }

  // A page with no card (the name form, or nothing left to label) has nothing to judge and takes clicks at once.
  function accepts(labelling) {
    if (labelling.dataset.feature === undefined) {
      return true;
    }
    return isReady(labelling) && !busy(labelling);
  }

  function hint(labelling, text) {
    var box = labelling.querySelector("#card-hint");
    if (box) {
      box.textContent = text;
    }
  }

  function dropped(labelling) {
    hint(labelling, "That key was ignored: the card was not ready yet. Press it again now.");
  }

  // Stops an event on a card that is not ready, so it never reaches htmx or the server; true if it stopped it.
  function refusedUntilReady(event, labelling) {
    if (accepts(labelling)) {
      return false;
    }
    event.preventDefault();
    event.stopImmediatePropagation();
    dropped(labelling);
    return true;
  }

  // Every submit of the card (a key, a click, Ctrl+Enter) passes here first: one on a card that is not ready is
  // dropped; one that goes ahead carries how long the card was visible.
  document.addEventListener("submit", function (event) {
    var labelling = document.getElementById("labelling");
    if (!labelling || !labelling.contains(event.target)) {
      return;
    }
    if (refusedUntilReady(event, labelling)) {
      return;
    }
    var seconds = labelling.querySelector("#seconds-on-screen");
    if (seconds) {
      seconds.value = (visibleMs() / 1000).toFixed(3);
    }
  }, true);

  // htmx sends a button's own request on click (Skip and Undo): those too wait for the ready state.
  document.addEventListener("click", function (event) {
    var labelling = document.getElementById("labelling");
    var button = event.target.closest ? event.target.closest("button") : null;
    if (!labelling || !button || !labelling.contains(button) || !button.closest("form")) {
      return;
    }
    if (refusedUntilReady(event, labelling)) {
      return;
    }
    // A verdict button sends its own value: a waiting choice must not ride along as a second verdict.
    if (button.closest(".verdicts")) {
      var chosen = labelling.querySelector("#chosen-verdict");
      if (chosen) {
        chosen.disabled = true;
      }
    }
  }, true);

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

  function submitDescription(labelling, textarea) {
    var chosen = labelling.querySelector("#chosen-verdict");
    // htmx gives focus back to the element of the same id after the swap: the next card must not start in its box.
    textarea.blur();
    if (chosen && !chosen.disabled && chosen.value) {
      textarea.form.requestSubmit();
      return;
    }
    hint(labelling, "Now press 1-4 for the verdict: the description is saved with it.");
  }

  function stepConfidence(select) {
    select.selectedIndex = (select.selectedIndex + 1) % select.options.length;
  }

  function isTyping(target) {
    if (!target || !target.tagName) {
      return false;
    }
    var tag = target.tagName.toLowerCase();
    return tag === "textarea" || tag === "input" || tag === "select" || target.isContentEditable;
  }

  document.addEventListener("keydown", function (event) {
    var labelling = document.getElementById("labelling");
    if (!labelling || labelling.dataset.feature === undefined) {
      return;
    }
    if (isTyping(event.target)) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && event.target.name === "description") {
        event.preventDefault();
        if (accepts(labelling)) {
          submitDescription(labelling, event.target);
        } else {
          dropped(labelling);
        }
      } else if (event.key === "Escape") {
        event.target.blur();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    var digit = event.shiftKey ? DIGIT_CODES[event.code] : null;
    var key = digit || event.key;
    var known = KEYS[key] || key === "t" || key === "c" || key === "d";
    if (!known) {
      return;
    }
    event.preventDefault();
    // Keys for a card that is changing, or not yet ready, are dropped: they would judge a card nobody saw.
    if (!accepts(labelling)) {
      dropped(labelling);
      return;
    }
    if (key === "d") {
      var description = labelling.querySelector("textarea[name='description']");
      if (description && !description.disabled) {
        description.focus();
      }
      return;
    }
    if (key === "t" || key === "c") {
      var control = labelling.querySelector("[data-key='" + key + "']");
      if (control && !control.disabled) {
        if (key === "t") {
          control.checked = !control.checked;
        } else {
          stepConfidence(control);
        }
      }
      return;
    }
    var button = labelling.querySelector(KEYS[key]);
    if (button && !button.disabled) {
      if (digit) {
        choose(labelling, button);
      } else {
        button.click();
      }
    }
  });
})();
