// The demo page's logic (web/index.html): loads wmoe's wasm build (web/pkg/, made by
// wasm-bindgen), streams the picked GGUF into the GPU and runs a chat with streamed answers.
import init, { WebModel } from "./pkg/wmoe_web.js";

const $ = (id) => document.getElementById(id);
const status = (text) => { $("status").textContent = text; };
let model = null;
let busy = false;

const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

// `on` while loading or generating; only a generation can be stopped.
function setBusy(on, generating = false) {
  busy = on;
  $("send-btn").disabled = on || !model;
  $("prompt").disabled = !model;
  $("stop").disabled = !generating;
  $("new-chat").disabled = on || !model;
  for (const id of ["load-url", "load-bundled", "file"]) $(id).disabled = on;
}

async function load(what, start) {
  if (busy) return;
  setBusy(true);
  const bar = $("progress");
  bar.hidden = false;
  bar.value = 0;
  const t0 = performance.now();
  try {
    if (model) { model.free(); model = null; }
    model = await start((done, total) => {
      bar.max = total;
      bar.value = done;
      status(`loading ${what}: ${mib(done)} / ${mib(total)} (wasm heap ${mib(WebModel.wasmMemoryBytes())})`);
    });
    const secs = ((performance.now() - t0) / 1000).toFixed(1);
    status(`${what} loaded in ${secs} s; wasm heap ${mib(WebModel.wasmMemoryBytes())}; ${model.adapter().split("\n")[0]}`);
    newChat();
  } catch (e) {
    status(`cannot load ${what}: ${e.message ?? e}`);
  } finally {
    bar.hidden = true;
    setBusy(false);
  }
}

function newChat() {
  $("log").textContent = "";
  try {
    model.startChat($("system").value || null, null);
  } catch (e) {
    status(`${e.message ?? e} (chat needs a template in the GGUF metadata)`);
  }
}

function line(cls, text) {
  const div = document.createElement("div");
  div.className = `msg ${cls}`;
  div.textContent = text;
  $("log").append(div);
  return div;
}

async function send(text) {
  setBusy(true, true);
  line("user", text);
  const answer = line("assistant", "");
  let reasoning = null;
  const settings = {
    temperature: Number($("temperature").value),
    topP: Number($("top-p").value),
    seed: Number($("seed").value),
    maxTokens: Number($("max-tokens").value),
    ignoreEos: $("ignore-eos").checked,
  };
  const t0 = performance.now();
  let pieces = 0;
  try {
    const r = await model.chat(text, settings, (kind, piece) => {
      pieces++;
      if (kind === "content") {
        answer.append(piece);
      } else if (kind === "reasoning") {
        if (!reasoning) {
          const d = document.createElement("details");
          d.innerHTML = "<summary>reasoning</summary>";
          reasoning = document.createElement("div");
          d.append(reasoning);
          answer.before(d);
        }
        reasoning.append(piece);
      } else if (kind === "tool_call") {
        const call = JSON.parse(piece);
        line("tool", `tool call: ${call.name}(${call.arguments})`);
      }
      $("log").scrollTop = $("log").scrollHeight;
    });
    const secs = (performance.now() - t0) / 1000;
    const n = r.usage.completion_tokens;
    status(`${n} tokens in ${secs.toFixed(1)} s (${(n / secs).toFixed(1)} tokens/s, prompt ${r.usage.prompt_tokens} tokens, ${r.usage.reused_tokens} reused); ${r.finish_reason}`);
  } catch (e) {
    status(`error: ${e.message ?? e}`);
  } finally {
    setBusy(false);
  }
}

$("load-url").onclick = () => {
  const url = $("url").value.trim();
  if (url) load(url, (progress) => WebModel.loadGgufUrl(url, progress));
};
$("file").onchange = () => {
  const f = $("file").files[0];
  if (f) load(f.name, (progress) => WebModel.loadGgufFile(f, f.name, progress));
};
$("load-bundled").onclick = () => load("the bundled demo model", () => WebModel.loadBundled());
$("stop").onclick = () => model && model.stop();
$("new-chat").onclick = () => newChat();
$("send").onsubmit = (e) => {
  e.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || busy || !model) return;
  $("prompt").value = "";
  send(text);
};

await init();
status(navigator.gpu ? "WebGPU available: pick a model" : "this browser has no WebGPU (Chromium: --enable-unsafe-webgpu, or a recent Chrome)");
const fromQuery = new URLSearchParams(location.search).get("model");
if (fromQuery) { $("url").value = fromQuery; $("load-url").click(); }
