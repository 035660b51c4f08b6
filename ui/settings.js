// Settings window. The form is a draft: Save sends every field at once and the app validates
// them all (nothing is half-saved); its error sentence is shown inline. The API key is sent,
// never read back: the page only knows whether one is set. Strangers who text while the
// window is open appear live (`status-changed`).
"use strict";

(() => {
  const { call, on, el, ago, showError } = SB;
  const $ = (id) => document.getElementById(id);
  const form = $("settings-form");
  const vault = $("vault-path");
  const model = $("model");
  const timeout = $("timeout");
  const apiKey = $("api-key");
  const newSender = $("new-sender");
  const formError = $("form-error");
  const savedNote = $("saved-note");

  let senders = [];
  let allowedGroups = [];

  function setFormError(message, field) {
    formError.textContent = message || "";
    savedNote.hidden = true;
    for (const input of form.querySelectorAll("input")) input.classList.remove("invalid");
    if (field) field.classList.add("invalid");
  }

  function fieldFor(message) {
    if (message.startsWith("Vault folder")) return vault;
    if (message.startsWith("Model")) return model;
    if (message.startsWith("Session timeout")) return timeout;
    if (message.startsWith("Allowed senders")) return newSender;
    if (message.startsWith("API key")) return apiKey;
    if (message.startsWith("Digest time")) return $("digest-time");
    if (message.startsWith("Digest recipient")) return $("digest-recipient");
    return null;
  }

  function renderSenders() {
    const rows = senders.map((handle, index) =>
      el(
        "li",
        { dataset: { test: "sender", handle } },
        el("span", { class: "handle selectable" }, handle),
        el("button", {
          type: "button",
          class: "remove",
          title: `Remove ${handle}`,
          "aria-label": `Remove ${handle}`,
          dataset: { test: "remove-sender" },
          onclick: () => {
            senders.splice(index, 1);
            renderSenders();
          },
        }, "−"),
      ),
    );
    $("sender-list").replaceChildren(
      ...(rows.length ? rows : [el("li", { class: "list-empty" }, "Nobody yet: add your own number first.")]),
    );
  }

  // Allowed groups are shown by chat id (the settings keep no names); removing one takes
  // effect on Save, like removing a sender.
  function renderAllowedGroups() {
    $("allowed-groups").hidden = allowedGroups.length === 0;
    $("allowed-group-list").replaceChildren(
      ...allowedGroups.map((guid, index) =>
        el(
          "li",
          { dataset: { test: "allowed-group", guid } },
          el("span", { class: "handle selectable" }, guid),
          el("button", {
            type: "button",
            class: "remove",
            title: `Remove ${guid}`,
            "aria-label": `Remove ${guid}`,
            dataset: { test: "remove-group" },
            onclick: () => {
              allowedGroups.splice(index, 1);
              renderAllowedGroups();
            },
          }, "−"),
        ),
      ),
    );
  }

  function renderKey(isSet) {
    $("key-state").dataset.set = String(isSet);
    $("key-state-text").textContent = isSet ? "Key set" : "No key set";
    $("set-key").textContent = isSet ? "Replace" : "Set";
    $("clear-key").hidden = !isSet;
    apiKey.value = "";
  }

  function fill(view) {
    vault.value = view.vault_path;
    model.value = view.model;
    timeout.value = view.session_timeout_minutes;
    senders = [...view.allowed_senders];
    $("allow-sms").checked = Boolean(view.allow_sms);
    $("read-linked-pages").checked = Boolean(view.read_linked_pages);
    allowedGroups = [...(view.allowed_groups || [])];
    renderSenders();
    renderAllowedGroups();
    renderKey(view.api_key_set);
    fillDigest(view.digest || {});
  }

  // The digest's switch, time and recipient (one of the allowed senders).
  function fillDigest(digest) {
    $("digest-enabled").checked = Boolean(digest.enabled);
    $("digest-time").value = digest.time || "08:00";
    const recipient = $("digest-recipient");
    recipient.replaceChildren(...senders.map((handle) => el("option", { value: handle }, handle)));
    recipient.value = digest.recipient || senders[0] || "";
  }

  function digestForm() {
    return {
      enabled: $("digest-enabled").checked,
      time: $("digest-time").value || null,
      recipient: $("digest-recipient").value || null,
    };
  }

  async function loadStrangers() {
    try {
      const strangers = await call("recent_strangers");
      $("strangers").hidden = strangers.length === 0;
      $("stranger-list").replaceChildren(
        ...strangers.map((s) =>
          el(
            "li",
            { dataset: { test: "stranger", handle: s.handle } },
            el("span", { class: "handle selectable" }, s.handle),
            el("span", { class: "hint" }, ago(s.last_seen)),
            el("button", {
              type: "button",
              class: "small",
              dataset: { test: "allow-stranger" },
              onclick: () => allow(s.handle),
            }, "Allow"),
          ),
        ),
      );
    } catch (err) {
      showError(err);
    }
  }

  async function loadGroups() {
    try {
      const groups = await call("recent_groups");
      $("groups").hidden = groups.length === 0;
      $("group-list").replaceChildren(
        ...groups.map((g) =>
          el(
            "li",
            { dataset: { test: "seen-group", guid: g.guid } },
            el("span", { class: "handle" }, g.name || "Unnamed group"),
            el("span", { class: "hint selectable" }, g.members.join(", ")),
            el("span", { class: "hint" }, ago(g.last_seen)),
            el("button", {
              type: "button",
              class: "small",
              dataset: { test: "allow-group" },
              onclick: () => allowGroup(g.guid),
            }, "Allow this group"),
          ),
        ),
      );
    } catch (err) {
      showError(err);
    }
  }

  async function allowGroup(guid) {
    try {
      const view = await call("allow_group", { guid });
      for (const g of view.allowed_groups) if (!allowedGroups.includes(g)) allowedGroups.push(g);
      renderAllowedGroups();
      loadGroups();
    } catch (err) {
      setFormError(err.message, null);
    }
  }

  async function allow(handle) {
    try {
      const view = await call("allow_sender", { handle });
      for (const h of view.allowed_senders) if (!senders.includes(h)) senders.push(h);
      renderSenders();
      loadStrangers();
    } catch (err) {
      setFormError(err.message, null);
    }
  }

  async function load() {
    try {
      fill(await call("get_settings"));
      setFormError("");
      showError(null);
    } catch (err) {
      showError(err);
    }
    loadStrangers();
    loadGroups();
  }

  function addSender() {
    const handle = newSender.value.trim();
    if (!handle) return;
    if (!senders.includes(handle)) senders.push(handle);
    newSender.value = "";
    renderSenders();
  }

  $("add-sender").addEventListener("click", addSender);
  newSender.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      addSender();
    }
  });

  $("choose-vault").addEventListener("click", async () => {
    try {
      const picked = await call("pick_vault_folder");
      if (picked) vault.value = picked;
    } catch (err) {
      setFormError(err.message, vault);
    }
  });

  $("set-key").addEventListener("click", async () => {
    try {
      await call("set_api_key", { key: apiKey.value });
      renderKey(true);
      setFormError("");
    } catch (err) {
      setFormError(err.message, apiKey);
    }
  });
  $("clear-key").addEventListener("click", async () => {
    try {
      await call("clear_api_key");
      renderKey(false);
    } catch (err) {
      setFormError(err.message, null);
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (newSender.value.trim()) addSender();
    const minutes = Number.parseInt(timeout.value, 10);
    const settings = {
      vault_path: vault.value,
      model: model.value,
      allowed_senders: senders,
      session_timeout_minutes: Number.isFinite(minutes) ? Math.min(Math.max(minutes, 0), 4294967295) : 0,
      allow_sms: $("allow-sms").checked,
      read_linked_pages: $("read-linked-pages").checked,
      digest: digestForm(),
      allowed_groups: allowedGroups,
    };
    $("save").disabled = true;
    try {
      const saved = await call("save_settings", { settings });
      fill(saved);
      setFormError("");
      savedNote.hidden = false;
      setTimeout(() => (savedNote.hidden = true), 2500);
    } catch (err) {
      setFormError(err.message, fieldFor(err.message));
    } finally {
      $("save").disabled = false;
    }
  });

  $("revert").addEventListener("click", load);
  // A stranger texting shows up here while the window is open.
  on("status-changed", loadStrangers);
  on("status-changed", loadGroups);
  load();
})();
