// TaskForge dashboard behaviour, on top of htmx: live refresh of the marked regions, the
// refresh control, toasts, confirmation dialogs, row selection and keyboard shortcuts.
// Pages work without it: links and forms are plain HTML; this only makes them live.
(function () {
  "use strict";

  var INTERVALS = [0, 2, 5, 10, 30];
  var STORE = "taskforge.refresh";
  var timer = null;

  function interval() {
    var stored = parseInt(window.localStorage.getItem(STORE) || "5", 10);
    return INTERVALS.indexOf(stored) >= 0 ? stored : 5;
  }

  // Polling stops while the tab is hidden, while rows are selected (the selection would be
  // lost under a refreshed table) and while a dialog or menu is open.
  function pauseReason() {
    if (document.visibilityState !== "visible") return "tab hidden";
    if (document.querySelector("input[data-row]:checked, input[data-all-matching]:checked")) {
      return "rows selected";
    }
    if (document.querySelector("dialog[open], details.user-menu[open]")) return "menu open";
    return null;
  }

  function showState() {
    var control = document.querySelector("[data-live-control]");
    if (!control) return;
    var seconds = interval();
    var reason = pauseReason();
    var label = control.querySelector("[data-live-label]");
    var state = seconds === 0 ? "off" : reason ? "paused" : "on";
    control.setAttribute("data-state", state);
    if (label) {
      label.textContent =
        state === "off" ? "Live off" : state === "paused" ? "Paused: " + reason : "Live";
    }
  }

  function poll() {
    showState();
    if (pauseReason()) return;
    document.querySelectorAll("[data-live]").forEach(function (region) {
      if (!region.closest("[data-live-busy]")) window.htmx.trigger(region, "tf:poll");
    });
  }

  function restart() {
    if (timer) window.clearInterval(timer);
    timer = null;
    var seconds = interval();
    if (seconds > 0) timer = window.setInterval(poll, seconds * 1000);
    showState();
  }

  function toast(message, kind) {
    var box = document.getElementById("toasts");
    if (!box || !message) return;
    var item = document.createElement("div");
    item.className = "toast" + (kind === "error" ? " error" : "");
    item.textContent = message;
    box.appendChild(item);
    window.setTimeout(function () { item.remove(); }, 6000);
  }

  function selectedCount(scope) {
    return scope.querySelectorAll("input[data-row]:checked").length;
  }

  function syncSelection(form) {
    var count = selectedCount(form);
    var all = form.querySelector("input[data-all-matching]");
    form.querySelectorAll("[data-selected-count]").forEach(function (el) {
      el.textContent = all && all.checked ? el.getAttribute("data-all-label") : String(count);
    });
    form.querySelectorAll("button[data-needs-selection]").forEach(function (button) {
      button.disabled = count === 0 && !(all && all.checked);
    });
    form.querySelectorAll("input[data-row]").forEach(function (box) {
      var row = box.closest("tr");
      if (row) row.classList.toggle("selected", box.checked);
    });
    showState();
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.matches("#live-interval")) {
      window.localStorage.setItem(STORE, target.value);
      restart();
      return;
    }
    if (target.matches("input[data-select-page]")) {
      var form = target.closest("form");
      form.querySelectorAll("input[data-row]").forEach(function (box) { box.checked = target.checked; });
    }
    if (target.matches("select[data-autosubmit]")) target.form.requestSubmit();
    var owner = target.closest("form[data-selection]");
    if (owner) syncSelection(owner);
  });

  // <button data-confirm="dialog-id">: open the dialog; its confirm button submits the form
  // the opening button belongs to (with the opener's name/value).
  document.addEventListener("click", function (event) {
    var opener = event.target.closest("[data-confirm]");
    if (opener) {
      event.preventDefault();
      var dialog = document.getElementById(opener.getAttribute("data-confirm"));
      if (!dialog) return;
      var form = opener.form || opener.closest("form");
      dialog.querySelectorAll("[data-confirm-count]").forEach(function (el) {
        var all = form && form.querySelector("input[data-all-matching]");
        el.textContent = all && all.checked ? all.getAttribute("data-total") : String(selectedCount(form || document));
      });
      dialog._tfSubmit = function () {
        if (!form) return;
        // The opener's name/value travel with the form whether htmx or the browser sends it:
        // as the submitter, and as a hidden copy for htmx versions that ignore submitters.
        var carrier = null;
        if (opener.name) {
          carrier = document.createElement("input");
          carrier.type = "hidden";
          carrier.name = opener.name;
          carrier.value = opener.value || "";
          form.appendChild(carrier);
        }
        if (opener.type === "submit" && opener.form === form) form.requestSubmit(opener);
        else form.requestSubmit();
        if (carrier) window.setTimeout(function () { carrier.remove(); }, 0);
      };
      dialog.showModal();
      showState();
      return;
    }
    var ok = event.target.closest("[data-confirm-ok]");
    if (ok) {
      var box = ok.closest("dialog");
      event.preventDefault();
      box.close();
      if (box._tfSubmit) box._tfSubmit();
      showState();
      return;
    }
    var cancel = event.target.closest("[data-dialog-cancel]");
    if (cancel) {
      event.preventDefault();
      cancel.closest("dialog").close();
      showState();
    }
  });

  document.addEventListener("keydown", function (event) {
    var typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName);
    if (event.key === "/" && !typing) {
      var search = document.querySelector("input[type=search]");
      if (search) { event.preventDefault(); search.focus(); }
    }
  });

  document.addEventListener("visibilitychange", function () {
    showState();
    // Coming back to the tab: catch up at once instead of waiting a whole interval.
    if (document.visibilityState === "visible" && interval() > 0) poll();
  });

  document.addEventListener("tf:toast", function (event) { toast(event.detail.value || event.detail.message, event.detail.kind); });
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    var text = xhr.status === 403 ? "Your role can only read: that action needs a member or admin."
      : xhr.status === 404 ? "Not found: it may have been deleted."
      : "The server answered " + xhr.status + ".";
    toast(text, "error");
  });
  document.addEventListener("htmx:sendError", function () { toast("The server did not answer. Retrying on the next refresh.", "error"); });
  document.addEventListener("htmx:afterSwap", function () {
    document.querySelectorAll("form[data-selection]").forEach(syncSelection);
  });

  document.addEventListener("DOMContentLoaded", function () {
    var select = document.getElementById("live-interval");
    if (select) select.value = String(interval());
    document.querySelectorAll("form[data-selection]").forEach(syncSelection);
    restart();
  });
})();
