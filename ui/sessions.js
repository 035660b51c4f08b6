// Sessions window: the upcoming reminders (title, when, how soon; Cancel per row), one row per
// active conversation, Clear per row, Clear All with an in-page confirmation, live updates on
// `reminders-changed` (upcoming), `sessions-changed` (rows) and `status-changed` (the status
// pill), relative times refreshed every 30 s.
"use strict";

(() => {
  const { call, on, el, ago, plural, showError } = SB;
  const STATE_LABEL = { waiting: "Waiting for your answer", working: "Working", idle: "Idle" };

  const list = document.getElementById("session-list");
  const empty = document.getElementById("empty-state");
  const count = document.getElementById("session-count");
  const clearAll = document.getElementById("clear-all");
  const confirmBar = document.getElementById("confirm-bar");
  const confirmText = document.getElementById("confirm-text");
  const statusLine = document.getElementById("status-line");
  const statusText = document.getElementById("status-text");
  const pauseToggle = document.getElementById("pause-toggle");

  const upcoming = document.getElementById("upcoming");
  const reminderList = document.getElementById("reminder-list");

  let reminders = [];
  let sessions = [];
  let paused = false;
  let loaded = false;

  // A contact name or e-mail shows its first letter; a phone number shows a person glyph.
  function avatarContent(who) {
    const letter = Array.from(who.trim())[0] || "";
    if (letter && /\p{L}/u.test(letter)) return letter.toUpperCase();
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 20 20");
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", "M10 10.2a3.6 3.6 0 1 0 0-7.2 3.6 3.6 0 0 0 0 7.2Zm0 1.8c-3.4 0-6 1.8-6 4.1 0 .5.4.9.9.9h10.2c.5 0 .9-.4.9-.9 0-2.3-2.6-4.1-6-4.1Z");
    svg.append(path);
    return svg;
  }

  function row(session) {
    const hasText = typeof session.text === "string" && session.text.trim() !== "";
    return el(
      "li",
      { class: "session", dataset: { test: "session-row", chat: session.chat, state: session.state } },
      el("div", { class: "avatar", dataset: { state: session.state }, "aria-hidden": "true" }, avatarContent(session.who)),
      el(
        "div",
        { class: "body" },
        el(
          "div",
          { class: "line1" },
          el("span", { class: "who selectable", dataset: { test: "who" } }, session.who),
          el("span", { class: `badge ${session.state}`, dataset: { test: "state" } },
            STATE_LABEL[session.state] || session.state),
        ),
        el("div", { class: hasText ? "text selectable" : "text none", dataset: { test: "text" } },
          hasText ? session.text : "Nothing pending"),
        el(
          "div",
          { class: "meta" },
          el("span", { class: "ago", dataset: { test: "ago", at: session.last_activity } }, ago(session.last_activity)),
          " · ",
          el("span", { dataset: { test: "message-count" } }, plural(session.message_count, "message")),
        ),
      ),
      el("button", {
        class: "small",
        dataset: { test: "clear-session" },
        title: `End the session with ${session.who}`,
        onclick: () => clearOne(session.chat),
      }, "Clear"),
    );
  }

  /** "now", "in 5 min", "in 3 hr", "tomorrow", "in 4 days". */
  function until(iso, now) {
    const at = Date.parse(iso);
    if (Number.isNaN(at)) return "";
    const seconds = Math.max(0, Math.round((at - (now || Date.now())) / 1000));
    if (seconds < 45) return "now";
    const minutes = Math.round(seconds / 60);
    if (minutes < 60) return `in ${minutes} min`;
    const hours = Math.round(minutes / 60);
    if (hours < 24) return `in ${hours} hr`;
    const days = Math.round(hours / 24);
    return days === 1 ? "tomorrow" : `in ${days} days`;
  }

  function when(iso) {
    const options = { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" };
    return new Date(iso).toLocaleString([], options);
  }

  function reminderRow(reminder) {
    return el(
      "li",
      { class: "session reminder", dataset: { test: "reminder-row", path: reminder.path } },
      el(
        "div",
        { class: "body" },
        el("div", { class: "line1" },
          el("span", { class: "who selectable", dataset: { test: "reminder-title" } }, reminder.title)),
        el(
          "div",
          { class: "meta" },
          el("span", { dataset: { test: "reminder-when" } }, when(reminder.due)),
          " · ",
          el("span", { class: "until", dataset: { test: "reminder-until", at: reminder.due } }, until(reminder.due)),
        ),
      ),
      el("button", {
        class: "small",
        dataset: { test: "cancel-reminder" },
        title: `Cancel the reminder of ${reminder.title} (the note keeps everything else)`,
        onclick: () => cancelReminder(reminder.path),
      }, "Cancel"),
    );
  }

  function renderReminders() {
    reminderList.replaceChildren(...reminders.map(reminderRow));
    upcoming.hidden = reminders.length === 0;
  }

  async function refreshReminders() {
    try {
      reminders = await call("list_reminders");
      renderReminders();
    } catch (err) {
      showError(err);
    }
  }

  async function cancelReminder(path) {
    try {
      await call("cancel_reminder", { path });
      reminders = reminders.filter((r) => r.path !== path);
      renderReminders();
    } catch (err) {
      showError(err);
    }
    refreshReminders();
  }

  function render() {
    list.replaceChildren(...sessions.map(row));
    const none = sessions.length === 0;
    list.hidden = none;
    empty.hidden = !loaded || !none;
    clearAll.hidden = none || !confirmBar.hidden;
    if (none) hideConfirm();
    count.textContent = loaded ? (none ? "None active" : `${plural(sessions.length, "conversation")} active`) : "";
  }

  function renderStatus(status) {
    paused = status.paused;
    statusText.textContent = status.line;
    statusLine.title = status.line;
    statusLine.dataset.kind = status.paused ? "paused" : status.line.startsWith("Needs setup") ? "setup" : "running";
    pauseToggle.textContent = status.paused ? "Resume" : "Pause";
  }

  async function refresh() {
    refreshStatus();
    refreshReminders();
    try {
      sessions = await call("list_sessions");
      loaded = true;
      render();
      showError(null);
    } catch (err) {
      showError(err);
    }
  }

  async function refreshStatus() {
    try {
      renderStatus(await call("status"));
    } catch (err) {
      showError(err);
    }
  }

  async function clearOne(chat) {
    try {
      await call("clear_session", { chat });
      sessions = sessions.filter((s) => s.chat !== chat);
      render();
    } catch (err) {
      showError(err);
    }
    refresh();
  }

  function showConfirm() {
    confirmText.textContent = `Clear ${plural(sessions.length, "session")}? Pending questions are dropped.`;
    confirmBar.hidden = false;
    clearAll.hidden = true;
    document.getElementById("cancel-clear-all").focus();
  }

  function hideConfirm() {
    confirmBar.hidden = true;
    clearAll.hidden = sessions.length === 0;
  }

  clearAll.addEventListener("click", showConfirm);
  document.getElementById("cancel-clear-all").addEventListener("click", hideConfirm);
  document.getElementById("confirm-clear-all").addEventListener("click", async () => {
    hideConfirm();
    try {
      await call("clear_all_sessions");
      sessions = [];
      render();
    } catch (err) {
      showError(err);
    }
    refresh();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !confirmBar.hidden) hideConfirm();
  });

  pauseToggle.addEventListener("click", async () => {
    try {
      renderStatus(await call("set_paused", { paused: !paused }));
    } catch (err) {
      showError(err);
    }
  });

  // Relative times drift; refresh their text without re-fetching.
  setInterval(() => {
    for (const node of list.querySelectorAll(".ago")) node.textContent = ago(node.dataset.at);
    for (const node of reminderList.querySelectorAll(".until")) node.textContent = until(node.dataset.at);
  }, 30000);

  on("sessions-changed", refresh);
  on("status-changed", refreshStatus);
  on("reminders-changed", refreshReminders);
  window.addEventListener("focus", refresh);
  refresh();
})();
