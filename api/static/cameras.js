// The cameras page: each camera's last frame and state (polled from GET /cameras), adding and
// removing cameras, and the events as they come (server-sent events from GET /events). Uses
// app.js's helpers (window.PyRecognizer); the page's CSP holds (no inline style or script).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const grid = document.getElementById("cameras");
  const kit = window.PyRecognizer;
  if (!grid || !kit) return;
  const form = document.getElementById("camera-form");
  const button = document.getElementById("camera-button");
  const empty = document.getElementById("no-cameras");
  const cardTemplate = document.getElementById("camera-template");
  const eventList = document.getElementById("events");
  const eventTemplate = document.getElementById("event-template");
  const eventsState = document.getElementById("events-state");
  const MAX_EVENTS = 50;
  const shown = new Set(); // journal ids already listed: a stream opened again resends the recent ones
  const REFRESH = 2000;

  function card(camera) {
    let item = grid.querySelector(`li[data-camera="${CSS.escape(camera.name)}"]`);
    if (!item) {
      item = cardTemplate.content.firstElementChild.cloneNode(true);
      item.dataset.camera = camera.name;
      item.querySelector(".camera__name").textContent = camera.name;
      item.querySelector(".camera__frame").alt = `Last frame of ${camera.name}`;
      item.querySelector(".camera__frame").dataset.src = camera.snapshot_url;
      item.querySelector(".camera__url code").textContent = camera.url;
      const remove = item.querySelector("button");
      if (camera.defined_in === "api") remove.dataset.remove = camera.name;
      else remove.remove();
      grid.append(item);
    }
    return item;
  }

  function show(camera) {
    const item = card(camera);
    const state = item.querySelector(".camera__state");
    state.dataset.state = camera.status.state;
    state.querySelector(".camera__state-text").textContent = camera.status.state;
    item.querySelector("[data-fps]").textContent = camera.status.fps;
    item.querySelector("[data-dropped]").textContent = camera.status.dropped;
    const frame = item.querySelector(".camera__frame");
    if (camera.status.state === "streaming" || !frame.getAttribute("src")) {
      // a new URL each time: the snapshot changes every second and no cache may keep it
      const probe = new Image();
      probe.addEventListener("load", () => { frame.src = probe.src; });
      probe.src = `${frame.dataset.src}?t=${Date.now()}`;
    }
  }

  async function refresh() {
    const {http, answer} = await kit.request("GET", grid.dataset.camerasUrl);
    if (http === 200 && Array.isArray(answer.data)) {
      const names = new Set(answer.data.map((camera) => camera.name));
      grid.querySelectorAll("li[data-camera]").forEach((item) => { if (!names.has(item.dataset.camera)) item.remove(); });
      answer.data.forEach(show);
      empty.hidden = answer.data.length > 0;
    }
    window.setTimeout(refresh, REFRESH);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!form.reportValidity()) return;
    kit.clearMessages();
    kit.setBusy(button, true);
    const body = {name: form.elements.name.value.trim(), url: form.elements.url.value.trim(),
      sample_fps: Number(form.elements.sample_fps.value)};
    const {http, answer} = await kit.request("POST", form.action, {json: body});
    kit.setBusy(button, false);
    if (http === 201) {
      form.reset();
      show(answer.data);
      empty.hidden = true;
      kit.showMessage({level: "ok", title: `Camera ${answer.data.name} added`, text: "It is watched within seconds."});
    } else {
      const message = kit.described(answer);
      if (answer.data && Array.isArray(answer.data.problems)) message.list = answer.data.problems;
      kit.showMessage(message);
    }
  });

  grid.addEventListener("click", async (event) => {
    const remove = event.target.closest("button[data-remove]");
    if (!remove) return;
    const name = remove.dataset.remove;
    if (!window.confirm(`Stop watching ${name} and remove it?`)) return;
    const {http, answer} = await kit.request("DELETE", `${grid.dataset.camerasUrl}/${encodeURIComponent(name)}`);
    if (http === 200) {
      remove.closest("li").remove();
      empty.hidden = grid.children.length > 0;
      kit.showMessage({level: "ok", title: `Camera ${name} removed`});
    } else {
      kit.showMessage(kit.described(answer));
    }
  });

  function addEvent(data) {
    const item = eventTemplate.content.firstElementChild.cloneNode(true);
    const unknown = data.name === "unknown";
    item.classList.toggle("event--unknown", unknown);
    item.dataset.type = data.type;
    item.dataset.name = data.name;
    item.querySelector(".event__name").textContent = unknown ? `unknown face ${data.unknown_id ?? ""}`.trim() : data.name;
    const what = {new: "seen", update: "confirmed", end: "gone"}[data.type] || data.type;
    item.querySelector(".event__what").textContent = unknown ? what : `${what} (${Math.round(data.confidence * 100)}%)`;
    item.querySelector(".event__where").textContent = `on ${data.camera}`;
    const time = item.querySelector(".event__time");
    const moment = new Date(data.time * 1000);
    time.dateTime = moment.toISOString();
    time.textContent = moment.toLocaleTimeString();
    if (data.crop_url) {
      const crop = item.querySelector(".event__crop");
      crop.src = data.crop_url;
      crop.alt = unknown ? "an unknown face" : data.name;
      crop.hidden = false;
    }
    eventList.prepend(item);
    while (eventList.children.length > MAX_EVENTS) eventList.lastElementChild.remove();
  }

  function listen() {
    const source = new EventSource(eventList.dataset.eventsUrl);
    source.addEventListener("open", () => { eventsState.textContent = "Live: new events appear at the top."; });
    source.addEventListener("face", (event) => {
      if (shown.has(event.lastEventId)) return;
      shown.add(event.lastEventId);
      try { addEvent(JSON.parse(event.data)); } catch (error) { /* a malformed event is skipped */ }
    });
    source.addEventListener("error", () => {
      // EventSource reconnects by itself after a stream ends; an HTTP error closes it for good
      if (source.readyState === EventSource.CLOSED) {
        eventsState.textContent = "Reconnecting…";
        window.setTimeout(listen, 3000);
      }
    });
  }

  refresh();
  listen();
});
