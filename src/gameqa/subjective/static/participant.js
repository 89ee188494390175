// Participant page: consent and viewing conditions, then each item shown once (video full
// screen until it ends, image for a fixed time), then the rating; every vote is sent with
// the nonce the server issued for the item on screen.
"use strict";
(function () {
  const token = decodeURIComponent(window.location.pathname.split("/").filter(Boolean).pop());
  const api = "/api/p/" + encodeURIComponent(token);
  const $ = (id) => document.getElementById(id);
  const sections = ["loading", "consent", "ready", "vote", "done"];
  let current = null;   // the last state from the server
  let selected = null;  // the score picked

  function show(id) {
    for (const s of sections) $(s).classList.toggle("hidden", s !== id);
  }

  function fail(message) { $("error").textContent = message; }

  async function call(path, body) {
    const options = body === undefined ? {} : {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
    const response = await fetch(api + path, options);
    let data = {};
    try { data = await response.json(); } catch (e) { /* not JSON */ }
    if (!response.ok) {
      const err = new Error(data.error || ("Server error " + response.status));
      err.status = response.status;
      throw err;
    }
    return data;
  }

  function render(state) {
    current = state;
    const study = state.study;
    $("title").textContent = study.title;
    document.title = study.title;
    if (state.stage === "consent") return renderConsent(study);
    if (state.stage === "done") return show("done");
    renderReady(state);
  }

  function renderConsent(study) {
    $("consent-text").textContent = study.consent;
    $("instructions-text").textContent = study.instructions;
    const box = $("questions");
    box.textContent = "";
    for (const q of study.questions) {
      const label = document.createElement("label");
      label.textContent = q.text;
      label.htmlFor = "q-" + q.id;
      let input;
      if (q.choices.length) {
        input = document.createElement("select");
        const blank = document.createElement("option");
        blank.value = ""; blank.textContent = "Please choose…";
        input.appendChild(blank);
        for (const c of q.choices) {
          const option = document.createElement("option");
          option.value = c; option.textContent = c;
          input.appendChild(option);
        }
      } else {
        input = document.createElement("input");
        input.type = "text";
      }
      input.id = "q-" + q.id;
      input.dataset.question = q.id;
      box.appendChild(label);
      box.appendChild(input);
    }
    show("consent");
  }

  function phaseText(state) {
    const item = state.item;
    if (item.phase === "training") {
      return ["Practice", (state.position + 1) + " of " + state.training_total];
    }
    const mainTotal = state.total - state.training_total;
    return ["Rating", "Item " + (state.position - state.training_total + 1) + " of " + mainTotal];
  }

  function renderReady(state) {
    const [phase, counter] = phaseText(state);
    for (const id of ["phase", "vote-phase"]) {
      $(id).textContent = phase;
      $(id).classList.toggle("training", state.item.phase === "training");
    }
    $("counter").textContent = counter;
    $("vote-counter").textContent = counter;
    const video = state.item.kind === "video";
    $("ready-text").textContent = (state.item.phase === "training"
      ? "This is a practice item to get used to the range of quality. "
      : "") + (video ? "Press Play: the clip plays once in full screen, then you rate it."
                     : "Press Show: the image appears in full screen for a few seconds, then you rate it.");
    $("play").textContent = video ? "Play" : "Show";
    $("play").disabled = false;
    show("ready");
  }

  async function enterFullscreen(element) {
    try {
      if (element.requestFullscreen && !document.fullscreenElement) await element.requestFullscreen();
    } catch (e) { /* full screen refused: the stage still covers the window */ }
  }

  async function leaveFullscreen() {
    try { if (document.fullscreenElement) await document.exitFullscreen(); } catch (e) { /* ignore */ }
  }

  function present() {
    const state = current;
    const stage = $("stage");
    const src = api + "/media/" + state.item.position;
    $("play").disabled = true;
    fail("");
    stage.textContent = "";
    stage.classList.remove("hidden");
    enterFullscreen(stage);
    const finish = () => { leaveFullscreen(); stage.classList.add("hidden"); stage.textContent = ""; renderVote(); };
    if (state.item.kind === "video") {
      const video = document.createElement("video");
      video.muted = false;
      video.playsInline = true;
      video.controls = false;
      video.preload = "auto";
      video.addEventListener("ended", finish, { once: true });
      video.addEventListener("error", () => {
        leaveFullscreen(); stage.classList.add("hidden");
        fail("The clip could not be played. Please reload the page."); $("play").disabled = false;
      }, { once: true });
      video.src = src;
      stage.appendChild(video);
      video.play().catch(() => { video.muted = true; return video.play(); }).catch(() => {
        fail("The clip could not start. Press Play again.");
        leaveFullscreen(); stage.classList.add("hidden"); $("play").disabled = false;
      });
    } else {
      const image = document.createElement("img");
      image.alt = "";
      image.addEventListener("load", () => setTimeout(finish, state.study.image_seconds * 1000), { once: true });
      image.addEventListener("error", () => {
        leaveFullscreen(); stage.classList.add("hidden");
        fail("The image could not be shown. Please reload the page."); $("play").disabled = false;
      }, { once: true });
      image.src = src;
      stage.appendChild(image);
    }
  }

  function renderVote() {
    const scale = current.study.scale;
    const box = $("scale");
    box.textContent = "";
    selected = null;
    $("vote-submit").disabled = true;
    const count = scale.high - scale.low + 1;
    const horizontal = count > 5;
    box.classList.toggle("horizontal", horizontal);
    $("scale-ends").classList.toggle("hidden", !horizontal);
    const values = [];
    for (let v = scale.high; v >= scale.low; v--) values.push(v);
    if (horizontal) values.reverse();
    for (const value of values) {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.score = String(value);
      button.setAttribute("role", "radio");
      const label = scale.labels[String(value)];
      button.textContent = horizontal ? String(value) : (value + (label ? " – " + label : ""));
      button.addEventListener("click", () => {
        for (const b of box.querySelectorAll("button")) b.classList.remove("selected");
        button.classList.add("selected");
        selected = value;
        $("vote-submit").disabled = false;
      });
      box.appendChild(button);
    }
    if (horizontal) {
      $("end-low").textContent = scale.low + ": " + (scale.labels[String(scale.low)] || "");
      $("end-high").textContent = scale.high + ": " + (scale.labels[String(scale.high)] || "");
    }
    show("vote");
  }

  async function submitVote() {
    if (selected === null) return;
    $("vote-submit").disabled = true;
    fail("");
    try {
      render(await call("/vote", { position: current.item.position, nonce: current.item.nonce, score: selected }));
    } catch (e) {
      fail(e.message);
      if (e.status === 409 || e.status === 403) {
        try { render(await call("/state")); } catch (e2) { /* keep the message */ }
      } else {
        $("vote-submit").disabled = false;
      }
    }
  }

  async function submitConsent(event) {
    event.preventDefault();
    fail("");
    if (!$("agree").checked) return fail("Please tick the box to agree before starting.");
    const answers = {};
    for (const input of $("questions").querySelectorAll("[data-question]")) {
      answers[input.dataset.question] = input.value;
    }
    $("consent-submit").disabled = true;
    try {
      render(await call("/consent", { consent: true, answers: answers }));
    } catch (e) {
      fail(e.message);
    } finally {
      $("consent-submit").disabled = false;
    }
  }

  $("consent-form").addEventListener("submit", submitConsent);
  $("play").addEventListener("click", present);
  $("vote-submit").addEventListener("click", submitVote);
  call("/state").then(render).catch((e) => { show(null); fail(e.message); });
})();
