// The trajectory editor: keyboard shortcuts, the current block, and the document's version.
//
// The page is a chain of blocks (Q, A_0, F_0, A_1, ..., the final answer). Every save is an
// htmx form post; the server answers with out-of-band fragments of only the blocks that
// changed plus #doc-state, which carries the document's version. One version covers the whole
// trajectory, so before each request the version is read from #doc-state rather than from the
// (possibly older) hidden field of a block that was not re-rendered.

const editor = document.getElementById("editor");
const modeLine = document.getElementById("mode");
const overlay = document.getElementById("overlay");
const regionsToggle = document.getElementById("show-regions");
const HELP = modeLine.textContent;

let current = null; // data-block of the current block, e.g. "response-2"
let editAfterSwap = null; // a step just added: its answer opens for editing once it is there

const blocks = () => Array.from(editor.querySelectorAll(".doc-side .block"));
const blockOf = (key) => editor.querySelector(`.block[data-block="${CSS.escape(key)}"]`);
const docState = () => document.getElementById("doc-state");

function setMode(text) {
  modeLine.textContent = text || HELP;
}

// --- The version travels with every request -------------------------------------------------

document.body.addEventListener("htmx:configRequest", (event) => {
  if (event.detail.verb !== "post") return;
  // Keep-mine carries the version the conflict panel showed; everything else the page's.
  if (event.detail.elt.closest?.(".keep-mine-form")) return;
  const state = docState();
  if (state) event.detail.parameters.version = state.dataset.version;
});

// --- The current block ----------------------------------------------------------------------

function select(key, { scroll = true } = {}) {
  current = key;
  for (const el of editor.querySelectorAll(".block.is-current")) el.classList.remove("is-current");
  const block = key && blockOf(key);
  if (!block) return;
  block.classList.add("is-current");
  if (scroll) block.scrollIntoView({ block: "nearest" });
}

function move(delta) {
  const all = blocks();
  if (!all.length) return;
  let i = all.findIndex((b) => b.dataset.block === current);
  i = i < 0 ? (delta > 0 ? 0 : all.length - 1) : Math.min(Math.max(i + delta, 0), all.length - 1);
  select(all[i].dataset.block);
}

function currentStep() {
  // The step whose answer or feedback is current (null on Q or the final answer).
  const block = current && blockOf(current);
  return block?.dataset.k ?? null;
}

// --- Editing --------------------------------------------------------------------------------

function startEdit(block = current && blockOf(current)) {
  if (!block) return;
  const form = block.querySelector(".block-form");
  if (!form) return;
  select(block.dataset.block, { scroll: false });
  form.hidden = false;
  block.classList.add("editing");
  const field = form.querySelector("textarea");
  field.focus();
  field.setSelectionRange(field.value.length, field.value.length);
  setMode("Editing: Enter or Ctrl+Enter saves · Shift+Enter new line · Esc cancels");
}

function stopEdit(form, { reset }) {
  if (reset) form.reset();
  form.hidden = true;
  form.closest(".block")?.classList.remove("editing");
  document.activeElement?.blur();
  setMode();
}

function submit(selector) {
  const form = editor.querySelector(selector);
  if (form) form.requestSubmit();
}

function statusAction(value) {
  editor.querySelector(`.status-form button[value="${value}"]`)?.click();
}

function toggleError(number) {
  const k = currentStep();
  if (k === null) {
    setMode("Move to an answer (J/K) to tag its error types");
    return;
  }
  editor.querySelector(`#step-${k} input[data-error-key="${number}"]`)?.click();
}

function stepForm(kind) {
  const k = currentStep();
  if (k === null) return null;
  return editor.querySelector(`#step-${k} .${kind}`);
}

function openDialog(id) {
  const dialog = document.getElementById(id);
  if (!dialog.open) dialog.showModal();
}

function openHistory() {
  htmx.ajax("GET", docState().dataset.historyUrl, { target: "#history-body", swap: "innerHTML" });
}

function toggleRegions(show = !regionsToggle.checked) {
  regionsToggle.checked = show;
  overlay.classList.toggle("hidden-regions", !show);
}

// --- After each swap: keep the current block, close the history after a restore -------------

document.addEventListener(
  "submit",
  (event) => {
    const form = event.target;
    if (form.matches?.(".add-step-form")) editAfterSwap = `response-${form.elements.at.value}`;
  },
  true,
);

document.body.addEventListener("htmx:afterSettle", () => {
  if (editAfterSwap && blockOf(editAfterSwap)) {
    const key = editAfterSwap;
    editAfterSwap = null;
    select(key);
    startEdit();
    return;
  }
  if (current && !blockOf(current)) {
    // The step was removed: fall back to the nearest block still there.
    const k = Number(current.split("-")[1]);
    current = blockOf(`response-${k}`) ? `response-${k}` : k > 0 ? `response-${k - 1}` : "question";
  }
  select(current, { scroll: false });
});

document.body.addEventListener("htmx:afterSwap", (event) => {
  if (event.detail.target?.id === "history-body") openDialog("history-dialog");
});

document.body.addEventListener("htmx:beforeRequest", (event) => {
  if (event.detail.elt.closest?.(".restore-form")) document.getElementById("history-dialog").close();
});

// --- Mouse ----------------------------------------------------------------------------------

editor.addEventListener("click", (event) => {
  const edit = event.target.closest(".edit-button");
  if (edit) {
    startEdit(edit.closest(".block"));
    return;
  }
  const block = event.target.closest(".doc-side .block");
  if (block && !event.target.closest("form, a, button, input, textarea, label")) {
    select(block.dataset.block, { scroll: false });
  }
});

regionsToggle.addEventListener("change", () => toggleRegions(regionsToggle.checked));
for (const button of editor.querySelectorAll("[data-open]")) {
  button.addEventListener("click", () => openDialog(button.dataset.open));
}
editor.querySelector("[data-history]")?.addEventListener("click", openHistory);

// --- Keyboard -------------------------------------------------------------------------------

document.addEventListener("keydown", (event) => {
  const form = event.target.closest?.(".block-form");
  if (form) {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
      stopEdit(form, { reset: false });
    } else if (event.key === "Escape") {
      event.preventDefault();
      stopEdit(form, { reset: true });
    }
    return;
  }
  if (event.target.closest?.("input, textarea, select") || document.querySelector("dialog[open]")) return;
  // Enter and Space on a focused button or link press it, as usual.
  if ((event.key === "Enter" || event.key === " ") && event.target.closest?.("button, a")) return;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const handlers = {
    j: () => move(1),
    ArrowDown: () => move(1),
    k: () => move(-1),
    ArrowUp: () => move(-1),
    e: () => startEdit(),
    Enter: () => startEdit(),
    1: () => toggleError(1),
    2: () => toggleError(2),
    3: () => toggleError(3),
    4: () => toggleError(4),
    a: () => statusAction("approve"),
    r: () => statusAction("reject"),
    u: () => submit("#use-last-form"),
    n: () => stepForm("add-step-form")?.requestSubmit(),
    Delete: () => stepForm("remove-step-form")?.requestSubmit(),
    b: () => toggleRegions(),
    h: () => openHistory(),
    " ": () => submit("#next-form"),
    "?": () => openDialog("shortcuts"),
    Escape: () => select(null),
  };
  const handler = handlers[event.key];
  if (!handler) return;
  event.preventDefault();
  handler();
});

select("response-0", { scroll: false });
