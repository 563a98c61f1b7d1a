// Links rows of the region table with their boxes on the image: hovering or focusing one
// highlights the other; clicking (or Enter on a row) keeps the selection. Event delegation on
// the document, so the htmx-swapped viewer needs no re-initialisation.

const HIGHLIGHT = "is-highlighted";
const SELECTED = "is-selected";

function regionOf(target) {
  const el = target instanceof Element ? target.closest("[data-region]") : null;
  return el && el.closest("#viewer") ? el.dataset.region : null;
}

function parts(id) {
  const viewer = document.getElementById("viewer");
  if (!viewer || !id) return [];
  return Array.from(viewer.querySelectorAll(`[data-region="${CSS.escape(id)}"]`));
}

function setClass(id, name, on) {
  for (const el of parts(id)) el.classList.toggle(name, on);
  const overlay = document.querySelector("#viewer .overlay");
  if (overlay && name === HIGHLIGHT) {
    overlay.classList.toggle("has-highlight", Boolean(overlay.querySelector(`.${HIGHLIGHT}`)));
  }
}

function clearClass(name) {
  for (const el of document.querySelectorAll(`#viewer .${name}`)) el.classList.remove(name);
}

function highlight(id) {
  clearClass(HIGHLIGHT);
  if (id) setClass(id, HIGHLIGHT, true);
  else setClass(null, HIGHLIGHT, false);
}

function select(id) {
  const wasSelected = parts(id).some((el) => el.classList.contains(SELECTED));
  clearClass(SELECTED);
  if (!wasSelected) {
    setClass(id, SELECTED, true);
    const row = document.querySelector(`#region-table tr[data-region="${CSS.escape(id)}"]`);
    if (row) row.scrollIntoView({ block: "nearest" });
  }
}

document.addEventListener("mouseover", (event) => {
  const id = regionOf(event.target);
  if (id) highlight(id);
});

document.addEventListener("mouseout", (event) => {
  const from = regionOf(event.target);
  const to = regionOf(event.relatedTarget);
  if (from && from !== to) highlight(to);
});

document.addEventListener("focusin", (event) => {
  const id = regionOf(event.target);
  if (id) highlight(id);
});

document.addEventListener("click", (event) => {
  const id = regionOf(event.target);
  if (id) select(id);
});

document.addEventListener("keydown", (event) => {
  if (event.key !== "Enter") return;
  const id = regionOf(event.target);
  if (id && event.target.matches("tr")) select(id);
});
