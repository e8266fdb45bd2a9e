// The only script on the portal: the eye buttons, the live password ticks, the code's
// timeout message and the call page moving on by itself. Every page works without it.
(function () {
  "use strict";

  document.querySelectorAll("button[data-toggle]").forEach(function (button) {
    button.addEventListener("click", function () {
      var input = document.getElementById(button.getAttribute("data-toggle"));
      if (!input) return;
      var show = input.type === "password";
      input.type = show ? "text" : "password";
      button.setAttribute("aria-pressed", show ? "true" : "false");
      button.textContent = show ? "Hide" : "Show";
      button.setAttribute("aria-label", (show ? "Hide " : "Show ") + input.labels[0].textContent.toLowerCase());
    });
  });

  var form = document.getElementById("password-form");
  if (form) {
    var submit = document.getElementById("update-password");
    var fresh = document.getElementById("new-password");
    var confirm = document.getElementById("confirm-password");
    var csrf = form.querySelector("input[name=csrf]").value;
    var timer = null;
    var seq = 0;
    submit.disabled = true;
    var check = function () {
      var mine = ++seq;
      fetch(form.getAttribute("data-check"), {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/json", "x-csrf-token": csrf },
        body: JSON.stringify({ new_password: fresh.value, confirm_password: confirm.value })
      }).then(function (r) { return r.ok ? r.json() : null; }).then(function (body) {
        if (mine !== seq) return;
        // No answer from the check (busy, limited): let the server decide on submit.
        if (!body) { submit.disabled = false; return; }
        body.requirements.forEach(function (req) {
          var li = document.getElementById("req-" + req.id);
          if (!li) return;
          li.setAttribute("data-met", req.met ? "true" : "false");
          var sr = li.querySelector(".sr-only");
          if (sr) sr.textContent = req.met ? " (met)" : " (not met yet)";
        });
        submit.disabled = !body.all_met;
      }).catch(function () { submit.disabled = false; });
    };
    var schedule = function () {
      clearTimeout(timer);
      timer = setTimeout(check, 150);
    };
    fresh.addEventListener("input", schedule);
    confirm.addEventListener("input", schedule);
  }

  // The server sends the time the code has left, not its deadline: the browser's clock may
  // be minutes off the server's. performance.now() counts from when this page was requested
  // (its time origin) on a clock that setting the system time does not move, and checking
  // it every second rather than trusting one long timer copes with background tabs, whose
  // timers fire late. The words come from the server too: the step's own button label, or
  // "start again" once nothing more can be sent.
  var expiry = document.getElementById("code-expiry");
  if (expiry) {
    var left = Number(expiry.getAttribute("data-remaining-ms"));
    var message = expiry.getAttribute("data-expired-message");
    if (left > 0 && message) {
      var watchExpiry = setInterval(function () {
        if (performance.now() < left) return;
        clearInterval(watchExpiry);
        expiry.className = "notice warn";
        expiry.setAttribute("role", "alert");
        expiry.textContent = message;
      }, 1000);
    }
  }

  // A press-# call page moves on by itself once the journey does. It loads the journey's
  // own page, never this document's address: that may be the POST route the page was the
  // answer to, which a GET cannot open.
  var main = document.getElementById("main");
  if (main && main.getAttribute("data-watch") === "true") {
    var url = main.getAttribute("data-status-url");
    var page = main.getAttribute("data-page-url");
    var step = main.getAttribute("data-step");
    var view = main.getAttribute("data-view");
    setInterval(function () {
      fetch(url, { credentials: "same-origin" }).then(function (r) { return r.ok ? r.json() : null; }).then(function (s) {
        if (s && (s.step !== step || s.status !== "active" || s.view !== view)) {
          window.location.replace(page);
        }
      }).catch(function () {});
    }, 1000);
  }
})();
