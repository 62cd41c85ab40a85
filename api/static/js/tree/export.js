// Export the current view as a self-contained SVG, or as a PNG at twice the screen's resolution.
import { downloadBlob, safeFilename } from "../common.js";
import { svg, svgSize } from "./canvas.js";
import { state } from "./state.js";

const PNG_SCALE = 2;

function svgText() {
  const { w, h } = svgSize();
  const clone = svg.node().cloneNode(true);
  clone.setAttribute("xmlns", "http://www.w3.org/2000/svg");
  clone.setAttribute("width", w);
  clone.setAttribute("height", h);
  clone.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const bg = document.createElementNS("http://www.w3.org/2000/svg", "rect");
  bg.setAttribute("width", "100%");
  bg.setAttribute("height", "100%");
  bg.setAttribute("fill", "#ffffff");
  clone.insertBefore(bg, clone.firstChild.nextSibling); // after the <style>
  return { text: new XMLSerializer().serializeToString(clone), w, h };
}

function exportName(ext) {
  const base = state.source.job ? `tokentree-${state.source.job}` : `tokentree-${safeFilename(state.source.name || "tree")}`;
  return `${base}.${ext}`;
}

export function exportSvg() {
  downloadBlob(exportName("svg"), new Blob([svgText().text], { type: "image/svg+xml" }));
}

/** `onError(message)` when the browser cannot rasterise the SVG. */
export function exportPng(onError) {
  const { text, w, h } = svgText();
  const url = URL.createObjectURL(new Blob([text], { type: "image/svg+xml" }));
  const img = new Image();
  img.onload = () => {
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(w * PNG_SCALE);
    canvas.height = Math.round(h * PNG_SCALE);
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.scale(PNG_SCALE, PNG_SCALE);
    ctx.drawImage(img, 0, 0, w, h);
    URL.revokeObjectURL(url);
    canvas.toBlob((blob) => downloadBlob(exportName("png"), blob), "image/png");
  };
  img.onerror = () => {
    URL.revokeObjectURL(url);
    onError("The browser could not rasterise the SVG.");
  };
  img.src = url;
}
