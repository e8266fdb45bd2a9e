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

  var expiry = document.getElementById("code-expiry");
  if (expiry) {
    var at = Number(expiry.getAttribute("data-expires-at"));
    var left = at - Date.now();
    if (left > 0) {
      setTimeout(function () {
        expiry.className = "notice warn";
        expiry.setAttribute("role", "alert");
        expiry.textContent = "The code has timed out. Select \u201cRe-send code\u201d to get a new one.";
      }, left);
    }
  }

  var main = document.getElementById("main");
  if (main && main.getAttribute("data-kind") === "voice") {
    var url = main.getAttribute("data-status-url");
    var step = main.getAttribute("data-step");
    var view = main.getAttribute("data-view");
    setInterval(function () {
      fetch(url, { credentials: "same-origin" }).then(function (r) { return r.ok ? r.json() : null; }).then(function (s) {
        if (s && (s.step !== step || s.status !== "active" || s.view !== view)) {
          window.location.replace(window.location.pathname);
        }
      }).catch(function () {});
    }, 1000);
  }
})();
