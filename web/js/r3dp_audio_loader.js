// Upload button and player for "Load Audio (r3dp)".
//
// The frontend's own audio upload widget only works on core's audio nodes (it expects their extra player widget),
// so the pack brings its own: the file goes to ComfyUI's input folder through /upload/image (which accepts any
// file) and is selected in the node's `audio` list; the player previews the selected file.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const EXTENSION = "r3dp.AudioLoader";
const NODE_ID = "R3DP_LoadAudio";
const PLAYER = "r3dp_audio_player";

function inputUrl(path) {
  const slash = path.lastIndexOf("/");
  const params = new URLSearchParams({
    filename: slash < 0 ? path : path.slice(slash + 1),
    subfolder: slash < 0 ? "" : path.slice(0, slash),
    type: "input",
    rand: String(Math.random()),
  });
  return api.apiURL(`/view?${params.toString()}`);
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
  const widget = node.addDOMWidget(PLAYER, "r3dp_audio", player, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => 40,
    getMaxHeight: () => 54,
  });
  widget.serialize = false;
  widget.player = player;
  const show = () => {
    if (choice.value) player.src = inputUrl(choice.value);
  };
  const callback = choice.callback;
  choice.callback = function () {
    const result = callback?.apply(this, arguments);
    show();
    return result;
  };
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

const extension = {
  name: EXTENSION,
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_ID) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      attach(this);
      return result;
    };
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const result = onConfigure?.apply(this, arguments);
      const choice = this.widgets?.find((w) => w.name === "audio");
      const player = this.widgets?.find((w) => w.name === PLAYER)?.player;
      if (choice?.value && player) player.src = inputUrl(choice.value);
      return result;
    };
  },
};

if (!app.extensions?.some?.((e) => e.name === EXTENSION)) {
  try {
    app.registerExtension(extension);
  } catch (error) {
    console.warn(`[r3dp] ${error.message}`);
  }
}
