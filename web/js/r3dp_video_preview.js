// In-node player for the talking videos r3dp nodes produce (video + its audio track).
//
// A node that wants a player returns `ui = {"r3dp_video": [{filename, subfolder, type, format}]}` (see
// nodes/_runtime.write_preview_video); the mp4 is served by ComfyUI's /view route. One <video> per node,
// replaced on every run; several entries (one per portrait) get a selector.
import { addViewWidget, chainCallback, registerOnce, viewUrl } from "./r3dp_common.js";

const EXTENSION = "r3dp.VideoPreview";
const WIDGET = "r3dp_video_player";

function ensurePlayer(node) {
  let widget = node.widgets?.find((w) => w.name === WIDGET);
  if (widget) return widget;

  const container = document.createElement("div");
  container.className = "r3dp-video-preview";
  container.style.cssText = "display:flex;flex-direction:column;gap:4px;width:100%;height:100%;";
  const picker = document.createElement("select");
  picker.style.cssText = "display:none;font-size:11px;";
  const video = document.createElement("video");
  video.controls = true;
  video.loop = true;
  video.playsInline = true;
  video.preload = "metadata";
  video.style.cssText = "width:100%;flex:1;min-height:0;object-fit:contain;background:#000;border-radius:4px;";
  video.addEventListener("loadedmetadata", () => {
    node.setSize([node.size[0], node.computeSize([node.size[0], node.size[1]])[1]]);
    node.graph?.setDirtyCanvas(true, true);
  });
  container.append(picker, video);

  widget = addViewWidget(node, WIDGET, "r3dp_video", container, 200, 1024);
  widget.video = video;
  widget.picker = picker;
  picker.addEventListener("change", () => {
    video.src = picker.value;
    video.play().catch(() => {});
  });
  return widget;
}

function showVideos(node, entries) {
  const widget = ensurePlayer(node);
  const urls = entries.map(viewUrl);
  widget.picker.replaceChildren(
    ...urls.map((url, i) => {
      const option = document.createElement("option");
      option.value = url;
      option.textContent = `portrait ${i + 1}`;
      return option;
    }),
  );
  widget.picker.style.display = urls.length > 1 ? "block" : "none";
  widget.video.src = urls[0];
  widget.video.dataset.r3dpFile = entries[0].filename;
  node.graph?.setDirtyCanvas(true, true);
}

const extension = {
  name: EXTENSION,
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("R3DP_")) return;
    chainCallback(nodeType.prototype, "onExecuted", function (message) {
      const entries = message?.r3dp_video;
      if (Array.isArray(entries) && entries.length) showVideos(this, entries);
    });
  },
};

registerOnce(extension);
