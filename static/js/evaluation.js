// The rating page from the keyboard: 1-5 score the highlighted criterion of the highlighted
// response, J/K (or arrows) move between criteria, Tab / Shift+Tab between responses, H and the
// error-type letters toggle checkboxes, G shows the image's regions, Enter saves (or jumps to
// what is still missing), ? opens the shortcut sheet. Everything sets the same radio buttons and
// checkboxes a mouse would, and the form posts normally: without this module the page works.

const root = document.getElementById("rate");
const form = document.getElementById("rating-form");
const responses = Array.from(form.querySelectorAll("section.response"));
const editable = root.dataset.editable === "1";
const regions = document.getElementById("regions");
const regionToggle = document.getElementById("show-regions");
const hint = document.getElementById("rate-hint");
const sheet = document.getElementById("shortcuts");
const HINT = hint?.textContent;

let current = 0; // index into responses
let criterion = 0; // index into the current response's criteria

const criteriaOf = (section) => Array.from(section.querySelectorAll("fieldset.criterion"));
const chosen = (fieldset) => fieldset.querySelector("input[type=radio]:checked");

function highlight({ scroll = true } = {}) {
  if (hint) hint.textContent = HINT;
  for (const el of form.querySelectorAll(".is-current")) el.classList.remove("is-current");
  const section = responses[current];
  if (!section) return;
  section.classList.add("is-current");
  const fields = criteriaOf(section);
  criterion = Math.min(Math.max(criterion, 0), fields.length - 1);
  fields[criterion]?.classList.add("is-current");
  if (scroll) fields[criterion]?.scrollIntoView({ block: "nearest" });
}

function firstMissing() {
  for (const [i, section] of responses.entries()) {
    const j = criteriaOf(section).findIndex((f) => !chosen(f));
    if (j >= 0) return [i, j];
  }
  return null;
}

function moveTo(i, j = 0) {
  current = Math.min(Math.max(i, 0), responses.length - 1);
  criterion = j;
  highlight();
}

function score(value) {
  const fields = criteriaOf(responses[current]);
  const radio = fields[criterion]?.querySelector(`input[type=radio][value="${value}"]`);
  if (!radio) return;
  radio.checked = true;
  radio.dispatchEvent(new Event("change", { bubbles: true }));
  // Then the next criterion of this response that has no score yet, else the next one.
  const later = fields.findIndex((f, k) => k > criterion && !chosen(f));
  criterion = later >= 0 ? later : Math.min(criterion + 1, fields.length - 1);
  highlight();
}

function toggle(key) {
  const box = responses[current].querySelector(`input[type=checkbox][data-key="${key}"]`);
  if (box) box.checked = !box.checked;
}

function save() {
  const missing = firstMissing();
  if (missing) {
    moveTo(...missing);
    const label = criteriaOf(responses[missing[0]])[missing[1]].querySelector("legend").textContent;
    hint.textContent = `Response ${missing[0] + 1}: ${label} has no score yet.`;
    return;
  }
  form.requestSubmit();
}

function toggleRegions(show = !regionToggle.checked) {
  regionToggle.checked = show;
  // An <svg> has no `hidden` property; the attribute (and the stylesheet) hide it.
  regions.toggleAttribute("hidden", !show);
}

regionToggle.addEventListener("change", () => toggleRegions(regionToggle.checked));
for (const [i, section] of responses.entries()) {
  section.addEventListener("click", (event) => {
    const field = event.target.closest("fieldset.criterion");
    current = i;
    if (field) criterion = criteriaOf(section).indexOf(field);
    highlight({ scroll: false });
  });
}
for (const opener of document.querySelectorAll("[data-open]")) {
  opener.addEventListener("click", () => document.getElementById(opener.dataset.open).showModal());
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || sheet.open) return;
  if (event.target.closest?.("textarea, input[type=text], select")) return;
  const key = event.key;
  if (key === "?") {
    event.preventDefault();
    sheet.showModal();
  } else if (key === "g" || key === "G") {
    toggleRegions();
  } else if (!editable) {
    return;
  } else if (/^[1-5]$/.test(key)) {
    event.preventDefault();
    score(key);
  } else if (key === "Tab") {
    event.preventDefault();
    moveTo(current + (event.shiftKey ? -1 : 1), 0);
  } else if (key === "Enter") {
    event.preventDefault();
    save();
  } else if (key === "j" || key === "ArrowDown") {
    event.preventDefault();
    criterion += 1;
    highlight();
  } else if (key === "k" || key === "ArrowUp") {
    event.preventDefault();
    criterion -= 1;
    highlight();
  } else if (key.length === 1 && /[a-z]/i.test(key)) {
    toggle(key.toLowerCase());
  }
});

// Start where work is left: the first unscored criterion, else the first response.
const start = firstMissing();
if (start) {
  [current, criterion] = start;
}
highlight({ scroll: false });
