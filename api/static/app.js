// PyRecognizer pages: plain JavaScript, no build step, no third-party code.
// Runs under a strict Content-Security-Policy: no inline script, no inline style and no
// element.style writes; the look changes through classes, attributes and <progress>/<meter>.
"use strict";

(() => {
  const body = document.body;
  const csrfToken = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const MESSAGES = readJson("error-messages");
  const WARNINGS = new Set(["NO_FACE_FOUND", "IMAGE_NOT_RECOGNIZED", "TRAINING_IN_PROGRESS"]);
  const HTTP_CODES = {400: "BAD_REQUEST", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 409: "TRAINING_IN_PROGRESS",
    413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 429: "TOO_MANY_REQUESTS"};
  const QUIET = new Set(readJson("quiet-codes"));
  const FLASH_KEY = "pyrecognizer.flash";
  const FINISHED_KEY = "pyrecognizer.finished-job";
  const messages = document.getElementById("messages");

  function readJson(id) {
    try {
      return JSON.parse(document.getElementById(id).textContent);
    } catch (error) {
      return {};
    }
  }

  // -- formatting -----------------------------------------------------------------------------
  function bytes(size) {
    if (size < 1024) return `${size} bytes`;
    if (size < 1024 * 1024) return `${Math.round(size / 1024)} KB`;
    return `${(size / 1024 / 1024).toFixed(size < 10 * 1024 * 1024 ? 1 : 0)} MB`;
  }

  function clock(seconds) {
    if (!Number.isFinite(seconds) || seconds < 0) return "–";
    seconds = Math.round(seconds);
    const minutes = Math.floor(seconds / 60);
    return minutes ? `${minutes} min ${String(seconds % 60).padStart(2, "0")} s` : `${seconds} s`;
  }

  function percent(value) {
    return `${Math.round(value * 100)}%`;
  }

  // A progress bar and its percentage; no total yet: an indeterminate bar.
  function setBar(bar, share, done, total) {
    if (total > 0) {
      bar.max = total;
      bar.value = Math.min(done, total);
      share.textContent = `${Math.floor((100 * Math.min(done, total)) / total)}%`;
    } else {
      bar.removeAttribute("value");
      share.textContent = "";
    }
  }

  function plural(count, one, many) {
    return `${count} ${count === 1 ? one : many}`;
  }

  function capitalised(text) {
    text = String(text || "");
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // -- messages in the page -------------------------------------------------------------------
  // One message at a time under the header; errors are role="alert", the rest role="status".
  function showMessage({level = "info", title, text = "", detail = "", list = [], code = "", link = null,
    scroll = false}, box = messages) {
    const template = document.getElementById("alert-template");
    const node = template.content.firstElementChild.cloneNode(true);
    node.classList.add(`alert--${level}`);
    node.setAttribute("role", level === "error" ? "alert" : "status");
    if (code) node.dataset.code = code;
    node.querySelector(".alert__title").textContent = title;
    node.querySelector(".alert__text").textContent = text;
    node.querySelector(".alert__detail").textContent = detail;
    const items = node.querySelector(".alert__list");
    list.slice(0, 12).forEach((item) => {
      const li = document.createElement("li");
      li.textContent = item;
      items.append(li);
    });
    if (list.length > 12) {
      const li = document.createElement("li");
      li.textContent = `… and ${list.length - 12} more`;
      items.append(li);
    }
    node.querySelector(".alert__code").textContent = code && level !== "ok" && level !== "info" ? `Code ${code}` : "";
    const anchor = node.querySelector(".alert__link a");
    if (link) {
      anchor.href = link.href;
      anchor.textContent = link.text;
    } else {
      anchor.parentElement.remove();
    }
    node.querySelector(".alert__close").addEventListener("click", () => node.remove());
    box.replaceChildren(node);
    if (scroll) node.scrollIntoView({block: "nearest"});
    return node;
  }

  function clearMessages(box = messages) {
    box.replaceChildren();
  }

  // The message for a KO (or OK-with-error) answer, in words.
  function described(answer) {
    const code = answer.error || "INTERNAL_ERROR";
    const [title, hint] = MESSAGES[code] || ["Something went wrong", "Try again in a moment."];
    const data = answer.data;
    let list = [];
    if (data && Array.isArray(data.skipped)) list = data.skipped.map((item) => `${item.file}: ${item.reason}`);
    else if (Array.isArray(data)) list = data.map(String);
    let detail = QUIET.has(code) ? "" : answer.description || "";
    if (detail && title.toLowerCase().includes(detail.toLowerCase())) detail = "";
    const message = {level: WARNINGS.has(code) ? "warning" : "error", title, text: hint, detail, list, code};
    if (code === "CLASSIFIER_NOT_LOADED" && body.dataset.trainUrl) message.link = {href: body.dataset.trainUrl, text: "Train a model"};
    if (code === "CSRF_FAILED") message.link = {href: window.location.href, text: "Reload the page"};
    if (code === "UNAUTHORIZED" && body.dataset.loginUrl) message.link = {href: body.dataset.loginUrl, text: "Log in"};
    return message;
  }

  // A message to show on the next page (after a reload).
  function flash(message) {
    try {
      sessionStorage.setItem(FLASH_KEY, JSON.stringify(message));
    } catch (error) { /* private mode: no message after the reload, nothing else lost */ }
  }

  function showFlash() {
    let message = null;
    try {
      message = JSON.parse(sessionStorage.getItem(FLASH_KEY) || "null");
      sessionStorage.removeItem(FLASH_KEY);
    } catch (error) {
      message = null;
    }
    if (message && message.title) showMessage(message);
  }

  // -- talking to the service -----------------------------------------------------------------
  // Resolves {http, answer} for every outcome: a JSON envelope, an error page, or no answer.
  // ``json``: an object sent as a JSON body (instead of ``body``, a form).
  function request(method, url, {body: payload = null, onUpload = null, json = undefined} = {}) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open(method, url);
      xhr.setRequestHeader("Accept", "application/json");
      if (json !== undefined) {
        xhr.setRequestHeader("Content-Type", "application/json");
        payload = JSON.stringify(json);
      }
      if (method !== "GET") xhr.setRequestHeader("X-CSRFToken", csrfToken);
      if (onUpload && xhr.upload) {
        xhr.upload.addEventListener("progress", (event) => onUpload(event.loaded, event.lengthComputable ? event.total : 0));
      }
      xhr.addEventListener("load", () => {
        let answer = null;
        try {
          answer = JSON.parse(xhr.responseText).response;
        } catch (error) {
          answer = null;
        }
        if (!answer || typeof answer !== "object") {
          const code = HTTP_CODES[xhr.status] || (xhr.status >= 500 ? "INTERNAL_ERROR" : "BAD_REQUEST");
          answer = {status: "KO", error: code, description: "", data: null};
        }
        resolve({http: xhr.status, answer});
      });
      const failed = () => resolve({http: 0, answer: {status: "KO", error: "NETWORK", description: "", data: null}});
      xhr.addEventListener("error", failed);
      xhr.addEventListener("timeout", failed);
      xhr.addEventListener("abort", failed);
      xhr.send(payload);
    });
  }

  function setBusy(button, busy) {
    if (!button) return;
    button.disabled = busy;
    button.classList.toggle("is-busy", busy);
    if (busy) button.setAttribute("aria-busy", "true");
    else button.removeAttribute("aria-busy");
  }

  // -- drop zones -----------------------------------------------------------------------------
  const hasFiles = (event) => Boolean(event.dataTransfer) && Array.from(event.dataTransfer.types || []).includes("Files");

  function setFiles(input, files) {
    if (!files || !files.length) return;
    const transfer = new DataTransfer();
    transfer.items.add(files[0]);
    input.files = transfer.files;
    input.dispatchEvent(new Event("change", {bubbles: true}));
  }

  // The zone is a <label> for a visually hidden file input: a click, Enter or Space on the
  // focused input opens the file picker; dropping a file on it (or anywhere on a page with
  // one zone) chooses that file.
  function wireDropZone(zone, onFile) {
    zone.classList.remove("has-file", "has-preview");
    const input = zone.querySelector('input[type="file"]');
    const name = zone.querySelector("[data-file-name]");
    const action = zone.querySelector(".dropzone__action");
    let depth = 0;
    zone.addEventListener("dragenter", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      depth += 1;
      zone.classList.add("is-over");
    });
    zone.addEventListener("dragover", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
    });
    zone.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (!depth) zone.classList.remove("is-over");
    });
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      depth = 0;
      zone.classList.remove("is-over");
      setFiles(input, event.dataTransfer && event.dataTransfer.files);
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") { // Space opens the picker of a file input; Enter does too here, as on a button
        event.preventDefault();
        input.click();
      }
    });
    input.addEventListener("change", () => {
      const file = input.files[0];
      zone.classList.toggle("has-file", Boolean(file));
      if (name) name.textContent = file ? `${file.name} · ${bytes(file.size)}` : "";
      if (action && file && action.dataset.chooseText) action.textContent = action.dataset.chooseText;
      if (onFile) onFile(file);
    });
    return input;
  }

  function wirePageDrops() {
    window.addEventListener("dragover", (event) => {
      if (hasFiles(event)) event.preventDefault();
    });
    window.addEventListener("drop", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault(); // never let the browser leave the page to open the file
      const zones = document.querySelectorAll("[data-dropzone]");
      if (zones.length === 1 && !zones[0].contains(event.target)) {
        setFiles(zones[0].querySelector('input[type="file"]'), event.dataTransfer.files);
      }
    });
  }

  function tooLarge(file) {
    const limit = Number(body.dataset.uploadLimit || 0);
    if (!limit || file.size <= limit) return false;
    showMessage({level: "error", title: MESSAGES.REQUEST_TOO_LARGE?.[0] || "This file is too large",
      text: `It is ${bytes(file.size)}; the service accepts up to ${bytes(limit)}.`, code: "REQUEST_TOO_LARGE", scroll: true});
    return true;
  }

  // -- predict page ---------------------------------------------------------------------------
  function setUpPredict(form) {
    const zone = form.querySelector("[data-dropzone]");
    const canvas = document.getElementById("preview");
    const button = form.querySelector('button[type="submit"]');
    const result = document.getElementById("result");
    const box = document.getElementById("result-messages");
    const empty = result.querySelector("[data-empty]");
    const content = result.querySelector("[data-content]");
    const image = document.getElementById("annotated");
    const rows = document.querySelector("#faces tbody");
    const rowTemplate = document.getElementById("face-row-template");
    let previewed = 0;

    // The preview is drawn on a canvas: a blob: or data: URL would need img-src to allow it.
    async function preview(file) {
      const ticket = ++previewed;
      canvas.hidden = true;
      zone.classList.remove("has-preview");
      if (!file || !window.createImageBitmap) return;
      try {
        const bitmap = await createImageBitmap(file, {imageOrientation: "from-image"});
        if (ticket !== previewed) return;
        const scale = Math.min(1, 1200 / Math.max(bitmap.width, bitmap.height));
        canvas.width = Math.max(1, Math.round(bitmap.width * scale));
        canvas.height = Math.max(1, Math.round(bitmap.height * scale));
        canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
        if (bitmap.close) bitmap.close();
        canvas.hidden = false;
        zone.classList.add("has-preview");
      } catch (error) {
        canvas.hidden = true; // not something the browser can draw; the service has the last word
      }
    }

    // On a narrow screen the result card shows only once there is something in it.
    const settle = () => result.classList.toggle("is-empty", content.hidden && !box.children.length);
    const say = (message) => {
      const node = showMessage(message, box);
      settle();
      return node;
    };

    const input = wireDropZone(zone, (file) => {
      clearMessages(box);
      clearMessages();
      if (content.hidden) empty.hidden = false;
      settle();
      preview(file);
    });
    form.noValidate = true; // our messages replace the browser's bubble

    document.addEventListener("paste", (event) => {
      const files = Array.from((event.clipboardData && event.clipboardData.files) || []);
      const photo = files.find((file) => file.type.startsWith("image/"));
      if (photo) {
        event.preventDefault();
        setFiles(input, [photo]);
      }
    });

    function faceRow(face, index) {
      const row = rowTemplate.content.firstElementChild.cloneNode(true);
      const unknown = face.name === "unknown";
      row.classList.toggle("face--unknown", unknown);
      row.querySelector(".face__index").textContent = String(index);
      row.querySelector(".face__label").textContent = unknown ? "Unknown" : face.name;
      row.querySelector(".face__hint").textContent = unknown && face.candidate ? `closest: ${face.candidate}` : "";
      row.querySelector(".face__meter").value = Number(face.confidence) || 0;
      row.querySelector(".face__percent").textContent = percent(face.confidence || 0);
      // anonymous callers get no distance (api/rest.py): the cell stays empty
      row.querySelector(".face__distance").textContent = typeof face.distance === "number" ? face.distance.toFixed(3) : "";
      const box = face.box || {};
      row.querySelector(".face__box").textContent = [box.top, box.right, box.bottom, box.left].join(", ");
      return row;
    }

    function summary(faces) {
      const known = faces.filter((face) => face.name !== "unknown").map((face) => face.name);
      const unknown = faces.length - known.length;
      const parts = [...new Set(known)];
      if (unknown) parts.push(plural(unknown, "unknown person", "unknown people"));
      return `${plural(faces.length, "face", "faces")} found: ${parts.join(", ")}.`;
    }

    function showResult(answer) {
      const faces = answer.faces || [];
      if (!faces.length) {
        content.hidden = true;
        empty.hidden = true;
        image.removeAttribute("src");
        rows.replaceChildren();
        return false;
      }
      rows.replaceChildren(...faces.map((face, index) => faceRow(face, index + 1)));
      if (answer.image_url) image.src = answer.image_url;
      document.getElementById("result-summary").textContent = summary(faces);
      const model = document.getElementById("result-model");
      model.textContent = "";
      if (answer.model) {
        const code = document.createElement("code");
        code.textContent = answer.model;
        model.append("Recognised with model ", code, ".");
      }
      empty.hidden = true;
      content.hidden = false;
      return true;
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const file = input.files[0];
      if (!file) {
        say({level: "error", title: "Choose a photo first",
          text: "Choose a photo, or drop it on the dashed area, then press Recognise faces."});
        input.focus();
        return;
      }
      if (tooLarge(file)) return;
      setBusy(button, true);
      result.classList.add("is-busy");
      result.setAttribute("aria-busy", "true");
      say({level: "info", title: "Looking for faces…"});
      const {answer} = await request("POST", form.action, {body: new FormData(form)});
      setBusy(button, false);
      result.classList.remove("is-busy");
      result.removeAttribute("aria-busy");
      showResult(answer);
      if (answer.status === "OK" && !answer.error) {
        const names = Object.keys(answer.data || {});
        const unknown = (answer.faces || []).filter((face) => face.name === "unknown").length;
        say({level: "ok", title: `Recognised: ${names.join(", ")}`,
          text: unknown ? `${plural(unknown, "other face is", "other faces are")} not someone the model knows.` : ""});
      } else {
        say(described(answer));
      }
      document.getElementById("result-title").focus({preventScroll: true});
      if (result.getBoundingClientRect().top < 0 || result.getBoundingClientRect().top > window.innerHeight * 0.6) {
        result.scrollIntoView({block: "start"});
      }
    });
  }

  // -- train and tune pages -------------------------------------------------------------------
  function jobView(section) {
    const bar = document.getElementById("job-progress");
    const step = document.getElementById("job-step");
    const share = document.getElementById("job-percent");
    const count = document.getElementById("job-count");
    const elapsed = document.getElementById("job-elapsed");
    const remaining = document.getElementById("job-remaining");
    const badge = document.getElementById("job-state");
    const title = document.getElementById("job-title");
    const progress = section.querySelector("[data-progress]");
    let followed = performance.now();

    function state(name) {
      badge.textContent = name;
      badge.className = `badge badge--${name === "uploading" ? "queued" : name}`;
      section.dataset.state = name;
    }

    function set(done, total) {
      setBar(bar, share, done, total);
    }

    return {
      // Show an empty progress card for a new job (and drop the last job's result).
      start(kind) {
        section.querySelectorAll(".job-result, .alert").forEach((node) => node.remove());
        title.textContent = kind === "tune" ? "Tuning in progress" : "Training in progress";
        progress.hidden = false;
        section.hidden = false;
        state("uploading");
        step.textContent = "Uploading the zip";
        set(0, 0);
        count.textContent = "–";
        elapsed.textContent = "0 s";
        remaining.textContent = "estimating…";
        followed = performance.now();
        section.scrollIntoView({block: "nearest"});
      },

      uploading(loaded, total) {
        const seconds = (performance.now() - followed) / 1000;
        set(loaded, total);
        count.textContent = total ? `${bytes(loaded)} / ${bytes(total)}` : bytes(loaded);
        elapsed.textContent = clock(seconds);
        remaining.textContent = total && loaded ? clock((seconds / loaded) * (total - loaded)) : "estimating…";
        if (total && loaded >= total) step.textContent = "Checking the zip";
      },

      show(job) {
        const done = (job.progress && job.progress.done) || 0;
        const total = (job.progress && job.progress.total) || 0;
        state(job.state);
        step.textContent = capitalised(job.step === "queued" ? "waiting to start" : job.step);
        set(done, total);
        count.textContent = total ? `${done} / ${total}` : "–";
        // The job's start is the server's clock; fall back on ours when the two disagree.
        let seconds = job.started ? Date.now() / 1000 - job.started : NaN;
        if (!Number.isFinite(seconds) || seconds < -5 || seconds > 7 * 86400) seconds = (performance.now() - followed) / 1000;
        seconds = Math.max(0, seconds);
        elapsed.textContent = clock(seconds);
        if (job.step === "encoding photos" && done > 0 && done < total) {
          remaining.textContent = `about ${clock((seconds / done) * (total - done))}`;
        } else if (total && done >= total) {
          remaining.textContent = "finishing…";
        } else {
          remaining.textContent = "estimating…";
        }
      },

      // Poll the job until it ends, then let the server render the result (?job=<id>).
      async follow(url) {
        let failures = 0;
        for (;;) {
          const {http, answer} = await request("GET", url);
          if (answer.status === "OK" && answer.data) {
            failures = 0;
            const job = answer.data;
            this.show(job);
            if (job.state === "done" || job.state === "failed" || job.state === "cancelled") {
              try {
                sessionStorage.setItem(FINISHED_KEY, job.id); // the next page opens the predict page in a moment
              } catch (error) { /* then it does not */ }
              const page = job.kind === "tune" ? section.dataset.tuneUrl : section.dataset.trainUrl;
              window.location.replace(`${page}?job=${encodeURIComponent(job.id)}`);
              return;
            }
          } else if (http === 401 || http === 404) { // logged out meanwhile, or the job is gone
            showMessage({...described(answer), scroll: true});
            return;
          } else {
            failures += 1;
            if (failures === 3) {
              showMessage({level: "warning", title: "Lost contact with the service",
                text: "Still trying: the training goes on without this page.", code: answer.error});
            }
          }
          await sleep(failures ? Math.min(5000, 1000 * failures) : 700);
        }
      },
    };
  }

  function setUpTrain(form) {
    const section = document.getElementById("job");
    const view = jobView(section);
    const button = form.querySelector('button[type="submit"]');
    const input = wireDropZone(form.querySelector("[data-dropzone]"), () => clearMessages());
    form.noValidate = true;

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const file = input.files[0];
      if (!file) {
        showMessage({level: "error", title: "Choose a zip first",
          text: "Choose a .zip of photos, or drop it on the dashed area, then start again.", scroll: true});
        input.focus();
        return;
      }
      if (tooLarge(file)) return;
      setBusy(button, true);
      form.classList.add("is-locked");
      form.inert = true;
      clearMessages();
      view.start(form.dataset.kind);
      const {answer} = await request("POST", form.action, {body: new FormData(form),
        onUpload: (loaded, total) => view.uploading(loaded, total)});
      if (answer.status === "OK" && answer.job_url) {
        section.dataset.jobUrl = answer.job_url;
        await view.follow(answer.job_url);
        return;
      }
      const running = answer.error === "TRAINING_IN_PROGRESS" && answer.data && answer.data.job;
      showMessage({...described(answer), scroll: true});
      if (running) {
        await view.follow(`${section.dataset.jobsUrl}/${encodeURIComponent(answer.data.job)}`);
        return;
      }
      section.hidden = true;
      form.classList.remove("is-locked");
      form.inert = false;
      setBusy(button, false);
    });
  }

  function setUpJobPage(section) {
    const state = section.dataset.state;
    if (section.dataset.jobUrl && (state === "queued" || state === "running")) {
      setBusy(document.getElementById("train-button"), true);
      const form = document.getElementById("train-form");
      if (form) {
        form.classList.add("is-locked");
        form.inert = true;
      }
      jobView(section).follow(section.dataset.jobUrl);
    }
  }

  // After a training, open the predict page in a few seconds, as the original service did;
  // "Stay on this page" cancels it.
  // True once, on the page a finished job's progress led to (not when an old job is opened).
  function justFinished(section) {
    let finished = null;
    try {
      finished = sessionStorage.getItem(FINISHED_KEY);
      if (finished === section.dataset.jobId) sessionStorage.removeItem(FINISHED_KEY);
    } catch (error) {
      finished = null;
    }
    return Boolean(section.dataset.jobId) && finished === section.dataset.jobId;
  }

  function setUpRedirect(box) {
    box.hidden = false;
    let seconds = Number(box.dataset.seconds) || 8;
    const text = document.getElementById("redirect-text");
    const stay = document.getElementById("redirect-stay");
    const tell = () => {
      text.textContent = `Opening the predict page in ${seconds} s.`;
    };
    tell();
    const timer = window.setInterval(() => {
      seconds -= 1;
      if (seconds <= 0) {
        window.clearInterval(timer);
        window.location.assign(box.dataset.redirectTo);
      } else {
        tell();
      }
    }, 1000);
    stay.addEventListener("click", () => {
      window.clearInterval(timer);
      text.textContent = "You stay on this page.";
      stay.hidden = true;
    });
  }

  // -- models page ----------------------------------------------------------------------------
  function confirmDelete(dialog, model, summary) {
    if (!dialog || typeof dialog.showModal !== "function") {
      return Promise.resolve(window.confirm(`Delete model ${model}? This cannot be undone.`));
    }
    dialog.querySelector("[data-confirm-model]").textContent = model;
    dialog.querySelector("[data-confirm-summary]").textContent = summary || "";
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "delete"), {once: true});
      dialog.showModal();
    });
  }

  function setUpModels(forms) {
    const dialog = document.getElementById("confirm-delete");
    forms.forEach((form) => form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const model = form.dataset.model;
      const deleting = form.dataset.action === "delete";
      const button = form.querySelector("button");
      if (deleting && !(await confirmDelete(dialog, model, form.dataset.summary))) {
        button.focus();
        return;
      }
      setBusy(button, true);
      const {answer} = await request("POST", form.action);  // the form's own address: a POST route for both
      if (answer.status === "OK") {
        flash(deleting ? {level: "ok", title: `Model ${model} was deleted`}
          : {level: "ok", title: `Model ${model} is now the active model`, text: "Predictions use it from now on."});
        window.location.reload();
        return;
      }
      setBusy(button, false);
      showMessage({...described(answer), scroll: true});
    }));
  }

  // -- people of the active model (models page and person page) -------------------------------
  function confirmForget(dialog, person) {
    if (!dialog || typeof dialog.showModal !== "function") {
      return Promise.resolve(window.confirm(`Forget ${person} everywhere? This cannot be undone.`));
    }
    dialog.querySelector("[data-confirm-person]").textContent = person;
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "forget"), {once: true});
      dialog.showModal();
    });
  }

  const PEOPLE_DONE = {
    enrol: (person, data) => ({level: "ok", title: `${plural((data.added || []).length, "photo", "photos")} of ${person} added`,
                               text: (data.skipped || []).length ? "Some photos were skipped:" : "",
                               list: (data.skipped || []).map((item) => `${item.file}: ${item.reason}`)}),
    remove: (person) => ({level: "ok", title: `${person} was removed from the active model`}),
    forget: (person) => ({level: "ok", title: `${person} was forgotten everywhere`}),
    "remove-photo": (person) => ({level: "ok", title: `A photo of ${person} was removed`}),
    rename: (person, data) => ({level: "ok", title: `${person} is now called ${data.name}`}),
  };

  function setUpPeople(forms) {
    const dialog = document.getElementById("confirm-forget");
    forms.forEach((form) => {
      const action = form.dataset.peopleAction;
      const person = form.dataset.person;
      const send = async (button) => {
        if (action === "forget" && !(await confirmForget(dialog, person))) {
          if (button) button.focus();
          return;
        }
        setBusy(button, true);
        const payload = action === "enrol" || action === "rename" ? new FormData(form) : null;
        const {answer} = await request("POST", form.action, {body: payload});
        if (answer.status === "OK") {
          flash(PEOPLE_DONE[action](person, answer.data || {}));
          if (action === "rename") window.location.assign(`${form.action.replace(/\/people\/.*$/, "")}/people/${encodeURIComponent(answer.data.name)}`);
          else window.location.reload();
          return;
        }
        setBusy(button, false);
        showMessage({...described(answer), scroll: true});
      };
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        send(form.querySelector("button"));
      });
      const input = form.querySelector("input[type=file]");
      if (input) input.addEventListener("change", () => { if (input.files.length) send(null); });
    });
  }
  // What the video page's script (video.js) reuses.
  window.PyRecognizer = {request, setBar, wireDropZone, showMessage, clearMessages, described, setBusy, tooLarge, plural, sleep};

  // -- start ----------------------------------------------------------------------------------
  showFlash();
  wirePageDrops();
  const predictForm = document.getElementById("predict-form");
  if (predictForm) setUpPredict(predictForm);
  const trainForm = document.getElementById("train-form");
  if (trainForm) setUpTrain(trainForm);
  const jobSection = document.getElementById("job");
  if (jobSection) setUpJobPage(jobSection);
  if (jobSection && justFinished(jobSection)) {
    document.getElementById("job-title").focus({preventScroll: true});
    const redirect = document.getElementById("redirect");
    if (redirect) setUpRedirect(redirect);
  }
  const modelForms = document.querySelectorAll("form[data-action]");
  if (modelForms.length) setUpModels(modelForms);
  const peopleForms = document.querySelectorAll("form[data-people-action]");
  if (peopleForms.length) setUpPeople(peopleForms);
})();
