// The emulator's demo page: plain JavaScript, no build step, nothing loaded from other hosts.
// It calls the admin API (/emulator/...) to browse clients, spaces and persons, and the real persons API
// (/api/v1/persons/...) to recognize, enroll (set), delete and truncate.
"use strict";

const API = "/api/v1/persons";
const SPACES = 10; // spaces 0..9 of every client
const PERSONS_SHOWN = 120; // persons rendered at once (each costs one admin call for its thumbnail)
const STORE = { token: "smarty-demo.token", provider: "smarty-demo.provider", client: "smarty-demo.client",
  space: "smarty-demo.space" };
const COLORS = ["#e4572e", "#17bebb", "#ffc914", "#76b041", "#9b5de5", "#f15bb5", "#00bbf9", "#fe7f2d"];

const $ = (id) => document.getElementById(id);

const state = {
  clients: [], // [{client, spaces: [{space, persons, faces}]}]
  persons: [], // [{person_id, photos}]
  file: null, // the last photo sent to recognize
  faces: [], // its faces, as recognize returned them
  busy: false,
};

// --- small helpers -------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function remember(key, value) {
  try { localStorage.setItem(key, value); } catch (_) { /* private mode: not remembered */ }
}

function recall(key, fallback) {
  try { return localStorage.getItem(key) ?? fallback; } catch (_) { return fallback; }
}

function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function notify(text) {
  $("notice").textContent = text;
}

function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

function selectedClient() { return $("client").value || "default"; }
function selectedSpace() { return Number($("space").value || 0); }

/** An error of the persons API (envelope status and text) or of the admin API (HTTP status and detail). */
class ApiError extends Error {}

// --- the admin API ---------------------------------------------------------------------------

async function admin(path) {
  let response;
  try {
    response = await fetch(path, { headers: { Accept: "application/json" } });
  } catch (err) {
    throw new ApiError(`Network error: ${err.message}`);
  }
  let payload = null;
  try { payload = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    const detail = payload && typeof payload.detail === "string" ? payload.detail : response.statusText;
    throw new ApiError(`Admin API error ${response.status}: ${detail}`);
  }
  return payload;
}

const enc = encodeURIComponent;

// --- the persons API -------------------------------------------------------------------------

/** POST a persons method; returns the envelope's body, or throws with the envelope's status and text. */
async function persons(method, meta, files = []) {
  const form = new FormData();
  for (const [name, blob, filename] of files) form.append(name, blob, filename);
  form.append("meta", JSON.stringify(meta));
  const token = $("token").value.trim();
  const query = `oauth_token=${enc(token)}&oauth_provider=${enc($("provider").value)}`;
  let response;
  try {
    response = await fetch(`${API}/${method}?${query}`, { method: "POST", body: form });
  } catch (err) {
    throw new ApiError(`Network error: ${err.message}`);
  }
  let envelope;
  try {
    envelope = await response.json();
  } catch (_) {
    throw new ApiError(`HTTP ${response.status}: the response is not JSON`);
  }
  if (!envelope || typeof envelope.status !== "number") {
    throw new ApiError(`HTTP ${response.status}: unexpected response`);
  }
  if (envelope.status !== 200) {
    const text = typeof envelope.body === "string" ? envelope.body : JSON.stringify(envelope.body);
    throw new ApiError(`${method} failed with status ${envelope.status}: ${text}`);
  }
  return envelope.body;
}

/** The one object of a one-image request; throws with its status and error text if it failed. */
function onlyObject(method, body) {
  const object = body && Array.isArray(body.objects) ? body.objects[0] : null;
  if (!object) throw new ApiError(`${method}: the response has no object`);
  if (object.status !== 0) {
    throw new ApiError(`${method} failed for the image with status ${object.status}: ${object.error || "no text"}`);
  }
  return object;
}

// --- clients, spaces, persons ----------------------------------------------------------------

async function loadClients() {
  const data = await admin("/emulator/clients");
  state.clients = Array.isArray(data.clients) ? data.clients : [];
  const select = $("client");
  const wanted = select.value || recall(STORE.client, "default");
  const names = state.clients.map((c) => c.client);
  if (!names.includes("default")) names.unshift("default");
  if (!names.includes(wanted)) names.push(wanted);
  select.replaceChildren(...names.map((name) => el("option", { value: name, text: name })));
  select.value = wanted;
  fillSpaces();
}

function fillSpaces() {
  const select = $("space");
  const wanted = select.value || recall(STORE.space, "0");
  const client = state.clients.find((c) => c.client === selectedClient());
  const counts = new Map((client ? client.spaces : []).map((s) => [Number(s.space), s]));
  const options = [];
  for (let space = 0; space < SPACES; space += 1) {
    const info = counts.get(space);
    const label = info
      ? `${space} · ${plural(info.persons, "person")}, ${plural(info.faces, "face")}`
      : `${space} · empty`;
    options.push(el("option", { value: String(space), text: label }));
  }
  select.replaceChildren(...options);
  select.value = wanted;
}

async function loadPersons() {
  const client = selectedClient();
  const space = selectedSpace();
  const list = $("persons");
  list.setAttribute("aria-busy", "true");
  try {
    const data = await admin(`/emulator/clients/${enc(client)}/spaces/${space}/persons`);
    if (client !== selectedClient() || space !== selectedSpace()) return; // the user moved on
    state.persons = Array.isArray(data.persons) ? data.persons : [];
    renderPersons(client, space);
  } finally {
    list.removeAttribute("aria-busy");
  }
}

function renderPersons(client, space) {
  const shown = state.persons.slice(0, PERSONS_SHOWN);
  const photos = state.persons.reduce((sum, p) => sum + (p.photos || 0), 0);
  let summary = state.persons.length === 0
    ? `Space ${space} of ${client} is empty. Recognize a photo with create_new, or enroll a face.`
    : `${plural(state.persons.length, "person")}, ${plural(photos, "photo")} in space ${space} of ${client}.`;
  if (shown.length < state.persons.length) summary += ` The first ${shown.length} are shown.`;
  $("persons-summary").textContent = summary;
  const cards = shown.map((person) => personCard(client, space, person));
  $("persons").replaceChildren(...cards.map((c) => c.node));
  $("persons").dataset.shows = `${client}/${space}`;
  loadThumbnails(cards);
}

function personCard(client, space, person) {
  const id = person.person_id;
  const picture = el("div", { class: "thumb placeholder", "aria-hidden": "true", text: "?" });
  const remove = el("button", {
    type: "button", class: "danger small", text: "Delete",
    "aria-label": `Delete person${id}`,
    onclick: () => deletePerson(id),
  });
  const count = plural(person.photos, "photo");
  const node = el("li", { class: "person", "data-person-id": String(id) },
    picture,
    el("div", { class: "person-text" }, el("strong", { class: "person-tag", text: `person${id}` }),
      el("span", { class: "muted", text: count })),
    remove);
  return { node, picture, client, space, id };
}

/** Fetch each shown person's photos (a few at a time) and show the newest face that has a thumbnail. */
async function loadThumbnails(cards) {
  const queue = cards.slice();
  const worker = async () => {
    while (queue.length) {
      const card = queue.shift();
      if (card.client !== selectedClient() || card.space !== selectedSpace()) return;
      try {
        const detail = await admin(
          `/emulator/clients/${enc(card.client)}/spaces/${card.space}/persons/${card.id}`);
        const photos = (detail.photos || []).filter((p) => p.has_thumbnail);
        const kinds = { set: 0, created: 1 }; // prefer a photo given to set, then the one that created the person
        photos.sort((a, b) => (kinds[a.kind] ?? 2) - (kinds[b.kind] ?? 2) || b.face_id - a.face_id);
        if (photos.length) {
          const img = el("img", {
            class: "thumb", width: "64", height: "64", alt: `person${card.id}`,
            src: `/emulator/faces/${photos[0].face_id}/thumbnail.jpg?client=${enc(card.client)}`,
          });
          card.picture.replaceWith(img);
          card.picture = img;
        }
      } catch (err) {
        card.picture.title = err.message;
      }
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
}

async function refresh() {
  clearError();
  try {
    await loadClients();
    await loadPersons();
  } catch (err) {
    showError(err.message);
  }
}

function confirmAction(text, okLabel) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

async function deletePerson(id) {
  const space = selectedSpace();
  if (!(await confirmAction(`Delete person${id} and all its photos from space ${space}?`, "Delete"))) return;
  await act(async () => {
    const body = await persons("delete", { space: String(space), images: [{ name: "person", person_id: id }] });
    onlyObject("delete", body);
    notify(`person${id} was deleted from space ${space}.`);
  });
}

async function truncateSpace() {
  const space = selectedSpace();
  if (!(await confirmAction(`Delete every person of space ${space}?`, "Truncate"))) return;
  await act(async () => {
    await persons("truncate", { space: String(space) });
    notify(`Space ${space} was truncated.`);
  });
}

/** Run a change, show its error if it fails, then refresh the lists either way. */
async function act(change) {
  clearError();
  try {
    await change();
  } catch (err) {
    showError(err.message);
  }
  try {
    await loadClients();
    await loadPersons();
  } catch (err) {
    showError(err.message);
  }
}

// --- recognize -------------------------------------------------------------------------------

async function recognize(file) {
  if (!file || state.busy) return;
  state.busy = true;
  clearError();
  notify(`Recognizing ${file.name}…`);
  $("drop").classList.add("busy");
  $("drop").setAttribute("aria-busy", "true");
  state.file = file;
  state.faces = [];
  const shown = showPhoto(file);
  const space = selectedSpace();
  try {
    const body = await persons("recognize", {
      space: String(space),
      create_new: $("create-new").checked,
      update_embedding: $("update-embedding").checked,
      images: [{ name: "photo" }],
    }, [["photo", file, file.name || "photo.jpg"]]);
    const object = onlyObject("recognize", body);
    state.faces = object.persons || [];
    await shown;
    renderFaces(space);
    const n = state.faces.length;
    notify(n === 0 ? "No face was found on the photo." : `${plural(n, "face")} found.`);
  } catch (err) {
    $("result").hidden = true;
    notify("");
    showError(err.message);
  } finally {
    state.busy = false;
    $("drop").classList.remove("busy");
    $("drop").removeAttribute("aria-busy");
  }
  if ($("create-new").checked || $("update-embedding").checked) {
    try {
      await loadClients();
      await loadPersons();
    } catch (err) {
      showError(err.message);
    }
  }
}

/** Load the photo into the stage; resolves when it is shown (or could not be: e.g. TIFF in most browsers). */
function showPhoto(file) {
  const img = $("photo");
  if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
  const url = URL.createObjectURL(file);
  img.dataset.url = url;
  $("stage").querySelectorAll(".box").forEach((b) => b.remove());
  return new Promise((resolve) => {
    img.onload = () => { img.dataset.ok = "1"; resolve(); };
    img.onerror = () => { img.dataset.ok = ""; resolve(); };
    img.alt = `The photo ${file.name}`;
    img.src = url;
  });
}

function nextPersonId() {
  const ids = state.persons.map((p) => p.person_id);
  return (ids.length ? Math.max(...ids) : 0) + 1;
}

function renderFaces(space) {
  const img = $("photo");
  const stage = $("stage");
  const canShow = img.dataset.ok === "1" && img.naturalWidth > 0;
  stage.hidden = !canShow;
  const width = img.naturalWidth;
  const height = img.naturalHeight;
  const n = state.faces.length;
  $("result-summary").textContent = canShow
    ? `${state.file.name}: ${plural(n, "face")} in space ${space}.`
    : `${state.file.name}: ${plural(n, "face")} in space ${space} (this browser cannot show the photo).`;
  let fresh = nextPersonId();
  const items = [];
  state.faces.forEach((face, index) => {
    const color = COLORS[index % COLORS.length];
    const similarity = Number(face.similarity).toFixed(4);
    const aliases = Array.isArray(face.aliases) && face.aliases.length ? face.aliases : [];
    const known = face.tag !== "undefined";
    if (canShow) {
      const [left, top, right, bottom] = face.coord;
      const box = el("div", { class: `box${known ? "" : " unknown"}`, "data-tag": face.tag });
      box.style.left = `${(left / width) * 100}%`;
      box.style.top = `${(top / height) * 100}%`;
      box.style.width = `${((right - left) / width) * 100}%`;
      box.style.height = `${((bottom - top) / height) * 100}%`;
      box.style.setProperty("--color", color);
      const end = left / width > 0.55 ? " end" : ""; // a label of a face on the right grows to the left
      const below = top / height < 0.12 ? "1" : ""; // no room above a face at the top
      const label = el("span", { class: `box-label${end}`, "data-below": below },
        el("span", { class: "badge", text: String(index + 1) }),
        el("span", { class: "box-tag", text: face.tag }),
        el("span", { class: "box-sim", text: similarity }));
      if (aliases.length) label.append(el("span", { class: "box-aliases", text: `aka ${aliases.join(", ")}` }));
      box.append(label);
      stage.append(box);
    }
    const match = /^person(\d+)$/.exec(face.tag);
    const suggested = match ? Number(match[1]) : fresh++;
    const input = el("input", { type: "number", min: "1", step: "1", required: "", value: String(suggested),
      id: `enroll-id-${index}`, inputmode: "numeric" });
    const form = el("form", { class: "enroll" },
      el("label", { for: `enroll-id-${index}`, text: "Person id" }), input,
      el("button", { type: "submit", text: `Enroll face ${index + 1}` }));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      enroll(index, Number(input.value));
    });
    const facts = [`similarity ${similarity}`, `confidence ${Number(face.confidence).toFixed(3)}`];
    if (aliases.length) facts.push(`aliases ${aliases.join(", ")}`);
    const item = el("li", { class: "face", "data-tag": face.tag },
      el("span", { class: "badge", text: String(index + 1), "aria-hidden": "true" }),
      el("div", { class: "face-text" },
        el("strong", { class: "face-tag", text: face.tag }),
        el("span", { class: "muted", text: facts.join(" · ") })),
      form);
    item.style.setProperty("--color", color);
    items.push(item);
  });
  $("faces").replaceChildren(...items);
  $("result").hidden = false;
  placeLabels();
}

function overlaps(a, b) {
  return a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
}

/** Move a label below its box when it would cover a label placed before it (faces side by side). */
function placeLabels() {
  const placed = [];
  for (const label of $("stage").querySelectorAll(".box-label")) {
    label.classList.toggle("below", label.dataset.below === "1");
    let rect = label.getBoundingClientRect();
    if (placed.some((other) => overlaps(rect, other))) {
      label.classList.toggle("below");
      const flipped = label.getBoundingClientRect();
      if (placed.some((other) => overlaps(flipped, other))) label.classList.toggle("below");
      rect = label.getBoundingClientRect();
    }
    placed.push(rect);
  }
}

/** The chosen face as its own small JPEG, so that `set` (one face per image) accepts it. */
function cropFace(coord) {
  const img = $("photo");
  const [left, top, right, bottom] = coord;
  const side = Math.max(right - left, bottom - top);
  const margin = side * 0.4;
  const x0 = Math.max(0, left - margin);
  const y0 = Math.max(0, top - margin);
  const x1 = Math.min(img.naturalWidth, right + margin);
  const y1 = Math.min(img.naturalHeight, bottom + margin);
  // Enlarge small faces (the detector needs ~80 px), keep the crop at most 640 px a side.
  const scale = Math.min(640 / Math.max(x1 - x0, y1 - y0), Math.max(1, 160 / side));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round((x1 - x0) * scale);
  canvas.height = Math.round((y1 - y0) * scale);
  const context = canvas.getContext("2d");
  context.imageSmoothingQuality = "high";
  context.drawImage(img, x0, y0, x1 - x0, y1 - y0, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new ApiError("The face could not be cut out"))),
      "image/jpeg", 0.92);
  });
}

async function enroll(index, personId) {
  const face = state.faces[index];
  if (!face || !state.file) return;
  if (!Number.isInteger(personId) || personId < 1) {
    showError("The person id must be a whole number, 1 or more.");
    return;
  }
  const space = selectedSpace();
  await act(async () => {
    let image = state.file;
    let filename = state.file.name || "photo.jpg";
    if (state.faces.length > 1) {
      if ($("photo").dataset.ok !== "1") {
        throw new ApiError("This browser cannot show the photo, so one face cannot be cut out of it.");
      }
      image = await cropFace(face.coord);
      filename = `face-${index + 1}.jpg`;
    }
    const body = await persons("set", { space: String(space), images: [{ name: "face", person_id: personId }] },
      [["face", image, filename]]);
    onlyObject("set", body);
    notify(`Face ${index + 1} was enrolled as person${personId} in space ${space}.`);
  });
}

// --- wiring ----------------------------------------------------------------------------------

function wireDropZone() {
  const drop = $("drop");
  const input = $("file");
  input.addEventListener("change", () => {
    if (input.files && input.files[0]) recognize(input.files[0]);
    input.value = ""; // choosing the same file again recognizes it again
  });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "dragend"]) drop.addEventListener(type, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    event.stopPropagation(); // the page's own drop handler below must not take it twice
    drop.classList.remove("over");
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) recognize(file);
  });
  // A photo dropped anywhere else on the page is taken too, instead of the browser leaving the page for it.
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) recognize(file);
  });
}

function init() {
  $("token").value = recall(STORE.token, "demo");
  $("provider").value = recall(STORE.provider, "mcs");
  $("token").addEventListener("input", () => remember(STORE.token, $("token").value.trim()));
  $("provider").addEventListener("change", () => remember(STORE.provider, $("provider").value));
  $("context").addEventListener("submit", (event) => event.preventDefault());
  $("client").addEventListener("change", () => {
    remember(STORE.client, selectedClient());
    fillSpaces();
    refresh();
  });
  $("space").addEventListener("change", () => {
    remember(STORE.space, String(selectedSpace()));
    $("result").hidden = true;
    refresh();
  });
  $("refresh").addEventListener("click", refresh);
  new ResizeObserver(() => { if (!$("result").hidden) placeLabels(); }).observe($("stage"));
  $("truncate").addEventListener("click", truncateSpace);
  wireDropZone();
  refresh();
}

document.addEventListener("DOMContentLoaded", init);
