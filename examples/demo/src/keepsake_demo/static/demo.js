// The demo's only script: no framework, no build step. Loaded from this site ('self'), as the
// Content-Security-Policy requires.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  // Times come from the server in UTC; show them in the visitor's own time zone.
  var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  var format = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });
  document.querySelectorAll("time[data-local]").forEach(function (el) {
    var when = new Date(el.getAttribute("datetime"));
    if (!isNaN(when)) {
      el.title = el.textContent;
      el.textContent = format.format(when);
    }
  });
  document.querySelectorAll(".tz").forEach(function (el) {
    el.textContent = " (your time zone: " + zone + ")";
  });

  // The HttpOnly lesson: ask for document.cookie and say whether the session cookie is there.
  var out = document.getElementById("document-cookie");
  if (out) {
    var seen = document.cookie;
    var name = out.getAttribute("data-session-cookie");
    out.textContent = seen === "" ? '"" (an empty string)' : seen;
    var names = seen.split(";").map(function (part) {
      return part.split("=")[0].trim();
    });
    var verdict = document.getElementById("document-cookie-verdict");
    if (names.indexOf(name) === -1) {
      verdict.textContent = "The session cookie " + name + " is not there: HttpOnly hides it from script.";
      verdict.classList.add("ok");
    } else {
      verdict.textContent = "The session cookie " + name + " is visible to script: it is not HttpOnly!";
      verdict.classList.add("bad");
    }
    var contrast = out.getAttribute("data-contrast-cookie");
    var contrastVerdict = document.getElementById("contrast-verdict");
    if (contrast && contrastVerdict) {
      if (names.indexOf(contrast) === -1) {
        contrastVerdict.textContent = "The contrast cookie " + contrast + " is missing: this browser refused it.";
      } else {
        contrastVerdict.textContent = "The contrast cookie " + contrast + " is there: without HttpOnly, any script on the page can read it.";
        contrastVerdict.classList.add("ok");
      }
    }
  }
});
