// Join page: ask the server for a personal participant link, then go there.
"use strict";
(function () {
  const error = document.getElementById("error");
  fetch("/api/study").then(r => r.json()).then(s => {
    document.getElementById("title").textContent = s.title;
    document.title = s.title;
  }).catch(() => {});
  document.getElementById("start").addEventListener("click", async (event) => {
    event.target.disabled = true;
    error.textContent = "";
    try {
      const response = await fetch("/api/join", { method: "POST" });
      const body = await response.json();
      if (!response.ok) throw new Error(body.error || ("error " + response.status));
      window.location.replace(body.url);
    } catch (e) {
      error.textContent = e.message;
      event.target.disabled = false;
    }
  });
})();
