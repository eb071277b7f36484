// What the pack's web extensions share: registering once, chaining node callbacks, DOM widgets, /view URLs.
//
// ComfyUI loads every .js file of the web folder; this one only exports functions, so loading it on its own
// registers nothing.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

// ComfyUI registers web folders both from WEB_DIRECTORY and from pyproject's [tool.comfy] web; if the pack's
// folder name differs from its project name a file is loaded twice, and the second registration is a no-op.
export function registerOnce(extension) {
  if (app.extensions?.some?.((e) => e.name === extension.name)) return;
  try {
    app.registerExtension(extension);
  } catch (error) {
    console.warn(`[r3dp] ${error.message}`);
  }
}

// Register extension `name`, which gives every node of type `nodeId` a widget: `attach(node)` when the node is
// created, `restore(node)` after a saved workflow has set its widget values (they arrive after creation).
export function registerNodeWidget(name, nodeId, attach, restore) {
  registerOnce({
    name,
    async beforeRegisterNodeDef(nodeType, nodeData) {
      if (nodeData?.name !== nodeId) return;
      chainCallback(nodeType.prototype, "onNodeCreated", function () {
        attach(this);
      });
      chainCallback(nodeType.prototype, "onConfigure", function () {
        restore(this);
      });
    },
  });
}

// Run `after` (with the same `this` and arguments) each time `owner[name]` is called, after whatever was
// there before; the original's result is returned. Works on node prototypes and on widgets alike.
export function chainCallback(owner, name, after) {
  const original = owner[name];
  owner[name] = function () {
    const result = original?.apply(this, arguments);
    after.apply(this, arguments);
    return result;
  };
}

// A DOM widget that is never saved in the workflow (nor sent with the prompt) and stays visible when zoomed out.
export function addViewWidget(node, name, type, element, minHeight, maxHeight) {
  const widget = node.addDOMWidget(name, type, element, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => minHeight,
    getMaxHeight: () => maxHeight,
  });
  widget.serialize = false;
  return widget;
}

// URL of a file ComfyUI serves through /view ({filename, subfolder, type}); a random tail defeats the cache.
export function viewUrl({ filename, subfolder, type }) {
  const params = new URLSearchParams({
    filename,
    subfolder: subfolder ?? "",
    type: type ?? "temp",
    rand: String(Math.random()),
  });
  return api.apiURL(`/view?${params.toString()}`);
}
