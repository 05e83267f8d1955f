// The video page: upload a video to POST /predict/video, follow its job when it is long, draw
// the timeline. Uses app.js's helpers (window.PyRecognizer); the same CSP rules hold: no
// inline style, no style writes (the bars are SVG rectangles placed by their attributes).
"use strict";

// Deferred scripts run in document order and this one comes first (the page's head block):
// wait until app.js has run too.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("video-form");
  const kit = window.PyRecognizer;
  if (!form || !kit) return;

  const SVG = "http://www.w3.org/2000/svg";
  const player = document.getElementById("player");
  const button = document.getElementById("video-button");
  const box = document.getElementById("video-messages");
  const progress = document.getElementById("video-progress");
  const bar = document.getElementById("video-progress-bar");
  const step = document.getElementById("video-step");
  const share = document.getElementById("video-percent");
  const timeline = document.getElementById("timeline");
  const summary = document.getElementById("video-summary");
  const details = document.getElementById("video-details");
  const rowTemplate = document.getElementById("timeline-row-template");
  let source = null;
  let offset = 0; // the timeline counts from the first video frame; the player from the file's start

  function setProgress(text, done, total) {
    progress.hidden = false;
    step.textContent = text;
    kit.setBar(bar, share, done, total);
  }

  function seconds(value) {
    return `${Number(value).toFixed(1)} s`;
  }

  function seek(start) {
    player.currentTime = start + offset;
    player.focus({preventScroll: true});
  }

  function rangeBar(range, duration, name) {
    const rect = document.createElementNS(SVG, "rect");
    const left = (1000 * range.start) / duration;
    rect.setAttribute("x", String(left));
    rect.setAttribute("width", String(Math.max(4, (1000 * (range.end - range.start)) / duration)));
    rect.setAttribute("y", "0");
    rect.setAttribute("height", "24");
    rect.setAttribute("class", "timeline__range");
    rect.setAttribute("tabindex", "0");
    rect.setAttribute("role", "button");
    rect.dataset.start = String(range.start);
    const label = `${name}: ${seconds(range.start)} to ${seconds(range.end)}; play from here`;
    rect.setAttribute("aria-label", label);
    const title = document.createElementNS(SVG, "title");
    title.textContent = label;
    rect.append(title);
    rect.addEventListener("click", () => seek(range.start));
    rect.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        seek(range.start);
      }
    });
    return rect;
  }

  function show(result) {
    const duration = result.video.seconds || 1;
    offset = result.video.offset || 0;
    timeline.replaceChildren();
    result.timeline.forEach((entry) => {
      const row = rowTemplate.content.firstElementChild.cloneNode(true);
      row.classList.toggle("timeline__row--unknown", !entry.known);
      row.dataset.name = entry.name;
      const thumb = row.querySelector(".timeline__thumb");
      if (entry.thumbnail_url) {
        thumb.src = entry.thumbnail_url;
        thumb.alt = `${entry.name} at ${seconds(entry.best_time)}`;
      } else {
        thumb.remove();
      }
      row.querySelector(".timeline__name").textContent = entry.known ? entry.name : `Unknown face ${entry.name.split(" ").pop()}`;
      const facts = [`${entry.frames} frames`];
      if (entry.known) facts.push(`best confidence ${Math.round(entry.confidence * 100)}%`);
      facts.push(entry.ranges.map((range) => `${seconds(range.start)}–${seconds(range.end)}`).join(", "));
      row.querySelector(".timeline__facts").textContent = facts.join(" · ");
      const track = row.querySelector(".timeline__track");
      track.setAttribute("aria-label", `When ${entry.name} appears`);
      entry.ranges.forEach((range) => track.append(rangeBar(range, duration, entry.name)));
      timeline.append(row);
    });
    const people = result.timeline.length;
    summary.textContent = people ? `${kit.plural(people, "face", "faces")} over ${seconds(duration)} of video.`
      : "No face found in this video.";
    details.textContent = `${result.video.width}×${result.video.height}, ${result.video.fps} fps, ` +
      `${result.samples} frames looked at, ${result.encodings} encodings` + (result.model ? `, model ${result.model}.` : ".");
    progress.hidden = true;
  }

  function failed(answer) {
    progress.hidden = true;
    kit.showMessage({...kit.described(answer), scroll: true}, box);
  }

  async function follow(jobUrl) {
    for (;;) {
      const {answer} = await kit.request("GET", jobUrl);
      if (answer.status !== "OK") return failed(answer);
      const job = answer.data;
      if (job.state === "done") return show(job.result);
      if (job.state === "failed") return failed({status: "KO", ...(job.error || {}), error: (job.error || {}).code});
      if (job.state === "cancelled") return failed({status: "KO", error: "CANCELLED", description: "the analysis was cancelled"});
      setProgress(job.state === "queued" ? "Waiting" : "Analysing", job.progress.done, job.progress.total);
      await kit.sleep(400);
    }
  }

  kit.wireDropZone(form.querySelector("[data-dropzone]"), (file) => {
    kit.clearMessages(box);
    timeline.replaceChildren();
    summary.textContent = "";
    details.textContent = "";
    if (source) URL.revokeObjectURL(source);
    source = file ? URL.createObjectURL(file) : null;
    player.hidden = !source;
    if (source) player.src = source;
  });
  form.noValidate = true;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = form.querySelector('input[type="file"]');
    const file = input.files[0];
    kit.clearMessages(box);
    if (!file) {
      kit.showMessage(kit.described({error: "MISSING_FILE"}), box);
      return;
    }
    if (kit.tooLarge(file)) return;
    kit.setBusy(button, true);
    timeline.replaceChildren();
    setProgress("Uploading", 0, file.size);
    try {
      const {http, answer} = await kit.request("POST", form.action, {
        body: new FormData(form),
        onUpload: (done, total) => (done < total ? setProgress("Uploading", done, total) : setProgress("Analysing", 0, 0)),
      });
      if (http === 202 && answer.job_url) await follow(answer.job_url);
      else if (answer.status === "OK" && answer.data && answer.data.timeline) show(answer.data);
      else failed(answer);
    } finally {
      kit.setBusy(button, false);
    }
  });
});
