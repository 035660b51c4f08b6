// Shared helpers for the Second Brain pages: calling the app, listening to it, building DOM.
// Every piece of text from the app goes in through textContent, never as HTML.
"use strict";

const SB = (() => {
  const tauri = window.__TAURI__;

  /** Calls a command of the app; rejects with the app's error sentence. */
  async function call(command, args) {
    if (!tauri) throw new Error("This page only works inside the Second Brain app.");
    try {
      return await tauri.core.invoke(command, args || {});
    } catch (err) {
      throw new Error(typeof err === "string" ? err : String((err && err.message) || err));
    }
  }

  /** Runs `handler` whenever the app emits `event`. */
  function on(event, handler) {
    if (tauri && tauri.event) tauri.event.listen(event, handler);
  }

  /** Creates an element: el("li", {class: "x", dataset: {id: 1}}, child, "text", …). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** "just now", "2 min ago", "3 hr ago", "yesterday", "4 days ago". */
  function ago(iso, now) {
    const then = Date.parse(iso);
    if (Number.isNaN(then)) return "";
    const seconds = Math.max(0, Math.round(((now || Date.now()) - then) / 1000));
    if (seconds < 45) return "just now";
    const minutes = Math.round(seconds / 60);
    if (minutes < 60) return `${minutes} min ago`;
    const hours = Math.round(minutes / 60);
    if (hours < 24) return `${hours} hr ago`;
    const days = Math.round(hours / 24);
    return days === 1 ? "yesterday" : `${days} days ago`;
  }

  /** "1 message", "3 messages". */
  function plural(n, word) {
    return `${n} ${word}${n === 1 ? "" : "s"}`;
  }

  /** Shows or hides the page's error banner (#page-error). */
  function showError(err) {
    const banner = document.getElementById("page-error");
    if (!banner) return;
    banner.textContent = err ? err.message || String(err) : "";
    banner.hidden = !err;
  }

  return { call, on, el, ago, plural, showError };
})();
