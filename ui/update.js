// Software Update window: checks when it opens (and on "Check Again"), then shows the app's
// sentence — up to date, or the new version with its notes and an Install button. Installing
// is the app's: it downloads and verifies first, waits for texts in progress, then restarts;
// a refused or failed install comes back as a sentence and nothing changed.
"use strict";

(() => {
  const { call, on, showError } = SB;
  const $ = (id) => document.getElementById(id);
  const sentence = $("sentence");
  const install = $("install");
  const check = $("check");

  function show(view) {
    sentence.textContent = view.sentence;
    sentence.dataset.kind = view.kind;
    const available = view.kind === "available";
    $("notes").textContent = (available && view.notes) || "";
    $("notes-box").hidden = !(available && view.notes);
    install.hidden = !available;
  }

  async function run(command, busy) {
    sentence.textContent = busy;
    sentence.dataset.kind = "checking";
    install.disabled = check.disabled = true;
    try {
      show(await call(command));
      showError(null);
    } catch (err) {
      showError(err);
    } finally {
      install.disabled = check.disabled = false;
    }
  }

  check.addEventListener("click", () => run("check_for_updates", "Checking for updates…"));
  install.addEventListener("click", () =>
    run("install_update", "Downloading, then waiting for texts in progress…"));
  // The daily check found a version while the window is open.
  on("update-changed", () => run("check_for_updates", "Checking for updates…"));
  run("check_for_updates", "Checking for updates…");
})();
