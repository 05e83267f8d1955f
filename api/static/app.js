// PyRecognizer pages: plain JavaScript, no build step, no third-party code.
"use strict";

const csrfToken = document.querySelector('meta[name="csrf-token"]').content;

function showMessage(text, kind) {
  const box = document.getElementById("message");
  box.textContent = text;
  box.className = "message " + (kind || "");
  box.hidden = false;
}

async function postForm(url, body) {
  const response = await fetch(url, {
    method: "POST", body, headers: {"X-CSRFToken": csrfToken, "Accept": "application/json"},
  });
  let answer;
  try {
    answer = (await response.json()).response;
  } catch (error) {
    answer = {status: "KO", error: "HTTP_" + response.status, description: response.statusText || "the service did not answer"};
  }
  return {http: response.status, answer};
}

function wireDropZone(form) {
  const zone = form.querySelector(".drop");
  const input = form.querySelector('input[type="file"]');
  ["dragenter", "dragover"].forEach((name) => zone.addEventListener(name, (event) => {
    event.preventDefault();
    zone.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((name) => zone.addEventListener(name, () => zone.classList.remove("over")));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      input.dispatchEvent(new Event("change"));
    }
  });
  return input;
}

const MESSAGES = {
  NO_FACE_FOUND: "No face was found in this photo.",
  IMAGE_NOT_RECOGNIZED: "Faces were found, but none of them is someone the model knows.",
  CLASSIFIER_NOT_LOADED: "There is no model yet: train one first.",
  FILE_NOT_VALID: "This file is not a photo the service can read.",
};

function errorText(answer) {
  return (MESSAGES[answer.error] || "") + " " + (answer.description || "");
}

function faceRow(face) {
  const row = document.createElement("tr");
  const name = document.createElement("td");
  name.textContent = face.name;
  if (face.name === "unknown") name.className = "unknown";
  const confidence = document.createElement("td");
  confidence.innerHTML = '<div class="bar-cell"><div class="meter"><span></span></div><span class="pct"></span></div>';
  confidence.querySelector(".meter span").style.width = Math.round(face.confidence * 100) + "%";
  confidence.querySelector(".pct").textContent = Math.round(face.confidence * 100) + "%";
  const distance = document.createElement("td");
  distance.textContent = face.distance.toFixed(3);
  const box = document.createElement("td");
  box.textContent = [face.box.top, face.box.right, face.box.bottom, face.box.left].join(", ");
  row.append(name, confidence, distance, box);
  return row;
}

function setUpPredict(form) {
  const input = wireDropZone(form);
  const preview = document.getElementById("preview");
  input.addEventListener("change", () => {
    if (!input.files.length) return;
    preview.src = URL.createObjectURL(input.files[0]);
    preview.hidden = false;
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true;
    showMessage("Looking for faces…");
    try {
      const {answer} = await postForm(form.action, new FormData(form));
      const result = document.getElementById("result");
      const rows = document.querySelector("#faces tbody");
      rows.replaceChildren();
      if (answer.faces && answer.faces.length) {
        document.getElementById("annotated").src = answer.image_url;
        answer.faces.forEach((face) => rows.append(faceRow(face)));
        result.hidden = false;
        const names = Object.keys(answer.data || {});
        showMessage(names.length ? "Recognised: " + names.join(", ") : errorText(answer), names.length ? "ok" : "");
      } else {
        result.hidden = true;
        showMessage(errorText(answer), answer.error === "NO_FACE_FOUND" ? "" : "error");
      }
    } finally {
      button.disabled = false;
    }
  });
}

function formatSeconds(seconds) {
  if (!isFinite(seconds) || seconds < 0) return "–";
  const minutes = Math.floor(seconds / 60);
  return (minutes ? minutes + " min " : "") + Math.round(seconds % 60) + " s";
}

function showJob(job) {
  const {done, total} = job.progress;
  const bar = document.getElementById("job-progress");
  bar.max = Math.max(total, 1);
  bar.value = done;
  document.getElementById("job-step").textContent = job.step.charAt(0).toUpperCase() + job.step.slice(1);
  const elapsed = job.started ? Date.now() / 1000 - job.started : 0;
  const remaining = done ? elapsed / done * (total - done) : NaN;
  document.getElementById("job-figures").textContent =
    `${done} / ${total} photos · elapsed ${formatSeconds(elapsed)} · remaining ${done < total ? formatSeconds(remaining) : "0 s"}`;
}

function showJobResult(result) {
  const box = document.getElementById("job-result");
  const metrics = result.metrics || {};
  const people = Object.entries(result.people || {}).map(([name, count]) => `<li>${escapeHtml(name)}: ${count}</li>`).join("");
  const skipped = (result.skipped || []).map((item) => `<li><code>${escapeHtml(item.file)}</code>: ${escapeHtml(item.reason)}</li>`).join("");
  const accuracy = metrics.accuracy == null ? "–" : (metrics.accuracy * 100).toFixed(1) + "%";
  box.innerHTML = `<p>Model <code>${escapeHtml(result.model)}</code>: held-out accuracy <strong>${accuracy}</strong>
    on ${metrics.test_photos || 0} photos.</p>` +
    (result.search ? `<p>Best parameters: <code>${escapeHtml(JSON.stringify(result.search.best_params))}</code>
      (cross-validated accuracy ${(result.search.best_score * 100).toFixed(1)}%)</p>` : "") +
    `<details open><summary>Photos learned per person</summary><ul>${people}</ul></details>` +
    (skipped ? `<details><summary>${result.skipped.length} photos skipped</summary><ul>${skipped}</ul></details>` : "") +
    `<p><a href="/">Go to the predict page</a> (opening it in a few seconds).</p>`;
}

function escapeHtml(text) {
  const span = document.createElement("span");
  span.textContent = String(text);
  return span.innerHTML;
}

async function followJob(url) {
  const section = document.getElementById("job");
  section.hidden = false;
  for (;;) {
    const response = await fetch(url, {headers: {"Accept": "application/json"}});
    const job = (await response.json()).response.data;
    showJob(job);
    if (job.state === "done") {
      showMessage("Training finished: the new model is active.", "ok");
      showJobResult(job.result);
      setTimeout(() => { window.location.href = "/"; }, 8000);
      return;
    }
    if (job.state === "failed") {
      showMessage(`${job.error.code}: ${job.error.description}`, "error");
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 700));
  }
}

function setUpTrain(form) {
  wireDropZone(form);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true;
    showMessage("Uploading…");
    const {answer} = await postForm(form.action, new FormData(form));
    if (answer.status !== "OK") {
      showMessage(`${answer.error}: ${answer.description}`, "error");
      button.disabled = false;
      return;
    }
    showMessage("Training started.");
    await followJob(answer.job_url);
    button.disabled = false;
  });
}

function setUpModels() {
  document.querySelectorAll("button.activate, button.delete").forEach((button) => {
    button.addEventListener("click", async () => {
      const model = button.dataset.model;
      const deleting = button.classList.contains("delete");
      if (deleting && !window.confirm(`Delete model ${model}? This cannot be undone.`)) return;
      const response = await fetch(`/models/${model}${deleting ? "" : "/activate"}`, {
        method: deleting ? "DELETE" : "POST", headers: {"X-CSRFToken": csrfToken, "Accept": "application/json"},
      });
      const answer = (await response.json()).response;
      if (answer.status === "OK") window.location.reload();
      else showMessage(`${answer.error}: ${answer.description}`, "error");
    });
  });
}

const predictForm = document.getElementById("predict-form");
if (predictForm) setUpPredict(predictForm);
const trainForm = document.getElementById("train-form");
if (trainForm) setUpTrain(trainForm);
setUpModels();
