// The list of the user's chats: search, rename, archive, delete. Links are plain page loads.

import { h } from "../lib/dom.js";
import { apiFetch } from "../lib/http.js";
import { debounce, icon } from "./util.js";

export class Sidebar {
  /**
   * @param {object} config  sessions (first page), current session id or null, agents (by slug)
   */
  constructor({ sessions, currentId, agents, onRenamed }) {
    this.list = document.getElementById("session-list");
    this.empty = document.getElementById("session-empty");
    this.search = document.getElementById("session-search");
    this.activeTab = document.getElementById("show-active");
    this.archivedTab = document.getElementById("show-archived");
    this.dialog = document.getElementById("confirm-delete");
    this.currentId = currentId;
    this.agents = agents;
    this.onRenamed = onRenamed;
    this.archived = false;
    this.sessions = sessions;
    this.request = 0;
    this.render();

    this.search.addEventListener("input", debounce(() => this.refresh(), 200));
    this.search.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.search.value) {
        this.search.value = "";
        this.refresh();
      }
    });
    this.activeTab.addEventListener("click", () => this.showArchived(false));
    this.archivedTab.addEventListener("click", () => this.showArchived(true));
    this.list.addEventListener("click", (event) => this.onClick(event));
    document.addEventListener("click", (event) => {
      // One open menu at a time; a click elsewhere closes it.
      if (!event.target.closest(".item-menu")) this.closeMenus();
    });
    this.list.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.list.querySelector(".menu:not([hidden])")) {
        event.stopPropagation();
        this.closeMenus(true);
      }
    });
    this.setupDrawer();
  }

  showArchived(archived) {
    this.archived = archived;
    this.activeTab.setAttribute("aria-pressed", String(!archived));
    this.archivedTab.setAttribute("aria-pressed", String(archived));
    this.refresh();
  }

  /** Fetch the list again with the current search and tab; the newest answer wins. */
  async refresh() {
    const ticket = ++this.request;
    const params = new URLSearchParams({ q: this.search.value.trim(), archived: this.archived ? "1" : "0" });
    try {
      const data = await apiFetch("GET", `/s/list.json?${params}`);
      if (ticket !== this.request) return;
      this.sessions = data.sessions;
      this.render();
    } catch (error) {
      console.warn("could not load the chat list:", error);
    }
  }

  render() {
    if (this.list.querySelector(".session-rename")) return; // renaming: the rename renders when done
    const rows = this.sessions.map((session) => this.row(session));
    this.list.replaceChildren(...rows);
    this.empty.hidden = rows.length > 0;
    this.empty.textContent = this.search.value.trim()
      ? "No chat matches."
      : this.archived ? "No archived chats." : "No chats yet.";
  }

  row(session) {
    const agent = this.agents.get(session.agent);
    const title = session.title || "New chat";
    const current = session.id === this.currentId;
    const link = h("a", { class: "session-link", href: `/s/${session.id}/`, "aria-current": current ? "page" : null },
      h("span", { class: "session-emoji", "aria-hidden": "true", text: agent?.emoji || "💬" }),
      h("span", { class: "session-title", text: title }));
    const menuId = `session-menu-${session.id}`;
    const menuButton = h("button", {
      type: "button", class: "icon-button menu-button", "aria-label": `Actions for ${title}`, title: "Actions",
      "aria-haspopup": "true", "aria-expanded": "false", "aria-controls": menuId,
    }, icon("more"));
    const menu = h("div", { class: "item-menu" }, menuButton,
      h("div", { class: "menu", id: menuId, hidden: true },
        h("button", { type: "button", "data-action": "rename" }, icon("edit"), "Rename"),
        h("button", { type: "button", "data-action": "archive" }, icon("archive"), session.archived ? "Unarchive" : "Archive"),
        h("button", { type: "button", "data-action": "delete", class: "danger" }, icon("trash"), "Delete")));
    return h("li", { class: current ? "session-item current" : "session-item", dataset: { id: session.id } }, link, menu);
  }

  closeMenus(refocus = false) {
    for (const menu of this.list.querySelectorAll(".menu:not([hidden])")) {
      menu.hidden = true;
      const toggle = menu.parentElement.querySelector(".menu-button");
      toggle.setAttribute("aria-expanded", "false");
      if (refocus) toggle.focus();
    }
  }

  onClick(event) {
    const toggle = event.target.closest(".menu-button");
    if (toggle) {
      const menu = toggle.nextElementSibling;
      const opening = menu.hidden;
      this.closeMenus();
      menu.hidden = !opening;
      toggle.setAttribute("aria-expanded", String(opening));
      if (opening) menu.querySelector("button").focus();
      return;
    }
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const li = button.closest("li");
    const session = this.sessions.find((s) => String(s.id) === li.dataset.id);
    this.closeMenus();
    if (!session) return;
    if (button.dataset.action === "rename") this.rename(li, session);
    else if (button.dataset.action === "archive") this.archive(session);
    else if (button.dataset.action === "delete") this.confirmDelete(session);
  }

  rename(li, session) {
    const link = li.querySelector(".session-link");
    const input = h("input", { class: "session-rename", "aria-label": "New title", maxlength: 200 });
    input.value = session.title;
    let finished = false;
    const finish = async (save) => {
      if (finished) return;
      finished = true;
      const title = input.value.trim();
      input.replaceWith(link);
      if (!save || title === session.title) {
        this.render();
        return;
      }
      try {
        await apiFetch("PATCH", `/api/sessions/${session.id}/`, { title });
        session.title = title;
        this.onRenamed?.(session.id, title);
      } catch (error) {
        window.alert(`Could not rename: ${error.message}`);
      }
      this.render();
      this.list.querySelector(`li[data-id="${session.id}"] .session-link`)?.focus();
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        finish(true);
      } else if (event.key === "Escape") {
        finish(false);
      }
    });
    input.addEventListener("blur", () => finish(true));
    link.replaceWith(input);
    input.focus();
    input.select();
  }

  async archive(session) {
    try {
      await apiFetch("PATCH", `/api/sessions/${session.id}/`, { archived: !session.archived });
    } catch (error) {
      window.alert(`Could not archive: ${error.message}`);
      return;
    }
    this.refresh();
  }

  confirmDelete(session) {
    document.getElementById("confirm-delete-name").textContent = session.title || "New chat";
    this.dialog.returnValue = "";
    this.dialog.addEventListener("close", async () => {
      if (this.dialog.returnValue !== "delete") return;
      try {
        await apiFetch("DELETE", `/api/sessions/${session.id}/`);
      } catch (error) {
        window.alert(`Could not delete: ${error.message}`);
        return;
      }
      if (session.id === this.currentId) window.location.assign("/");
      else this.refresh();
    }, { once: true });
    this.dialog.showModal();
  }

  /** Move the current chat to the top with its (possibly new) title, as the server orders it. */
  touch(id, title) {
    const index = this.sessions.findIndex((s) => s.id === id);
    if (index < 0 || this.archived || this.search.value.trim()) return;
    const [session] = this.sessions.splice(index, 1);
    if (title !== undefined) session.title = title;
    this.sessions.unshift(session);
    this.render();
  }

  /** On phones the list is a drawer over the page. */
  setupDrawer() {
    const app = document.getElementById("app");
    const open = document.getElementById("sidebar-open");
    const scrim = app.querySelector(".scrim");
    const setShown = (shown) => {
      app.classList.toggle("sidebar-shown", shown);
      scrim.hidden = !shown;
      open.setAttribute("aria-expanded", String(shown));
      if (shown) this.search.focus();
      else open.focus();
    };
    open.addEventListener("click", () => setShown(true));
    for (const closer of document.querySelectorAll("[data-sidebar-close]")) {
      closer.addEventListener("click", () => setShown(false));
    }
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && app.classList.contains("sidebar-shown")) setShown(false);
    });
  }
}
