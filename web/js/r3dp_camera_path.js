// Camera-path editor for the Head Pose node: yaw/pitch keyframes on a small timeline canvas.
//
// The canvas is only a view of the node's `keyframes` text input ("seconds: yaw, pitch; ..." in degrees,
// offsets from the source pose). Every edit is written back into that input, so the workflow JSON (and the
// API prompt) carries the path and the Python side never depends on this file.
import { app } from "../../../scripts/app.js";
import { addViewWidget, chainCallback, registerNodeWidget } from "./r3dp_common.js";

const EXTENSION = "r3dp.CameraPath";
const NODE_ID = "R3DP_HeadPose";
const WIDGET = "r3dp_camera_path";
const SOURCE_WIDGET = "keyframes";
const MAX_DEG = 45;
const HEIGHT = 150;
const COLORS = { yaw: "#4fa3ff", pitch: "#ffab40", grid: "#3a3a3a", zero: "#666", text: "#aaa" };

export function parseKeyframes(text) {
  const keys = [];
  for (const part of String(text ?? "").split(";")) {
    const match = part.trim().match(/^([-+]?\d*\.?\d+)\s*:\s*([-+]?\d*\.?\d+)\s*,\s*([-+]?\d*\.?\d+)$/);
    if (match) keys.push({ t: Math.max(0, +match[1]), yaw: +match[2], pitch: +match[3] });
  }
  keys.sort((a, b) => a.t - b.t);
  return keys;
}

export function formatKeyframes(keys) {
  const r = (x, d) => String(Math.round(x * 10 ** d) / 10 ** d);
  return keys.map((k) => `${r(k.t, 2)}: ${r(k.yaw, 1)}, ${r(k.pitch, 1)}`).join("; ");
}

function interpolate(keys, t, channel) {
  if (!keys.length) return 0;
  if (t <= keys[0].t) return keys[0][channel];
  for (let i = 1; i < keys.length; i++) {
    if (t <= keys[i].t) {
      const a = keys[i - 1];
      const b = keys[i];
      const f = b.t > a.t ? (t - a.t) / (b.t - a.t) : 0;
      return a[channel] + f * (b[channel] - a[channel]);
    }
  }
  return keys[keys.length - 1][channel];
}

class PathEditor {
  constructor(node, source) {
    this.node = node;
    this.source = source;
    this.keys = parseKeyframes(source.value);
    this.drag = null;
    this.element = document.createElement("div");
    this.element.className = "r3dp-camera-path";
    this.element.style.cssText = "display:flex;flex-direction:column;width:100%;height:100%;";
    this.canvas = document.createElement("canvas");
    this.canvas.style.cssText = "width:100%;flex:1;min-height:0;background:#1e1e1e;border-radius:4px;cursor:crosshair;";
    const help = document.createElement("div");
    help.textContent = "click: yaw key · shift+click: pitch key · drag: move · right-click: delete";
    help.style.cssText = `font-size:10px;color:${COLORS.text};padding:2px 0;`;
    this.element.append(this.canvas, help);
    for (const type of ["pointerdown", "pointermove", "pointerup", "contextmenu", "wheel"]) {
      this.canvas.addEventListener(type, (e) => this.onEvent(type, e));
    }
    new ResizeObserver(() => this.draw()).observe(this.canvas);
  }

  get duration() {
    const last = this.keys.length ? this.keys[this.keys.length - 1].t : 0;
    return Math.max(4, Math.ceil(last * 1.25 + 0.5));
  }

  toCanvas(t, deg) {
    const { width, height } = this.canvas;
    return [8 + (t / this.duration) * (width - 16), height / 2 - (deg / MAX_DEG) * (height / 2 - 8)];
  }

  fromCanvas(x, y) {
    const { width, height } = this.canvas;
    const t = Math.max(0, ((x - 8) / (width - 16)) * this.duration);
    const deg = Math.max(-MAX_DEG, Math.min(MAX_DEG, ((height / 2 - y) / (height / 2 - 8)) * MAX_DEG));
    return [t, deg];
  }

  pointer(e) {
    const rect = this.canvas.getBoundingClientRect();
    return [
      ((e.clientX - rect.left) * this.canvas.width) / Math.max(rect.width, 1),
      ((e.clientY - rect.top) * this.canvas.height) / Math.max(rect.height, 1),
    ];
  }

  hit(x, y) {
    for (let i = 0; i < this.keys.length; i++) {
      for (const channel of ["yaw", "pitch"]) {
        const [hx, hy] = this.toCanvas(this.keys[i].t, this.keys[i][channel]);
        if (Math.hypot(hx - x, hy - y) <= 7) return { index: i, channel };
      }
    }
    return null;
  }

  onEvent(type, e) {
    e.stopPropagation();
    if (type === "wheel") return;
    e.preventDefault();
    const [x, y] = this.pointer(e);
    if (type === "contextmenu") {
      const found = this.hit(x, y);
      if (found) {
        this.keys.splice(found.index, 1);
        this.commit();
      }
    } else if (type === "pointerdown" && e.button === 0) {
      let found = this.hit(x, y);
      if (!found) {
        const [t, deg] = this.fromCanvas(x, y);
        const channel = e.shiftKey ? "pitch" : "yaw";
        const key = { t, yaw: interpolate(this.keys, t, "yaw"), pitch: interpolate(this.keys, t, "pitch") };
        key[channel] = deg;
        this.keys.push(key);
        this.keys.sort((a, b) => a.t - b.t);
        found = { index: this.keys.indexOf(key), channel };
        this.commit();
      }
      this.drag = { key: this.keys[found.index], channel: found.channel };
      this.canvas.setPointerCapture?.(e.pointerId);
    } else if (type === "pointermove" && this.drag) {
      const [t, deg] = this.fromCanvas(x, y);
      this.drag.key.t = t;
      this.drag.key[this.drag.channel] = deg;
      this.keys.sort((a, b) => a.t - b.t);
      this.commit();
    } else if (type === "pointerup") {
      this.drag = null;
    }
  }

  commit() {
    const text = formatKeyframes(this.keys);
    if (this.source.value !== text) {
      this.source.value = text;
      this.source.callback?.(text, app.canvas, this.node);
    }
    this.draw();
    this.node.graph?.setDirtyCanvas(true, false);
  }

  refresh() {
    if (!this.drag) this.keys = parseKeyframes(this.source.value);
    this.draw();
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(60, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(60, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, width, height);
    ctx.lineWidth = 1;
    ctx.strokeStyle = COLORS.grid;
    ctx.fillStyle = COLORS.text;
    ctx.font = `${10 * ratio}px sans-serif`;
    for (let s = 0; s <= this.duration; s++) {
      const [gx] = this.toCanvas(s, 0);
      ctx.beginPath();
      ctx.moveTo(gx, 0);
      ctx.lineTo(gx, height);
      ctx.stroke();
      ctx.fillText(`${s}s`, gx + 2, height - 3);
    }
    for (const deg of [-30, -15, 0, 15, 30]) {
      const [, gy] = this.toCanvas(0, deg);
      ctx.strokeStyle = deg === 0 ? COLORS.zero : COLORS.grid;
      ctx.beginPath();
      ctx.moveTo(0, gy);
      ctx.lineTo(width, gy);
      ctx.stroke();
      if (deg) ctx.fillText(`${deg}°`, 2, gy - 2);
    }
    for (const channel of ["pitch", "yaw"]) {
      ctx.strokeStyle = COLORS[channel];
      ctx.fillStyle = COLORS[channel];
      ctx.lineWidth = 2 * ratio;
      ctx.beginPath();
      const steps = 120;
      for (let i = 0; i <= steps; i++) {
        const t = (i / steps) * this.duration;
        const [px, py] = this.toCanvas(t, interpolate(this.keys, t, channel));
        if (i) ctx.lineTo(px, py);
        else ctx.moveTo(px, py);
      }
      if (this.keys.length) ctx.stroke();
      for (const key of this.keys) {
        const [px, py] = this.toCanvas(key.t, key[channel]);
        ctx.beginPath();
        if (channel === "yaw") ctx.arc(px, py, 5 * ratio, 0, 2 * Math.PI);
        else ctx.rect(px - 4 * ratio, py - 4 * ratio, 8 * ratio, 8 * ratio);
        ctx.fill();
      }
    }
    ctx.fillStyle = COLORS.yaw;
    ctx.fillText("● yaw", width - 90 * ratio, 12 * ratio);
    ctx.fillStyle = COLORS.pitch;
    ctx.fillText("■ pitch", width - 45 * ratio, 12 * ratio);
  }
}

function attach(node) {
  const source = node.widgets?.find((w) => w.name === SOURCE_WIDGET);
  if (!source || node.widgets.some((w) => w.name === WIDGET)) return;
  const editor = new PathEditor(node, source);
  const widget = addViewWidget(node, WIDGET, "r3dp_camera_path", editor.element, HEIGHT, HEIGHT * 3);
  widget.editor = editor;
  chainCallback(source, "callback", () => editor.refresh());
  node.setSize([Math.max(node.size[0], 320), node.computeSize()[1]]);
  requestAnimationFrame(() => editor.draw());
  return editor;
}

// widgets_values are applied after onNodeCreated: redraw from the loaded keyframes
const restore = (node) => node.widgets?.find((w) => w.name === WIDGET)?.editor?.refresh();
registerNodeWidget(EXTENSION, NODE_ID, attach, restore);
