// Upload button and player for "Load Audio (r3dp)".
//
// The frontend's own audio upload widget only works on core's audio nodes (it expects their extra player widget),
// so the pack brings its own: the file goes to ComfyUI's input folder through /upload/image (which accepts any
// file) and is selected in the node's `audio` list; the player previews the selected file.
import { api } from "../../../scripts/api.js";
import { addViewWidget, chainCallback, registerNodeWidget, viewUrl } from "./r3dp_common.js";

const EXTENSION = "r3dp.AudioLoader";
const NODE_ID = "R3DP_LoadAudio";
const PLAYER = "r3dp_audio_player";

function inputUrl(path) {
  const slash = path.lastIndexOf("/");
  return viewUrl({
    filename: slash < 0 ? path : path.slice(slash + 1),
    subfolder: slash < 0 ? "" : path.slice(0, slash),
    type: "input",
  });
}

async function upload(file, choice) {
  const body = new FormData();
  body.append("image", file);
  const response = await api.fetchApi("/upload/image", { method: "POST", body });
  if (response.status !== 200) throw new Error(`${response.status} ${response.statusText}`);
  const data = await response.json();
  const path = data.subfolder ? `${data.subfolder}/${data.name}` : data.name;
  if (!choice.options.values.includes(path)) choice.options.values.push(path);
  choice.value = path;
  choice.callback?.(path);
}

function attach(node) {
  const choice = node.widgets?.find((w) => w.name === "audio");
  if (!choice || node.widgets.some((w) => w.name === PLAYER)) return;
  const player = document.createElement("audio");
  player.controls = true;
  player.preload = "metadata";
  player.style.cssText = "width:100%;";
  const widget = addViewWidget(node, PLAYER, "r3dp_audio", player, 40, 54);
  widget.player = player;
  const show = () => {
    if (choice.value) player.src = inputUrl(choice.value);
  };
  chainCallback(choice, "callback", show);
  widget.upload = async (file) => {
    try {
      await upload(file, choice);
    } catch (error) {
      console.error(`[r3dp] audio upload failed: ${error.message}`);
    }
  };
  // a fresh file picker per click, never left in the page
  const choose = () => {
    const picker = document.createElement("input");
    picker.type = "file";
    picker.accept = "audio/*,video/*";
    picker.addEventListener("change", () => picker.files?.length && widget.upload(picker.files[0]));
    picker.click();
  };
  const button = node.addWidget("button", "choose audio file to upload", null, choose, { serialize: false });
  button.serialize = false;
  show();
}

function restore(node) {
  const choice = node.widgets?.find((w) => w.name === "audio");
  const player = node.widgets?.find((w) => w.name === PLAYER)?.player;
  if (choice?.value && player) player.src = inputUrl(choice.value);
}

registerNodeWidget(EXTENSION, NODE_ID, attach, restore);
