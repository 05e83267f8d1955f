// The inbox page (assign a group or chosen faces, ignore a group, undo an action) and the
// person page (remove a negative). Uses app.js's helpers (window.PyRecognizer); forms post
// the same fields without JavaScript.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const kit = window.PyRecognizer;
  if (!kit) return;
  const FLASH_KEY = "pyrecognizer.flash";  // app.js shows it after the reload

  function reloadWith(message) {
    try {
      sessionStorage.setItem(FLASH_KEY, JSON.stringify(message));
    } catch (error) { /* private mode: no message after the reload */ }
    window.location.reload();
  }

  function done(kind, data) {
    if (kind === "assign") {
      return {level: "ok", title: `${kit.plural((data.added || []).length, "face", "faces")} enrolled as ${data.name}`,
              text: (data.skipped || []).length ? "Some faces were not enrolled:" : "",
              list: (data.skipped || []).map((item) => item.reason)};
    }
    if (kind === "ignore") return {level: "ok", title: "The group is ignored", text: "Faces like these stay unknown."};
    if (kind === "undo") return {level: "ok", title: `The ${data.kind} was undone`, text: `Model ${data.model} is active again.`};
    return {level: "ok", title: "Done"};
  }

  document.querySelectorAll("form[data-inbox-action]").forEach((form) => {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const submitter = event.submitter || form.querySelector("button");
      let kind = form.dataset.inboxAction;
      let url = form.action;
      const payload = new FormData(form);
      if (submitter && submitter.hasAttribute("data-ignore")) {
        kind = "ignore";
        url = submitter.formAction;
      } else if (submitter && submitter.hasAttribute("data-selected")) {
        if (!payload.getAll("faces").length) {
          kit.showMessage({level: "warning", title: "No face is selected", text: "Tick the faces to enrol first.", scroll: true});
          return;
        }
        url = submitter.formAction;
      } else if (kind === "assign") {
        payload.delete("faces");
      }
      kit.setBusy(submitter, true);
      const {answer} = await kit.request("POST", url, {body: payload});
      if (answer.status === "OK") {
        reloadWith(kind === "negative" ? {level: "ok", title: "The negative was removed"} : done(kind, answer.data || {}));
        return;
      }
      kit.setBusy(submitter, false);
      kit.showMessage({...kit.described(answer), scroll: true});
    });
  });
});
