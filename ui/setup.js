// Setup checklist: one row per check, green or red; a red row says how to fix it and, when a
// System Settings pane fixes it, offers a button that opens that pane. Re-checks on focus, so
// coming back from System Settings shows the new state.
"use strict";

(() => {
  const { call, el, showError } = SB;
  const list = document.getElementById("check-list");
  const summary = document.getElementById("summary");
  const progress = document.getElementById("progress");
  const allDone = document.getElementById("all-done");
  const PANE_BUTTON = {
    full_disk_access: "Open Full Disk Access",
    automation: "Open Automation",
  };

  function row(check) {
    return el(
      "li",
      { class: "check", dataset: { test: "check", id: check.id, ok: String(check.ok) } },
      el("span", { class: "icon", "aria-label": check.ok ? "OK" : "Needs attention" }, check.ok ? "✓" : "!"),
      el(
        "div",
        { class: "body" },
        el("div", { class: "label" }, check.label),
        el("div", { class: "detail selectable" }, check.detail),
        !check.ok && check.fix ? el("div", { class: "fix", dataset: { test: "fix" } }, check.fix) : null,
      ),
      !check.ok && check.pane
        ? el("button", {
            class: "small",
            dataset: { test: "open-pane", pane: check.pane },
            onclick: () => openPane(check.pane),
          }, PANE_BUTTON[check.pane] || "Open System Settings")
        : null,
    );
  }

  async function openPane(pane) {
    try {
      await call("open_settings_pane", { pane });
      showError(null);
    } catch (err) {
      showError(err);
    }
  }

  async function check() {
    try {
      const checks = await call("setup_checks");
      const ok = checks.filter((c) => c.ok).length;
      list.replaceChildren(...checks.map(row));
      summary.textContent = ok === checks.length ? "All set" : `${ok} of ${checks.length} ready`;
      progress.style.width = `${checks.length ? (100 * ok) / checks.length : 0}%`;
      allDone.hidden = ok !== checks.length;
      showError(null);
    } catch (err) {
      showError(err);
    }
  }

  document.getElementById("recheck").addEventListener("click", check);
  window.addEventListener("focus", check);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) check();
  });
  check();
})();
