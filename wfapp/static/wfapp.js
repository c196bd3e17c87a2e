// wfapp's small scripts: the header search suggestions and selectable list rows.
(function () {
  "use strict";

  // Header search: suggestions as the user types; Enter opens the search page.
  const input = document.getElementById("header-search-input");
  const results = document.getElementById("header-search-results");
  if (input && results) {
    let timer = null;
    input.addEventListener("input", function () {
      clearTimeout(timer);
      const q = input.value.trim();
      if (!q) { results.classList.add("d-none"); results.innerHTML = ""; return; }
      timer = setTimeout(function () {
        fetch(input.form.action.replace(/\/search$/, "/search.json") + "?q=" + encodeURIComponent(q))
          .then(function (r) { return r.json(); })
          .then(function (data) {
            results.innerHTML = "";
            data.items.forEach(function (hit) {
              const a = document.createElement("a");
              a.className = "list-group-item list-group-item-action";
              a.href = hit.url;
              const title = document.createElement("div");
              title.className = "fw-semibold";
              title.textContent = hit.title;
              const sub = document.createElement("div");
              sub.className = "small text-body-secondary";
              sub.textContent = hit.subtitle;
              a.append(title, sub);
              results.append(a);
            });
            results.classList.toggle("d-none", data.items.length === 0);
          });
      }, 150);
    });
    document.addEventListener("click", function (e) {
      if (!input.form.contains(e.target)) { results.classList.add("d-none"); }
    });
  }

  // Selectable lists: clicking a row selects it (its radio or checkbox); action-bar buttons with
  // data-requires-selection are enabled only while a row is selected and use its data-* links.
  document.querySelectorAll("table[data-selectable]").forEach(function (table) {
    const bar = document.querySelector(table.dataset.selectable);
    function refresh() {
      const picked = Array.from(table.querySelectorAll("input.row-select:checked"));
      table.querySelectorAll("tr.selectable").forEach(function (tr) {
        const box = tr.querySelector("input.row-select");
        tr.classList.toggle("table-active", !!(box && box.checked));
      });
      if (!bar) { return; }
      bar.querySelectorAll("[data-requires-selection]").forEach(function (btn) {
        const row = picked.length ? picked[0].closest("tr") : null;
        const attr = btn.dataset.requiresSelection;
        const href = row ? row.dataset[attr] : null;
        const enabled = picked.length > 0 && (!attr || !!href);
        btn.classList.toggle("disabled", !enabled);
        btn.setAttribute("aria-disabled", enabled ? "false" : "true");
        if (btn.tagName === "A") { btn.href = enabled && href ? href : "#"; }
        if (btn.tagName === "BUTTON") { btn.disabled = !enabled; if (href) { btn.formAction = href; } }
      });
    }
    table.addEventListener("click", function (e) {
      const tr = e.target.closest("tr.selectable");
      if (!tr || e.target.closest("a, button, input")) { refresh(); return; }
      const box = tr.querySelector("input.row-select");
      if (box) { box.checked = box.type === "radio" ? true : !box.checked; }
      refresh();
    });
    table.addEventListener("change", refresh);
    refresh();
  });

  // Forms that ask before doing something drastic.
  document.querySelectorAll("form[data-confirm], button[data-confirm]").forEach(function (el) {
    const form = el.tagName === "FORM" ? el : el.form;
    (el.tagName === "FORM" ? el : el).addEventListener(el.tagName === "FORM" ? "submit" : "click", function (e) {
      if (!window.confirm(el.dataset.confirm)) { e.preventDefault(); }
    });
    return form;
  });
})();

// Editable row lists (conditions, captured variables): add, remove, move; names are renumbered
// so the server reads the rows in the order they are shown.
(function () {
  "use strict";
  function renumber(body) {
    const prefix = body.dataset.rows;
    body.querySelectorAll("tr[data-row]").forEach(function (tr, i) {
      tr.querySelectorAll("[name]").forEach(function (el) {
        el.name = el.name.replace(new RegExp("^" + prefix + "-(\\d+|N)-"), prefix + "-" + i + "-");
        if (el.id) { el.id = el.id.replace(new RegExp("^" + prefix + "-(\\d+|N)-"), prefix + "-" + i + "-"); }
        const label = el.getAttribute("aria-label");
        if (label) { el.setAttribute("aria-label", label.replace(/ row (\d+|N) /, " row " + (i + 1) + " ")); }
      });
    });
  }
  document.querySelectorAll("[data-add-row]").forEach(function (btn) {
    btn.addEventListener("click", function (e) {
      e.preventDefault();  // a submit button (the action editor's) adds the row server-side without scripts
      const prefix = btn.dataset.addRow;
      const body = document.querySelector('tbody[data-rows="' + prefix + '"]');
      const template = document.getElementById(prefix + "-template");
      body.append(template.content.cloneNode(true));
      renumber(body);
      const first = body.lastElementChild.querySelector("input, select");
      if (first) { first.focus(); }
    });
  });
  document.addEventListener("click", function (e) {
    const button = e.target.closest("[data-remove], [data-move]");
    if (!button) { return; }
    const tr = button.closest("tr[data-row]");
    const body = tr.parentElement;
    if (button.hasAttribute("data-remove")) { tr.remove(); }
    else if (button.dataset.move === "up" && tr.previousElementSibling) { body.insertBefore(tr, tr.previousElementSibling); }
    else if (button.dataset.move === "down" && tr.nextElementSibling) { body.insertBefore(tr.nextElementSibling, tr); }
    renumber(body);
  });
  // The action editor: buttons that only work with scripts are shown; changing an action's type
  // shows that type's fields at once (the server redraws the list; nothing is saved yet).
  document.querySelectorAll("[data-js-only]").forEach(function (el) { el.hidden = false; });
  document.querySelectorAll("select[data-action-type]").forEach(function (select) {
    const refresh = select.parentElement.querySelector("[data-refresh]");
    if (refresh) { refresh.hidden = true; }
    select.addEventListener("change", function () {
      if (refresh) { select.form.requestSubmit(refresh); }
    });
  });
  // Changing the trigger type reloads the page with that type's fields (nothing is saved yet).
  document.querySelectorAll("select[data-change-type]").forEach(function (select) {
    select.addEventListener("change", function () {
      const action = document.getElementById("form-action");
      if (action) { action.value = "change-type"; }
      select.form.submit();
    });
  });
})();

// Live countdown to a timer (the instance page). The server says how many seconds were left when
// it rendered the page, so a client clock that is off does not matter.
(function () {
  "use strict";
  document.querySelectorAll("[data-countdown]").forEach(function (el) {
    const left0 = parseInt(el.dataset.secondsLeft, 10);
    const due = isNaN(left0) ? new Date(el.dataset.countdown).getTime() : Date.now() + left0 * 1000;
    function tick() {
      let left = Math.floor((due - Date.now()) / 1000);
      if (left <= 0) { el.textContent = "due now — the sweep fires it within seconds"; return; }
      const d = Math.floor(left / 86400); left -= d * 86400;
      const h = Math.floor(left / 3600); left -= h * 3600;
      const m = Math.floor(left / 60); const s = left - m * 60;
      el.textContent = "due in " + (d ? d + " d " : "") + (d || h ? h + " h " : "") + m + " min " + s + " s";
    }
    tick();
    setInterval(tick, 1000);
  });
})();

// The Workflow Instances action bar: Advance Workflow needs a Manual transition available from every
// selected instance's state; a disabled action says why in its wrapper's tooltip; "select all".
(function () {
  "use strict";
  document.querySelectorAll("table[data-selectable]").forEach(function (table) {
    const bar = document.querySelector(table.dataset.selectable);
    if (!bar) { return; }
    const all = table.querySelector("#select-all");
    function refresh() {
      const rows = Array.from(table.querySelectorAll("input.row-select:checked")).map(function (b) { return b.closest("tr"); });
      bar.querySelectorAll("[data-requires-common]").forEach(function (btn) {
        const key = btn.dataset.requiresCommon;
        let common = null;
        rows.forEach(function (tr) {
          const codes = (tr.dataset[key] || "").split(",").filter(Boolean);
          common = common === null ? codes : common.filter(function (c) { return codes.includes(c); });
        });
        btn.disabled = !(rows.length > 0 && common && common.length > 0);
      });
      bar.querySelectorAll("[data-tip]").forEach(function (wrap) {
        const btn = wrap.querySelector("a, button");
        const off = btn.disabled || btn.classList.contains("disabled");
        wrap.title = !off ? "" : (rows.length && wrap.dataset.tipBlocked ? wrap.dataset.tipBlocked : wrap.dataset.tip);
      });
      if (all) {
        const boxes = table.querySelectorAll("input.row-select");
        all.checked = rows.length > 0 && rows.length === boxes.length;
        all.indeterminate = rows.length > 0 && rows.length < boxes.length;
      }
    }
    if (all) {
      all.addEventListener("change", function () {
        table.querySelectorAll("input.row-select").forEach(function (b) { b.checked = all.checked; });
        table.dispatchEvent(new Event("change"));
      });
    }
    table.addEventListener("change", function () { setTimeout(refresh, 0); });
    table.addEventListener("click", function () { setTimeout(refresh, 0); });
    refresh();
  });
  // Advance Workflow: transitions whose trigger config asks for confirmation ask before firing.
  document.querySelectorAll("form[data-confirm-codes]").forEach(function (form) {
    const codes = form.dataset.confirmCodes.split(",");
    form.addEventListener("submit", function (e) {
      const picked = form.querySelector('input[name="transition"]:checked');
      if (picked && codes.includes(picked.value) &&
          !window.confirm("Fire " + picked.value + " on the selected instance(s)?")) { e.preventDefault(); }
    });
  });
})();

// Trigger Type drop-downs: swap in the chosen type's fields from its <template>, keeping what was
// typed into fields of the same name; the hidden "fields-for" tells the server which fields it got.
(function () {
  "use strict";
  document.querySelectorAll("select[data-trigger-select]").forEach(function (select) {
    const box = document.getElementById("trigger-fields");
    const shown = document.getElementById("fields-for");
    if (!box || !shown) { return; }
    select.addEventListener("change", function () {
      const template = document.getElementById("trigger-fields-" + select.value);
      if (!template) { return; }
      const typed = {};
      box.querySelectorAll("[name]").forEach(function (el) {
        if (el.type === "checkbox") {
          (typed[el.name] = typed[el.name] || []).push(el.checked ? el.value : null);
        } else if (el.type !== "password") {
          typed[el.name] = el.value;
        }
      });
      box.replaceChildren(template.content.cloneNode(true));
      box.querySelectorAll("[name]").forEach(function (el) {
        const value = typed[el.name];
        if (value === undefined) { return; }
        if (el.type === "checkbox") { el.checked = value.includes(el.value); }
        else if (value !== "") { el.value = value; }
      });
      shown.value = select.value;
    });
  });
})();

// Header search, keyboard: arrow keys move through the suggestions, Enter opens the highlighted
// one (without one highlighted, Enter submits and the server opens a single or exact hit),
// Escape closes the list. The suggestions themselves are drawn by the script at the top.
(function () {
  "use strict";
  const input = document.getElementById("header-search-input");
  const results = document.getElementById("header-search-results");
  if (!input || !results) { return; }
  let active = -1;
  function items() { return Array.from(results.querySelectorAll("a")); }
  function open() { return !results.classList.contains("d-none") && items().length > 0; }
  // Highlight the suggestion at `index` (wrapping around); null highlights none.
  function highlight(index) {
    const list = items();
    active = index === null || !list.length ? -1 : (index + list.length) % list.length;
    list.forEach(function (a, i) {
      a.classList.toggle("active", i === active);
      a.setAttribute("aria-selected", i === active ? "true" : "false");
    });
    if (active >= 0) {
      input.setAttribute("aria-activedescendant", list[active].id);
      list[active].scrollIntoView({ block: "nearest" });
    } else {
      input.removeAttribute("aria-activedescendant");
    }
  }
  // New suggestions: give each an id and role for screen readers, and forget the highlight.
  new MutationObserver(function (changes) {
    if (changes.some(function (c) { return c.type === "childList"; })) {
      items().forEach(function (a, i) {
        a.id = "header-search-option-" + i;
        a.setAttribute("role", "option");
      });
      active = -1;
      input.removeAttribute("aria-activedescendant");
    }
    input.setAttribute("aria-expanded", open() ? "true" : "false");
  }).observe(results, { childList: true, attributes: true, attributeFilter: ["class"] });
  input.addEventListener("keydown", function (e) {
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      if (!items().length) { return; }
      e.preventDefault();
      if (results.classList.contains("d-none")) { results.classList.remove("d-none"); }
      highlight(active + (e.key === "ArrowDown" ? 1 : active < 0 ? 0 : -1));
    } else if (e.key === "Enter" && open() && active >= 0) {
      e.preventDefault();
      window.location.assign(items()[active].href);
    } else if (e.key === "Escape" && open()) {
      e.preventDefault();
      results.classList.add("d-none");
      highlight(null);
    }
  });
})();

// The run page: refresh the counts every 2 s while events are pending; reload once when done.
(function () {
  const marker = document.getElementById("run-progress");
  if (!marker) { return; }
  (function poll() {
    setTimeout(function () {
      fetch(marker.dataset.url).then(function (r) { return r.json(); }).then(function (p) {
        Object.keys(p).forEach(function (k) {
          const el = document.querySelector('[data-progress="' + k + '"]');
          if (el) { el.textContent = p[k]; }
        });
        if (p.pending > 0) { poll(); } else { window.location.reload(); }
      }).catch(poll);
    }, 2000);
  })();
})();

// Copy buttons: data-copy-target names the element (an input or a block of text) to copy.
(function () {
  "use strict";
  document.querySelectorAll("[data-copy-target]").forEach(function (button) {
    button.addEventListener("click", function () {
      const target = document.getElementById(button.dataset.copyTarget);
      if (!target) { return; }
      const text = "value" in target && target.tagName === "INPUT" ? target.value : target.textContent;
      const done = function () { button.textContent = "Copied"; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done);
      } else if (target.tagName === "INPUT") {
        target.select(); document.execCommand("copy"); done();
      } else {
        const range = document.createRange(); range.selectNodeContents(target);
        const selection = window.getSelection(); selection.removeAllRanges(); selection.addRange(range);
        document.execCommand("copy"); done();
      }
    });
  });
})();

// Form errors: focus moves to the first invalid input, so keyboard and screen-reader users land
// on what needs fixing (its error and help are announced through aria-describedby).
(function () {
  "use strict";
  const first = document.querySelector('[aria-invalid="true"]');
  if (first && typeof first.focus === "function") {
    first.focus();
  }
})();

// A bulk operation's page: refresh its progress bar every second until it has finished.
(function () {
  "use strict";
  const box = document.getElementById("operation");
  if (!box || box.dataset.status === "done" || box.dataset.status === "cancelled") { return; }
  const text = function (id, value) { const el = document.getElementById(id); if (el) { el.textContent = value; } };
  (function poll() {
    setTimeout(function () {
      fetch(box.dataset.progressUrl, {headers: {"Accept": "application/json"}})
        .then(function (r) { return r.json(); })
        .then(function (p) {
          const handled = p.done + p.failed;
          const pct = p.total ? Math.floor(handled * 100 / p.total) : 100;
          const fill = document.getElementById("op-bar-fill");
          fill.style.width = pct + "%";
          fill.textContent = pct + " %";
          document.getElementById("op-bar").setAttribute("aria-valuenow", String(pct));
          text("op-done", p.done); text("op-failed", p.failed); text("op-total", p.total);
          text("op-status", p.status);
          if (p.status === "done" || p.status === "cancelled") {
            window.location.reload();  // the finished time, the refused rows, no Cancel button
          } else { poll(); }
        }).catch(poll);
    }, 1000);
  })();
})();
