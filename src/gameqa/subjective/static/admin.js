// Experimenter page: progress and exports, authorised with the experimenter token (kept in
// this tab's sessionStorage only and sent as a bearer header).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem("gameqa-admin-token") || "";
  let timer = null;

  async function call(path, options) {
    const response = await fetch(path, Object.assign({}, options || {}, {
      headers: Object.assign({ "Authorization": "Bearer " + token }, (options || {}).headers || {}) }));
    if (!response.ok) {
      let message = "error " + response.status;
      try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
      throw new Error(message);
    }
    return response;
  }

  function cell(row, text) {
    const td = document.createElement("td");
    if (text instanceof Node) td.appendChild(text); else td.textContent = text;
    row.appendChild(td);
  }

  function bar(value, target) {
    const outer = document.createElement("div");
    outer.className = "bar";
    const inner = document.createElement("span");
    inner.style.width = Math.min(100, 100 * value / Math.max(target, 1)) + "%";
    outer.appendChild(inner);
    return outer;
  }

  async function refresh() {
    try {
      const data = await (await call("/api/admin/progress")).json();
      $("error").textContent = "";
      $("login").classList.add("hidden");
      $("report").classList.remove("hidden");
      $("study-name").textContent = "– " + data.study;
      $("summary").textContent = data.participants_done + " of " + data.participants_total +
        " participants finished; " + data.votes_total + " of " + data.votes_target + " votes" +
        (data.full ? " (complete)" : "") + ".";
      const stimuli = $("stimuli");
      stimuli.textContent = "";
      for (const s of data.stimuli) {
        const row = document.createElement("tr");
        cell(row, s.stimulus); cell(row, s.content); cell(row, s.votes + " / " + s.target);
        cell(row, bar(s.votes, s.target));
        stimuli.appendChild(row);
      }
      const people = $("participants");
      people.textContent = "";
      for (const p of data.participants) {
        const row = document.createElement("tr");
        cell(row, p.observer); cell(row, p.stage); cell(row, p.votes + " / " + p.items);
        cell(row, p.repeat_mean_abs_diff === null ? "" : p.repeat_mean_abs_diff.toFixed(2));
        cell(row, Object.entries(p.answers).map(([k, v]) => k + ": " + v).join("; "));
        cell(row, p.link_token ? window.location.origin + "/p/" + p.link_token : "");
        people.appendChild(row);
      }
    } catch (e) {
      $("error").textContent = e.message;
      $("login").classList.remove("hidden");
      if (timer) { clearInterval(timer); timer = null; }
    }
  }

  async function download(all) {
    try {
      const blob = await (await call("/api/admin/votes.csv" + (all ? "?all=true" : ""))).blob();
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = all ? "votes-all.csv" : "votes.csv";
      document.body.appendChild(link);
      link.click();
      link.remove();
    } catch (e) { $("error").textContent = e.message; }
  }

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem("gameqa-admin-token", token);
    refresh();
    if (!timer) timer = setInterval(refresh, 5000);
  });
  $("export").addEventListener("click", () => download(false));
  $("export-all").addEventListener("click", () => download(true));
  $("new-link").addEventListener("click", async () => {
    try {
      const data = await (await call("/api/admin/links", { method: "POST",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify({ count: 1 }) })).json();
      $("new-link-out").textContent = window.location.origin + data.links[0];
      refresh();
    } catch (e) { $("error").textContent = e.message; }
  });
  if (token) { refresh(); timer = setInterval(refresh, 5000); }
})();
