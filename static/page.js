// M2N2 Studio's page script: app.py puts it in the page's <head> (the element ids are app.py's).
// The slider's number box sends its value when it loses focus; Enter should do the same.
document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && event.target.matches("#threshold input[type=number]")) event.target.blur();
});
// Gradio finds a click's pixel from the image's natural size, which is 0 while a new picture (the
// next marker or mask) loads: such a click would be dropped. Hold it until the picture is there,
// then replay it on the picture shown by then (Gradio 6 may have swapped the element meanwhile).
document.addEventListener("click", (event) => {
  const img = event.target instanceof HTMLImageElement && event.target.closest("#canvas") ? event.target : null;
  if (!img) return;
  if (img.complete && img.naturalWidth) return drawWaitingMarker(img, event);
  event.stopPropagation();
  event.preventDefault();
  const {clientX, clientY} = event;
  const replay = () => {
    const shown = document.querySelector("#canvas img");
    if (!shown) return;
    if (!(shown.complete && shown.naturalWidth)) return shown.addEventListener("load", replay, {once: true});
    shown.dispatchEvent(new MouseEvent("click", {bubbles: true, cancelable: true, clientX, clientY}));
  };
  img.addEventListener("load", replay, {once: true});
}, true);
// The example thumbnails get their names (their files', e.g. "astronaut"): a caption (app.py's CSS), a
// tooltip and what a screen reader says. Gradio draws the thumbnails after the page loads.
new MutationObserver(() => {
  for (const img of document.querySelectorAll("#examples button img")) {
    const button = img.closest("button");
    const name = decodeURIComponent(img.src.split("/").pop()).replace(/\.[^.]*$/, "");
    if (button.dataset.name === name) continue;
    button.dataset.name = button.title = name;
    button.setAttribute("aria-label", name);
  }
}).observe(document.documentElement, {childList: true, subtree: true});

// A click's marker, drawn here at once (as views.overlay draws it: green foreground, red background,
// a white ring), so that the marker's event carries no picture and the click's own event, which
// Gradio sends only after it, leaves sooner (docs/performance.md). The server's next picture draws
// every waiting click itself; any new picture (the mask, or a refused click's redraw) replaces these.
const drawWaitingMarker = (img, event) => {
  const canvas = document.getElementById("canvas");
  const natural = {width: img.naturalWidth, height: img.naturalHeight};
  const box = img.getBoundingClientRect();
  const scale = Math.min(box.width / natural.width, box.height / natural.height);  // object-fit: contain
  const left = box.left + (box.width - natural.width * scale) / 2;
  const top = box.top + (box.height - natural.height * scale) / 2;
  const x = event.clientX - left, y = event.clientY - top;
  if (x < 0 || y < 0 || x > natural.width * scale || y > natural.height * scale) return;
  const radius = Math.max(3, Math.round(Math.min(natural.width, natural.height) / 70));  // views.marker_radius
  const inner = radius * scale, ring = (radius + Math.max(1, Math.floor(radius / 3))) * scale;
  const foreground = (document.querySelector("#mode input:checked") || {value: "1"}).value !== "0";
  const home = canvas.getBoundingClientRect();
  const marker = document.createElement("div");
  marker.className = "m2n2-waiting-marker";
  marker.style.cssText = `position:absolute; z-index:5; pointer-events:none; box-sizing:border-box;
    border-radius:50%; left:${left - home.left + x - ring}px; top:${top - home.top + y - ring}px;
    width:${2 * ring}px; height:${2 * ring}px; border:${ring - inner}px solid #fff;
    background:${foreground ? "rgb(40, 200, 60)" : "rgb(235, 45, 45)"}`;
  canvas.appendChild(marker);
};
// They go with the canvas's next picture, or when the status line stops counting clicks as waiting
// (a click refused where there is no picture to draw again).
new MutationObserver((changes) => {
  const inCanvas = (node) => node instanceof Element && node.closest("#canvas");
  const isPicture = (node) => node.nodeName === "IMG" || (node instanceof Element && node.querySelector("img"));
  const done = changes.some((change) => {
    if (change.type === "attributes") return change.target instanceof HTMLImageElement && inCanvas(change.target);
    const target = change.target.nodeType === Node.TEXT_NODE ? change.target.parentElement : change.target;
    const status = target instanceof Element && target.closest("#status");
    if (status) return !status.textContent.includes("waiting");
    return inCanvas(target) && [...change.addedNodes, ...change.removedNodes].some(isPicture);
  });
  if (done) document.querySelectorAll("#canvas .m2n2-waiting-marker").forEach((marker) => marker.remove());
}).observe(document.documentElement, {subtree: true, childList: true, characterData: true, attributes: true,
                                      attributeFilter: ["src"]});
