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
  if (!img || (img.complete && img.naturalWidth)) return;
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
