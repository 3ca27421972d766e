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
// a white ring), and the click counted on the status line as waiting: no request is made for either,
// so the click's own event leaves at once (docs/performance.md). Each click's event ends (answered or
// refused) in app.py's CLICK_ANSWERED, which takes the oldest waiting click away: by then the server's
// picture draws that click itself, or it was refused. Clicks run in order, so the oldest is the one.
const waiting = [];  // the markers of the clicks sent and not answered yet, oldest first
const drawWaitingMarker = (img, event) => {
  const canvas = document.getElementById("canvas");
  const natural = {width: img.naturalWidth, height: img.naturalHeight};
  const box = img.getBoundingClientRect();
  // Gradio sends a click only for a pixel of the picture (its Image's own test, at a scale of at most 1).
  const sent = Math.min(box.width / natural.width, box.height / natural.height, 1);
  const px = Math.round((event.clientX - box.left - (box.width - natural.width * sent) / 2) / sent);
  const py = Math.round((event.clientY - box.top - (box.height - natural.height * sent) / 2) / sent);
  if (px < 0 || py < 0 || px >= natural.width || py >= natural.height) return;
  const scale = Math.min(box.width / natural.width, box.height / natural.height);  // object-fit: contain
  const left = box.left + (box.width - natural.width * scale) / 2;
  const top = box.top + (box.height - natural.height * scale) / 2;
  const x = event.clientX - left, y = event.clientY - top;
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
  waiting.push(marker);
  showWaiting();
};
// " (+2 waiting)" after the status line's click count (views.status_line's m2n2-clicks part).
const showWaiting = () => {
  const clicks = document.querySelector("#status .m2n2-clicks");
  if (!clicks) return;
  const text = waiting.length ? ` (+${waiting.length} waiting)` : "";
  let tail = clicks.querySelector(".m2n2-waiting");
  if (!tail) {
    if (!text) return;
    tail = clicks.appendChild(document.createElement("span"));
    tail.className = "m2n2-waiting";
  }
  if (tail.textContent !== text) tail.textContent = text;
};
window.m2n2ClickAnswered = () => {
  const marker = waiting.shift();
  if (marker) marker.remove();
  showWaiting();
};
// Each result draws the status line anew: count the waiting clicks in it again.
new MutationObserver((changes) => {
  const inStatus = (change) => {
    const target = change.target.nodeType === Node.TEXT_NODE ? change.target.parentElement : change.target;
    return target instanceof Element && target.closest("#status") && !target.closest(".m2n2-waiting");
  };
  if (changes.some(inStatus)) showWaiting();
}).observe(document.documentElement, {subtree: true, childList: true, characterData: true});
