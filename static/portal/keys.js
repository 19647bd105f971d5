/* The keys page: copy a new secret, and confirm before revoking or rotating. */
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  const status = document.getElementById("copy-status");

  function copied(ok) {
    if (status) {
      status.textContent = ok ? "Copied to the clipboard." : "Copy failed: select the key and copy it by hand.";
    }
  }

  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      const field = document.getElementById(button.dataset.copy);
      field.select();
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(function () { copied(true); }, function () { copied(false); });
      } else {
        /* Plain-HTTP origins other than localhost have no async clipboard. */
        copied(document.execCommand("copy"));
      }
    });
  });

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
      }
    });
  });
});
