// What every Kilnbase function sees, whichever process runs it (router.js: one function on a Unix socket;
// host.js: many functions on one port): console output as JSON lines tagged with the request, InsForge's
// self-hosted globals (`module.exports`, `createClient`, base64 helpers), `Deno.serve(handler)` caught rather
// than served, an environment limited to the names given, and one way to find a module's handler.
import { AsyncLocalStorage } from "node:async_hooks";

/** The invocation being served: `{ rid, token, slug }` (slug only in the host). */
export const context = new AsyncLocalStorage();
const encoder = new TextEncoder();
export const MAX_MESSAGE = 8192;
// Taken before any function loads: code that replaces these later does not see or change what is written.
const encode = TextEncoder.prototype.encode;
const subarray = Uint8Array.prototype.subarray;
const stdoutWrite = Deno.stdout.writeSync.bind(Deno.stdout);
export const stringify = JSON.stringify;

/** Write `text` to stdout whole (a pipe may take it in parts). */
export function writeOut(text) {
  const bytes = encode.call(encoder, text);
  let written = 0;
  while (written < bytes.length) written += stdoutWrite(subarray.call(bytes, written));
}

function text(value) {
  if (typeof value === "string") return value;
  if (value instanceof Error) return value.stack ?? String(value);
  return Deno.inspect(value, { depth: 4, colors: false });
}

/** Console output and uncaught errors become `{t: "log"}` lines, given to `write` (one line, no newline).
 * `emit(level, args, invocation)` tags a line with the invocation given, else with the current one. */
export function installConsole(write) {
  const emit = (level, args, invocation = context.getStore()) => {
    const message = args.map(text).join(" ").slice(0, MAX_MESSAGE);
    const line = { t: "log", level, rid: invocation?.rid ?? null, msg: message };
    if (invocation?.slug) line.slug = invocation.slug;
    if (invocation) invocation.logged = true;
    write(stringify(line));
  };
  for (const [method, level] of [["log", "info"], ["info", "info"], ["debug", "debug"], ["warn", "warn"], ["error", "error"]]) {
    console[method] = (...args) => emit(level, args);
  }
  return emit;
}

/** `Deno.env` answers only the names `lookup` knows: any other reads as undefined, as in InsForge, instead of
 * throwing. `names()` lists them. */
export function installEnv(lookup, names) {
  const env = Deno.env;
  env.get = (name) => lookup(name);
  env.has = (name) => lookup(name) !== undefined;
  env.toObject = () => Object.fromEntries(names().map((name) => [name, lookup(name)]).filter(([, v]) => v !== undefined));
}

let served = null;
const fakeServer = { finished: new Promise(() => {}), shutdown: async () => {}, ref() {}, unref() {}, addr: { transport: "unix", path: "" } };
/** The real `Deno.serve`, taken before functions can reach it. */
export const realServe = Deno.serve;

/** Install the globals a function may use without importing them. `createClient` is loaded only for code
 * that names it (a literal specifier would be fetched for every function). */
export function installGlobals() {
  Object.defineProperty(Deno, "serve", {
    configurable: true,
    writable: true,
    value: (first, second) => {
      if (typeof first === "function") served = first;
      else if (typeof second === "function") served = second;
      else if (first && typeof first.handler === "function") served = first.handler;
      return fakeServer;
    },
  });
  globalThis.module = { exports: {} };
  globalThis.exports = globalThis.module.exports;
  globalThis.encodeBase64 = (data) => {
    const bytes = typeof data === "string" ? encoder.encode(data) : new Uint8Array(data instanceof ArrayBuffer ? data : data.buffer ?? data);
    let binary = "";
    for (const byte of bytes) binary += String.fromCharCode(byte);
    return btoa(binary);
  };
  globalThis.decodeBase64 = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  globalThis.createClient = (options = {}) => {
    if (sdk === null) throw new Error(`@insforge/sdk could not be loaded: ${sdkError?.message ?? "not imported"}`);
    return sdk.createClient({
      baseUrl: Deno.env.get("INSFORGE_INTERNAL_URL"),
      anonKey: Deno.env.get("ANON_KEY"),
      edgeFunctionToken: context.getStore()?.token,
      ...options,
    });
  };
}

const SDK = "npm:@insforge/sdk@1.5.2";
let sdk = null;
let sdkError = null;

/** An error's text with each `file://` URL cut to its file name (and line): a load failure is answered to
 * whoever invoked the function, and where the server keeps its data is not theirs to know. */
function withoutServerPaths(message) {
  return message.replace(/file:\/\/\/[^\s)]*\//g, "");
}

/** The handler of the function at `codeUrl` (imported as `specifier`, the same file with a query to load it
 * again), whatever its format; throws an Error saying why there is none. Loads modules one at a time:
 * `Deno.serve` and `module.exports` are caught per module. */
export async function loadHandler(codeUrl, specifier = codeUrl) {
  if (sdk === null && Deno.readTextFileSync(new URL(codeUrl)).includes("createClient")) {
    try {
      sdk = await import(SDK);
      sdkError = null;
    } catch (error) {
      sdkError = error;
    }
  }
  served = null;
  globalThis.module = { exports: {} };
  globalThis.exports = globalThis.module.exports;
  let mod;
  try {
    mod = await import(specifier);
  } catch (error) {
    throw new Error(`The function failed to load: ${withoutServerPaths(text(error))}`);
  }
  const exported = mod.default;
  const commonjs = globalThis.module.exports;
  if (served) return served;
  if (typeof exported === "function") return exported;
  if (exported && typeof exported.fetch === "function") return (req, info) => exported.fetch(req, info);
  if (typeof commonjs === "function") return commonjs;
  if (commonjs && typeof commonjs.default === "function") return commonjs.default;
  if (commonjs && typeof commonjs.fetch === "function") return (req, info) => commonjs.fetch(req, info);
  throw new Error(
    "No handler found. Export one: `export default async function (req) {...}`, `export default { fetch }`, " +
      "`module.exports = async function (req) {...}`, or call `Deno.serve(handler)`.",
  );
}

/** From here on, an error nobody caught is logged, not fatal: the process keeps serving. */
export function keepServingOnErrors(emit) {
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    emit("error", ["Unhandled promise rejection:", event.reason]);
  });
  globalThis.addEventListener("error", (event) => {
    event.preventDefault();
    emit("error", ["Uncaught error:", event.error ?? event.message]);
  });
}

/** Kilnbase's error body: `{error, message, statusCode, nextActions?}`. */
export function errorResponse(status, code, message, nextActions, headers) {
  const body = { error: code, message, statusCode: status };
  if (nextActions) body.nextActions = nextActions;
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
}

/** Run `handler` for `req`, turning a thrown error or a non-Response into a 500 logged for `invocation`
 * (the current one when not given). */
export function guarded(handler, req, info, emit, invocation) {
  const failed = (error) => {
    if (error instanceof Response) return error;
    emit("error", ["Uncaught error:", error], invocation);
    return errorResponse(500, "FUNCTION_ERROR", error?.message ?? String(error));
  };
  const checked = (response) => {
    if (response instanceof Response) return response;
    emit("error", ["The handler returned", typeof response, "instead of a Response"], invocation);
    return errorResponse(500, "FUNCTION_ERROR", "The function did not return a Response.");
  };
  let result;
  try {
    result = handler(req, info);
  } catch (error) {
    return failed(error);
  }
  if (result instanceof Response) return result;
  return Promise.resolve(result).then(checked, failed);
}
