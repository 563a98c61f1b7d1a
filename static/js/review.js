// The review page: keyboard shortcuts, selection, and the SVG box editor (move, resize, draw).
//
// Every save goes through htmx: the row's forms for accept / reject / caption edits, and
// htmx.ajax for boxes, new regions and undo. The server answers with out-of-band fragments (the
// region's row and box); a MutationObserver re-applies the selection after each swap. The
// server keeps the undo stack (one step per action, per annotator and image), so Ctrl+Z only
// asks it to undo the last step as new versions, and still works after a reload; the
// `fgam:changed` event (HX-Trigger) says what changed. Coordinates are image pixels: the SVG
// viewBox is the image's size, so the screen CTM converts pointer positions.

const review = document.getElementById("review");
const overlay = document.getElementById("overlay");
const rowsBody = document.getElementById("region-rows");
const handles = document.getElementById("handles");
const draft = document.getElementById("draft");
const modeLine = document.getElementById("mode");
const WIDTH = Number(review.dataset.width);
const HEIGHT = Number(review.dataset.height);
const HANDLE_PX = 8; // grab distance and handle size, in screen pixels
const MIN_SIZE = 2; // smallest box side, in image pixels
const HELP = modeLine.textContent;

let selected = null; // region id (string) or null
let drawing = false;
let drag = null; // {kind, id, edges, start, orig, current}
let pending = null; // {select: id, edit: bool} applied once the row exists

// --- Small helpers ------------------------------------------------------------------------

const rowOf = (id) => document.getElementById(`row-${id}`);
const boxOf = (id) => document.getElementById(`box-${id}`);
const rows = () => Array.from(rowsBody.querySelectorAll("tr[data-region]"));
const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), hi);
const round = (v) => Math.round(v * 10) / 10;

function setMode(text) {
  modeLine.textContent = text || HELP;
}

function scale() {
  // Image pixels per screen pixel.
  return WIDTH / overlay.getBoundingClientRect().width;
}

function toImage(event) {
  const point = overlay.createSVGPoint();
  point.x = event.clientX;
  point.y = event.clientY;
  const p = point.matrixTransform(overlay.getScreenCTM().inverse());
  return { x: clamp(p.x, 0, WIDTH), y: clamp(p.y, 0, HEIGHT) };
}

function boxCoords(id) {
  const rect = boxOf(id)?.querySelector("rect");
  if (!rect) return null;
  const x = Number(rect.getAttribute("x"));
  const y = Number(rect.getAttribute("y"));
  return [x, y, x + Number(rect.getAttribute("width")), y + Number(rect.getAttribute("height"))];
}

function paintBox(id, [x0, y0, x1, y1]) {
  const g = boxOf(id);
  if (!g) return;
  const rect = g.querySelector("rect");
  rect.setAttribute("x", x0);
  rect.setAttribute("y", y0);
  rect.setAttribute("width", x1 - x0);
  rect.setAttribute("height", y1 - y0);
  const text = g.querySelector("text");
  if (text) {
    text.setAttribute("x", x0);
    text.setAttribute("y", y0);
  }
}

// --- Selection ----------------------------------------------------------------------------

function drawHandles() {
  handles.replaceChildren();
  const box = selected && boxCoords(selected);
  if (!box) return;
  const [x0, y0, x1, y1] = box;
  const size = HANDLE_PX * scale();
  const xm = (x0 + x1) / 2;
  const ym = (y0 + y1) / 2;
  for (const [x, y] of [[x0, y0], [xm, y0], [x1, y0], [x1, ym], [x1, y1], [xm, y1], [x0, y1], [x0, ym]]) {
    const h = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    h.setAttribute("x", x - size / 2);
    h.setAttribute("y", y - size / 2);
    h.setAttribute("width", size);
    h.setAttribute("height", size);
    handles.append(h);
  }
}

function applySelection() {
  for (const el of review.querySelectorAll(".is-selected")) el.classList.remove("is-selected");
  if (selected && !rowOf(selected)) selected = null;
  overlay.classList.toggle("has-selection", Boolean(selected));
  if (selected) {
    rowOf(selected).classList.add("is-selected");
    boxOf(selected)?.classList.add("is-selected");
    // Drawn last, so the selected box sits on top of the others and gets the pointer first.
    const g = boxOf(selected);
    if (g && g.parentNode.lastElementChild !== g) g.parentNode.append(g);
  }
  drawHandles();
}

function select(id, { scroll = true } = {}) {
  selected = id ? String(id) : null;
  applySelection();
  if (scroll && selected) rowOf(selected)?.scrollIntoView({ block: "nearest" });
}

function step(delta) {
  const all = rows();
  if (!all.length) return;
  let i = all.findIndex((row) => row.dataset.region === selected);
  i = i < 0 ? (delta > 0 ? 0 : all.length - 1) : clamp(i + delta, 0, all.length - 1);
  select(all[i].dataset.region);
}

function advance() {
  // After A or R: the next pending region below, else simply the next one.
  const all = rows();
  const i = all.findIndex((row) => row.dataset.region === selected);
  const next = all.slice(i + 1).find((row) => row.dataset.status === "pending") || all[i + 1];
  if (next) select(next.dataset.region);
}

new MutationObserver(() => {
  if (pending && rowOf(pending.select)) {
    const { select: id, edit } = pending;
    pending = null;
    select(id);
    if (edit) startEdit();
  } else {
    applySelection();
  }
}).observe(rowsBody, { childList: true });

// --- Actions ------------------------------------------------------------------------------

function post(url, values) {
  return htmx.ajax("POST", url, { source: review, values, swap: "none" });
}

function setStatus(action) {
  const button = selected && rowOf(selected)?.querySelector(`.row-actions button[value="${action}"]`);
  if (!button) return;
  button.click();
  advance();
}

function startEdit() {
  const row = selected && rowOf(selected);
  if (!row) return;
  const form = row.querySelector(".caption-form");
  form.hidden = false;
  row.classList.add("editing");
  const field = form.querySelector("textarea");
  field.focus();
  field.setSelectionRange(field.value.length, field.value.length);
  setMode("Editing: Enter saves · Esc cancels");
}

function cancelEdit(form) {
  form.reset();
  form.hidden = true;
  form.closest("tr")?.classList.remove("editing");
  document.activeElement?.blur();
  setMode();
}

function saveBox(id, box) {
  const row = rowOf(id);
  if (!row) return;
  const [x0, y0, x1, y1] = box.map(round);
  post(row.querySelector(".row-actions").getAttribute("hx-post"), {
    action: "box",
    version: row.dataset.version,
    x0,
    y0,
    x1,
    y1,
  });
}

function undo() {
  // The stack lives on the server (it survives a reload): undo its newest step.
  post(review.dataset.undoUrl, {});
}

function toggleDraw(on) {
  drawing = on;
  overlay.classList.toggle("drawing", on);
  setMode(on ? "Draw: drag a box over the image · Esc cancels" : "");
}

function openDialog(id) {
  const dialog = document.getElementById(id);
  if (!dialog.open) dialog.showModal();
}

document.addEventListener("fgam:changed", (event) => {
  const detail = event.detail || {};
  if (detail.added?.length && !detail.undo) pending = { select: String(detail.added[0]), edit: true };
  const history = document.getElementById("history-dialog");
  if (history.open) history.close();
  setMode(detail.nothing ? "Nothing to undo" : detail.undo ? "Undone" : "");
});

document.addEventListener("htmx:afterSwap", (event) => {
  if (event.detail.target?.id === "history-body") openDialog("history-dialog");
});

// --- Pointer: select, move, resize, draw ----------------------------------------------------

function edgesAt(p, [x0, y0, x1, y1], tol) {
  const inY = p.y >= y0 - tol && p.y <= y1 + tol;
  const inX = p.x >= x0 - tol && p.x <= x1 + tol;
  const edges = {
    l: inY && Math.abs(p.x - x0) <= tol,
    r: inY && Math.abs(p.x - x1) <= tol && !(Math.abs(p.x - x0) <= tol && p.x < x1),
    t: inX && Math.abs(p.y - y0) <= tol,
    b: inX && Math.abs(p.y - y1) <= tol && !(Math.abs(p.y - y0) <= tol && p.y < y1),
  };
  if (edges.l && edges.r) edges.r = false;
  if (edges.t && edges.b) edges.b = false;
  return edges;
}

function cursorFor(edges, inside) {
  const { l, r, t, b } = edges;
  if ((l && t) || (r && b)) return "nwse-resize";
  if ((r && t) || (l && b)) return "nesw-resize";
  if (l || r) return "ew-resize";
  if (t || b) return "ns-resize";
  return inside ? "move" : "";
}

function hit(p) {
  // The selected box first (edges reach a little outside it), then any box under the pointer.
  const tol = HANDLE_PX * scale();
  const ids = selected ? [selected] : [];
  for (const g of Array.from(overlay.querySelectorAll("#boxes .box")).reverse()) {
    if (g.dataset.region !== selected) ids.push(g.dataset.region);
  }
  for (const id of ids) {
    const box = boxCoords(id);
    if (!box) continue;
    const edges = edgesAt(p, box, id === selected ? tol : 0);
    const inside = p.x >= box[0] && p.x <= box[2] && p.y >= box[1] && p.y <= box[3];
    if (inside || edges.l || edges.r || edges.t || edges.b) return { id, box, edges, inside };
  }
  return null;
}

overlay.addEventListener("pointerdown", (event) => {
  if (event.button !== 0) return;
  event.preventDefault();
  const p = toImage(event);
  if (drawing) {
    drag = { kind: "draw", start: p, current: [p.x, p.y, p.x, p.y] };
    draft.setAttribute("visibility", "visible");
  } else {
    const found = hit(p);
    if (!found) return;
    if (found.id !== selected) select(found.id);
    const { l, r, t, b } = found.edges;
    const resizing = found.id === selected && (l || r || t || b);
    drag = {
      kind: resizing ? "resize" : "move",
      id: found.id,
      edges: found.edges,
      start: p,
      orig: found.box,
      current: found.box,
    };
  }
  overlay.setPointerCapture(event.pointerId);
});

overlay.addEventListener("pointermove", (event) => {
  const p = toImage(event);
  if (!drag) {
    if (drawing) return;
    const found = selected && hit(p);
    overlay.style.cursor = found && found.id === selected ? cursorFor(found.edges, found.inside) : "";
    return;
  }
  if (drag.kind === "draw") {
    const { x, y } = drag.start;
    drag.current = [Math.min(x, p.x), Math.min(y, p.y), Math.max(x, p.x), Math.max(y, p.y)];
    const [x0, y0, x1, y1] = drag.current;
    draft.setAttribute("x", x0);
    draft.setAttribute("y", y0);
    draft.setAttribute("width", x1 - x0);
    draft.setAttribute("height", y1 - y0);
    return;
  }
  const dx = p.x - drag.start.x;
  const dy = p.y - drag.start.y;
  let [x0, y0, x1, y1] = drag.orig;
  if (drag.kind === "move") {
    const w = x1 - x0;
    const h = y1 - y0;
    x0 = clamp(x0 + dx, 0, WIDTH - w);
    y0 = clamp(y0 + dy, 0, HEIGHT - h);
    x1 = x0 + w;
    y1 = y0 + h;
  } else {
    const { l, r, t, b } = drag.edges;
    if (l) x0 = clamp(x0 + dx, 0, x1 - MIN_SIZE);
    if (r) x1 = clamp(x1 + dx, x0 + MIN_SIZE, WIDTH);
    if (t) y0 = clamp(y0 + dy, 0, y1 - MIN_SIZE);
    if (b) y1 = clamp(y1 + dy, y0 + MIN_SIZE, HEIGHT);
  }
  drag.current = [x0, y0, x1, y1];
  paintBox(drag.id, drag.current);
  drawHandles();
});

function endDrag(event) {
  if (!drag) return;
  const done = drag;
  drag = null;
  if (overlay.hasPointerCapture(event.pointerId)) overlay.releasePointerCapture(event.pointerId);
  if (done.kind === "draw") {
    draft.setAttribute("visibility", "hidden");
    toggleDraw(false);
    const [x0, y0, x1, y1] = done.current;
    if (x1 - x0 >= MIN_SIZE && y1 - y0 >= MIN_SIZE) {
      post(review.dataset.createUrl, { x0: round(x0), y0: round(y0), x1: round(x1), y1: round(y1) });
    }
    return;
  }
  const moved = done.current.some((v, i) => Math.abs(v - done.orig[i]) >= 0.5);
  if (moved && event.type === "pointerup") saveBox(done.id, done.current);
  else paintBox(done.id, done.orig);
  drawHandles();
}

overlay.addEventListener("pointerup", endDrag);
overlay.addEventListener("pointercancel", endDrag);

// --- Rows: click to select, hover to highlight ----------------------------------------------

rowsBody.addEventListener("click", (event) => {
  const row = event.target.closest("tr[data-region]");
  if (!row || event.target.closest("form, a, button, input, textarea")) return;
  select(row.dataset.region, { scroll: false });
});

function highlight(id) {
  for (const el of review.querySelectorAll(".is-highlighted")) el.classList.remove("is-highlighted");
  if (id) boxOf(id)?.classList.add("is-highlighted");
  overlay.classList.toggle("has-highlight", Boolean(id && boxOf(id)));
}

rowsBody.addEventListener("mouseover", (event) => {
  highlight(event.target.closest("tr[data-region]")?.dataset.region);
});
rowsBody.addEventListener("mouseleave", () => highlight(null));

// --- Keyboard -----------------------------------------------------------------------------

document.addEventListener("keydown", (event) => {
  const target = event.target;
  const form = target.closest?.(".caption-form");
  if (form) {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
      form.closest("tr")?.classList.remove("editing");
      document.activeElement?.blur();
      setMode();
    } else if (event.key === "Escape") {
      event.preventDefault();
      cancelEdit(form);
    }
    return;
  }
  if (target.closest?.("input, textarea, select, dialog[open]") || document.querySelector("dialog[open]")) return;
  if ((event.ctrlKey || event.metaKey) && !event.altKey && event.key.toLowerCase() === "z") {
    event.preventDefault();
    undo();
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key;
  const handlers = {
    j: () => step(1),
    ArrowDown: () => step(1),
    ArrowRight: () => step(1),
    k: () => step(-1),
    ArrowUp: () => step(-1),
    ArrowLeft: () => step(-1),
    a: () => setStatus("accept"),
    r: () => setStatus("reject"),
    e: () => startEdit(),
    Enter: () => startEdit(),
    n: () => toggleDraw(!drawing),
    A: () => document.getElementById("accept-all-form").requestSubmit(),
    " ": () => document.getElementById("next-form").requestSubmit(),
    m: () => document.getElementById("mark-next-form").requestSubmit(),
    h: () => selected && rowOf(selected)?.querySelector(".history-link")?.click(),
    Delete: () => selected && rowOf(selected)?.querySelector(".delete-form button")?.click(),
    "?": () => openDialog("shortcuts"),
    Escape: () => (drawing ? toggleDraw(false) : select(null)),
  };
  const handler = handlers[key];
  if (!handler) return;
  event.preventDefault();
  handler();
});

for (const button of review.querySelectorAll("[data-open]")) {
  button.addEventListener("click", () => openDialog(button.dataset.open));
}

const firstPending = rows().find((row) => row.dataset.status === "pending") || rows()[0];
if (firstPending) select(firstPending.dataset.region, { scroll: false });
