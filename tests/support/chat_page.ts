/**
 * ws-server's chat page as the browser tests see it in a Chromium tab
 * (see ../_browser.ts): connected yet, has a line been shown, type a line.
 *
 * @module
 */
import type { Tab } from "../_browser.ts";

/** Resolves once the page says it is connected. */
export function connected(tab: Tab): Promise<boolean> {
  return tab.evaluate(`new Promise((resolve) => {
    const status = document.getElementById("status");
    const check = () => status.className === "on" && (resolve(true), true);
    if (!check()) {
      new MutationObserver(check).observe(status, { attributes: true, childList: true, subtree: true });
    }
  })`);
}

/**
 * Resolves with the class of the chat line reading `text` once it is shown:
 * `"self"` for the tab's own line, `""` for one from someone else.
 */
export function shown(tab: Tab, text: string): Promise<string> {
  return tab.evaluate(`new Promise((resolve) => {
    const log = document.getElementById("log");
    const check = () => {
      const li = [...log.children].find((li) => li.textContent === ${JSON.stringify(text)});
      if (li) resolve(li.className);
      return li !== undefined;
    };
    if (!check()) new MutationObserver(check).observe(log, { childList: true, subtree: true });
  })`);
}

/** Focuses the message box and types `text` followed by Enter, as a person would. */
export async function say(tab: Tab, text: string): Promise<void> {
  await tab.cdp.send("Page.bringToFront", {}, tab.sessionId);
  await tab.evaluate(`document.getElementById("text").focus()`);
  await tab.type(text);
}
