// imgclust review: the page. Plain JavaScript, no build step, nothing from the network.
// Data is only ever put into the page as text (textContent, attributes set one by one), never as HTML.
"use strict";

const PER_PAGE = 24;
const app = {
  token: "", state: null, coords: null, labels: null, selected: new Set(), pages: new Map(),
  grid: null, tool: "box", busy: false, observer: null,
};

function $(id) { return document.getElementById(id); }
function el(tag, props, children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "text") e.textContent = v;
    else if (k === "color") e.style.background = v;  // CSSOM, not a style attribute (the CSP forbids those)
    else if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children || []) e.append(c);
  return e;
}
function imageUrl(kind, path) { return "/" + kind + "/" + path.split("/").map(encodeURIComponent).join("/"); }

function say(text, error) {
  const m = $("message");
  m.textContent = text;
  m.classList.toggle("error", !!error);
}

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  if (!r.ok) throw new Error(await r.text());
  return r.json();
}
async function getBytes(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  if (!r.ok) throw new Error(await r.text());
  return r.arrayBuffer();
}
async function post(url, body) {
  if (app.busy) return null;
  app.busy = true;
  document.body.dataset.busy = "1";
  try {
    const r = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Imgclust-Token": app.token },
      body: JSON.stringify(body || {}),
    });
    const answer = await r.json().catch(() => ({ error: "The server sent no answer." }));
    if (!r.ok) { say(answer.error || "Refused.", true); return null; }
    return answer;
  } catch (err) {
    say("Cannot reach the server: " + err.message, true);
    return null;
  } finally {
    app.busy = false;
    delete document.body.dataset.busy;
  }
}

// --- state and edits -------------------------------------------------------------------------

async function refresh(state) {
  app.state = state || await getJSON("/api/state");
  app.labels = new Int32Array(await getBytes("/api/labels"));
  app.pages.clear();
  renderToolbar();
  renderClusters();
  drawMap();
  document.body.dataset.version = String(app.state.version);
}

async function edit(edits, what) {
  const state = await post("/api/edit", { edits });
  if (state) { app.selected.clear(); await refresh(state); say(what); }
}

function clusterName(c) { return c.name ? c.name : "cluster " + c.id; }

function renderToolbar() {
  const s = app.state;
  $("undo").disabled = !s.can_undo;
  $("redo").disabled = !s.can_redo;
  $("edit-count").textContent = s.n_edits + (s.n_edits === 1 ? " edit" : " edits") + (s.n_excluded ? ", " + s.n_excluded + " excluded" : "");
  const m = s.metrics;
  $("metrics").textContent = m && m.after ?
    "accuracy (one-to-one) " + m.before.accuracy_hungarian.toFixed(3) + " before edits, " +
    m.after.accuracy_hungarian.toFixed(3) + " after" : "";
  $("run").textContent = s.n_images + " images, " + s.clusters.length + " clusters (" + s.run.features + " + " +
    s.run.method + ")";
  const sel = $("move-to");
  sel.replaceChildren(...s.clusters.map(c => el("option", { value: String(c.id), text: c.id + ": " + clusterName(c) })),
    el("option", { value: "new", text: "a new cluster" }));
  renderSelection();
}

function renderSelection() {
  const n = app.selected.size;
  $("selection-count").textContent = n + (n === 1 ? " image selected" : " images selected");
  for (const b of ["move", "exclude", "clear-selection"]) $(b).disabled = n === 0;
  for (const f of document.querySelectorAll("figure.thumb")) {
    f.classList.toggle("selected", app.selected.has(Number(f.dataset.i)));
  }
}

function renderClusters() {
  const box = $("clusters");
  if (app.observer) app.observer.disconnect();
  app.observer = new IntersectionObserver(entries => {
    for (const e of entries) if (e.isIntersecting && !e.target.dataset.loaded) loadPage(e.target, 0);
  }, { rootMargin: "400px" });
  const others = app.state.clusters;
  box.replaceChildren(...others.map(c => {
    const grid = el("div", { class: "grid" });
    const pager = el("div", { class: "pager" });
    const renameInput = el("input", { class: "rename-name", type: "text", maxlength: "200", placeholder: "new name" });
    const mergeSel = el("select", { class: "merge-from" }, [el("option", { value: "", text: "merge another cluster in…" }),
      ...others.filter(o => o.id !== c.id).map(o => el("option", { value: String(o.id), text: o.id + ": " + clusterName(o) }))]);
    const splitN = el("input", { class: "split-n", type: "number", min: "2", max: String(c.size), value: "2" });
    const labels = c.labels.length ? "labels: " + c.labels.map(([l, n]) => l + " " + n).join(", ") : "";
    const section = el("section", { class: "cluster", "data-id": String(c.id) }, [
      el("h2", {}, [el("span", { class: "swatch", color: c.color }), el("span", { class: "cid", text: "#" + c.id }),
        el("span", { class: "cname", text: clusterName(c) }),
        ...(c.given ? [el("span", { class: "given", text: "renamed" + (c.suggested ? " (suggested: " + c.suggested + ")" : "") })] : []),
        el("span", { class: "size muted", text: c.size + (c.size === 1 ? " image" : " images") })]),
      el("div", { class: "labels", text: labels }),
      el("div", { class: "actions" }, [
        renameInput, el("button", { type: "button", class: "do-rename", text: "Rename", onclick: () => {
          const name = renameInput.value.trim();
          if (name) edit([{ op: "rename", cluster: c.id, name }], "Renamed cluster " + c.id + ".");
        } }),
        mergeSel, el("button", { type: "button", class: "do-merge", text: "Merge", onclick: () => {
          if (mergeSel.value) edit([{ op: "merge", clusters: [c.id, Number(mergeSel.value)] }], "Merged cluster " + mergeSel.value + " into " + c.id + ".");
        } }),
        el("span", { text: "split into" }), splitN, el("button", { type: "button", class: "do-split", text: "Split", onclick: async () => {
          say("Splitting cluster " + c.id + "…");
          const state = await post("/api/split", { cluster: c.id, n: Number(splitN.value) });
          if (state) { app.selected.clear(); await refresh(state); say("Split cluster " + c.id + " into " + splitN.value + "."); }
        } }),
        el("button", { type: "button", class: "select-page", text: "Select page", onclick: () => {
          for (const f of grid.querySelectorAll("figure.thumb")) app.selected.add(Number(f.dataset.i));
          renderSelection(); drawMap();
        } }),
      ]),
      grid, pager,
    ]);
    app.observer.observe(section);
    return section;
  }));
}

async function loadPage(section, page) {
  section.dataset.loaded = "1";
  const id = Number(section.dataset.id);
  let data;
  try { data = await getJSON("/api/cluster?id=" + id + "&page=" + page + "&per=" + PER_PAGE); }
  catch (err) { return; }
  const grid = section.querySelector(".grid");
  grid.replaceChildren(...data.items.map(item => {
    const cls = "thumb" + (item.outlier ? " outlier" : "") + (item.moved ? " moved" : "") + (app.selected.has(item.i) ? " selected" : "");
    const tip = item.path + (item.label ? "\nlabel: " + item.label : "") + (item.distance !== null ? "\ndistance: " + item.distance : "") +
      (item.outlier ? "\npossible outlier" : "") + (item.moved ? "\nmoved here" : "");
    return el("figure", { class: cls, "data-i": String(item.i), "data-path": item.path, title: tip, onclick: () => {
      if (app.selected.has(item.i)) app.selected.delete(item.i); else app.selected.add(item.i);
      renderSelection(); drawMap();
    } }, [el("img", { src: imageUrl("thumb", item.path), alt: item.path, loading: "lazy" }),
      el("figcaption", { text: item.path.split("/").pop() })]);
  }));
  const pages = Math.max(1, Math.ceil(data.total / data.per));
  const pager = section.querySelector(".pager");
  pager.replaceChildren(
    el("button", { type: "button", class: "prev", text: "◀", ...(page === 0 ? { disabled: "" } : {}), onclick: () => loadPage(section, page - 1) }),
    el("span", { text: "page " + (page + 1) + " of " + pages + ", nearest the centre first" }),
    el("button", { type: "button", class: "next", text: "▶", ...(page + 1 >= pages ? { disabled: "" } : {}), onclick: () => loadPage(section, page + 1) }));
  section.dataset.page = String(page);
}

// --- the map ---------------------------------------------------------------------------------

const PAD = 8;
function canvasXY(i, w, h) {
  return [PAD + app.coords[2 * i] * (w - 2 * PAD), PAD + (1 - app.coords[2 * i + 1]) * (h - 2 * PAD)];
}

function buildGrid(w, h) {
  const G = 64, cells = new Map();
  const n = app.coords.length / 2;
  for (let i = 0; i < n; i++) {
    const [x, y] = canvasXY(i, w, h);
    const key = Math.floor(x / w * G) * G + Math.floor(y / h * G);
    let list = cells.get(key);
    if (!list) cells.set(key, list = []);
    list.push(i);
  }
  app.grid = { G, cells, w, h };
}

function hexRGB(hex) { return [1, 3, 5].map(k => parseInt(hex.slice(k, k + 2), 16)); }

// The points are drawn into an ImageData once per (labels, size); a selection or a drag only copies it
// and draws the selected points and the outline on top, so the map stays smooth with 100,000 images.
function drawMap(path) {
  if (!app.coords) return;
  const canvas = $("map");
  const w = canvas.width, h = canvas.height;
  if (!app.grid || app.grid.w !== w || app.grid.h !== h) buildGrid(w, h);
  const ctx = canvas.getContext("2d");
  const n = app.coords.length / 2;
  const r = n < 2000 ? 3 : n < 20000 ? 2 : 1;  // bigger dots when there are few
  const colors = new Map(app.state.clusters.map(c => [c.id, hexRGB(c.color)]));
  const grey = [200, 200, 200];
  const key = app.state.version + ":" + w + "x" + h;
  if (!app.base || app.baseKey !== key) {
    const img = ctx.createImageData(w, h);
    const px = img.data;
    px.fill(255);
    for (let i = 0; i < n; i++) {
      const x = Math.round(PAD + app.coords[2 * i] * (w - 2 * PAD));
      const y = Math.round(PAD + (1 - app.coords[2 * i + 1]) * (h - 2 * PAD));
      const c = app.labels[i];
      const rgb = c < 0 ? grey : (colors.get(c) || grey);
      for (let yy = Math.max(0, y - r); yy <= Math.min(h - 1, y + r); yy++) {
        for (let xx = Math.max(0, x - r); xx <= Math.min(w - 1, x + r); xx++) {
          const o = 4 * (yy * w + xx);
          px[o] = rgb[0]; px[o + 1] = rgb[1]; px[o + 2] = rgb[2];
        }
      }
    }
    app.base = img;
    app.baseKey = key;
  }
  ctx.putImageData(app.base, 0, 0);
  for (const i of app.selected) {  // selected on top, ringed in black
    const [x, y] = canvasXY(i, w, h);
    const c = app.labels[i];
    ctx.fillStyle = "#000";
    ctx.fillRect(Math.round(x) - r - 2, Math.round(y) - r - 2, 2 * r + 5, 2 * r + 5);
    const rgb = c < 0 ? grey : (colors.get(c) || grey);
    ctx.fillStyle = "rgb(" + rgb.join(",") + ")";
    ctx.fillRect(Math.round(x) - r, Math.round(y) - r, 2 * r + 1, 2 * r + 1);
  }
  if (path && path.length > 1) {
    ctx.strokeStyle = "#06f"; ctx.lineWidth = 1.5; ctx.beginPath();
    ctx.moveTo(path[0][0], path[0][1]);
    for (const [x, y] of path.slice(1)) ctx.lineTo(x, y);
    if (app.tool === "lasso") ctx.closePath();
    ctx.stroke();
  }
}

function nearestPoint(x, y, radius) {
  const g = app.grid;
  if (!g) return -1;
  const cx = Math.floor(x / g.w * g.G), cy = Math.floor(y / g.h * g.G);
  let best = -1, bestD = radius * radius;
  for (let dx = -1; dx <= 1; dx++) for (let dy = -1; dy <= 1; dy++) {
    const list = g.cells.get((cx + dx) * g.G + (cy + dy));
    if (!list) continue;
    for (const i of list) {
      if (app.labels[i] < 0) continue;
      const [px, py] = canvasXY(i, g.w, g.h);
      const d = (px - x) ** 2 + (py - y) ** 2;
      if (d < bestD) { bestD = d; best = i; }
    }
  }
  return best;
}

function insidePolygon(x, y, poly) {
  let inside = false;
  for (let a = 0, b = poly.length - 1; a < poly.length; b = a++) {
    const [xa, ya] = poly[a], [xb, yb] = poly[b];
    if ((ya > y) !== (yb > y) && x < (xb - xa) * (y - ya) / (yb - ya) + xa) inside = !inside;
  }
  return inside;
}

function selectRegion(path, add) {
  if (!add) app.selected.clear();
  const canvas = $("map");
  const w = canvas.width, h = canvas.height, n = app.coords.length / 2;
  let test;
  if (app.tool === "box") {
    const [x0, y0] = path[0], [x1, y1] = path[path.length - 1];
    const xa = Math.min(x0, x1), xb = Math.max(x0, x1), ya = Math.min(y0, y1), yb = Math.max(y0, y1);
    test = (x, y) => x >= xa && x <= xb && y >= ya && y <= yb;
  } else {
    test = (x, y) => insidePolygon(x, y, path);
  }
  for (let i = 0; i < n; i++) {
    if (app.labels[i] < 0) continue;
    const [x, y] = canvasXY(i, w, h);
    if (test(x, y)) app.selected.add(i);
  }
  renderSelection();
  drawMap();
}

function setupMap() {
  const canvas = $("map");
  const resize = () => {
    const r = canvas.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.max(100, Math.round(r.width * ratio));
    canvas.height = Math.max(75, Math.round(r.height * ratio));
    drawMap();
  };
  const toCanvas = ev => {
    const r = canvas.getBoundingClientRect();
    return [(ev.clientX - r.left) * canvas.width / r.width, (ev.clientY - r.top) * canvas.height / r.height];
  };
  let drag = null, hoverTimer = null, hoverAt = -1;
  canvas.addEventListener("mousedown", ev => { drag = { path: [toCanvas(ev)], add: ev.shiftKey }; ev.preventDefault(); });
  window.addEventListener("mouseup", ev => {
    if (!drag) return;
    const d = drag; drag = null;
    d.path.push(toCanvas(ev));
    const [x0, y0] = d.path[0], [x1, y1] = d.path[d.path.length - 1];
    if (Math.abs(x1 - x0) + Math.abs(y1 - y0) < 4 && d.path.length < 4) {  // a click: pick the nearest image
      const i = nearestPoint(x0, y0, 8);
      if (!d.add) app.selected.clear();
      if (i >= 0) app.selected.add(i);
      renderSelection(); drawMap();
      return;
    }
    selectRegion(d.path, d.add);
  });
  canvas.addEventListener("mousemove", ev => {
    const [x, y] = toCanvas(ev);
    if (drag) {
      drag.path.push([x, y]);
      drawMap(app.tool === "box" ? boxPath(drag.path[0], [x, y]) : drag.path);
      return;
    }
    const i = nearestPoint(x, y, 8);
    const hover = $("hover");
    if (i < 0) { hover.hidden = true; hoverAt = -1; return; }
    const r = canvas.getBoundingClientRect();
    hover.style.left = Math.min(ev.clientX - r.left + 14, r.width - 160) + "px";
    hover.style.top = (ev.clientY - r.top + 14) + "px";
    if (i === hoverAt) return;
    hoverAt = i;
    clearTimeout(hoverTimer);
    hoverTimer = setTimeout(async () => {
      const p = await getJSON("/api/point?i=" + i).catch(() => null);
      if (!p || hoverAt !== i) return;
      $("hover-img").src = imageUrl("preview", p.path);
      $("hover-img").alt = p.path;
      $("hover-text").textContent = p.path + " — cluster " + p.cluster + (p.label ? ", label " + p.label : "");
      hover.hidden = false;
    }, 40);
  });
  canvas.addEventListener("mouseleave", () => { $("hover").hidden = true; hoverAt = -1; });
  for (const r of document.querySelectorAll("input[name=tool]")) r.addEventListener("change", () => { app.tool = r.value; });
  window.addEventListener("resize", resize);
  resize();
}

function boxPath([x0, y0], [x1, y1]) { return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]; }

// --- start -----------------------------------------------------------------------------------

async function main() {
  try {
    app.token = (await getJSON("/api/token")).token;
    const [state, map] = await Promise.all([getJSON("/api/state"), getBytes("/api/map")]);
    if (map.byteLength) app.coords = new Float32Array(map);
    else { $("map").hidden = true; $("no-map").hidden = false; }
    await refresh(state);
  } catch (err) {
    say("Cannot load the run: " + err.message, true);
    return;
  }
  setupMap();
  $("undo").addEventListener("click", async () => { const s = await post("/api/undo"); if (s) { app.selected.clear(); await refresh(s); say("Undone."); } });
  $("redo").addEventListener("click", async () => { const s = await post("/api/redo"); if (s) { app.selected.clear(); await refresh(s); say("Redone."); } });
  $("move").addEventListener("click", () => {
    const to = $("move-to").value;
    const rows = [...app.selected];
    edit([{ op: "move", rows, to: to === "new" ? "new" : Number(to) }], "Moved " + rows.length + " images.");
  });
  $("exclude").addEventListener("click", () => {
    const rows = [...app.selected];
    edit([{ op: "exclude", rows }], "Excluded " + rows.length + " images; they will not be exported.");
  });
  $("clear-selection").addEventListener("click", () => { app.selected.clear(); renderSelection(); drawMap(); });
  document.addEventListener("keydown", ev => {
    if (!(ev.ctrlKey || ev.metaKey) || ev.key.toLowerCase() !== "z" || ev.target.tagName === "INPUT") return;
    ev.preventDefault();
    $(ev.shiftKey ? "redo" : "undo").click();
  });
  document.body.dataset.ready = "1";
}

main();
