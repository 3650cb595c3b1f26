// Kilnbase's function router: one warm Deno process serving one function's code on a Unix socket.
//
// Every code format behaves the same: InsForge's self-hosted `module.exports = async function (req)`, its
// cloud `export default async function (req)`, `export default { fetch }`, and `Deno.serve(handler)` (the
// call is caught, not served). Console output and uncaught errors go to stdout as JSON lines, tagged with
// the request id, for the server to store. `createClient` is a global preconfigured for this server and the
// caller's token, as in InsForge. Usage: router.js <code file URL> <socket path>
import { AsyncLocalStorage } from "node:async_hooks";

const [codeUrl, socketPath, envNames] = Deno.args;
const context = new AsyncLocalStorage();
const encoder = new TextEncoder();
const MAX_MESSAGE = 8192;

function write(line) {
  const bytes = encoder.encode(line + "\n");
  let written = 0;
  while (written < bytes.length) written += Deno.stdout.writeSync(bytes.subarray(written));
}

function text(value) {
  if (typeof value === "string") return value;
  if (value instanceof Error) return value.stack ?? String(value);
  return Deno.inspect(value, { depth: 4, colors: false });
}

function emit(level, args) {
  const message = args.map(text).join(" ");
  write(JSON.stringify({ t: "log", level, rid: context.getStore()?.rid ?? null, msg: message.slice(0, MAX_MESSAGE) }));
}

for (const [method, level] of [["log", "info"], ["info", "info"], ["debug", "debug"], ["warn", "warn"], ["error", "error"]]) {
  console[method] = (...args) => emit(level, args);
}

// The environment is the function's secrets and the platform's values (`--allow-env` names them): a name
// outside it reads as undefined, as in InsForge, instead of throwing.
const allowedEnv = new Set((envNames ?? "").split(",").filter(Boolean));
const env = Deno.env;
const realGet = env.get.bind(env);
env.get = (name) => (allowedEnv.has(name) ? realGet(name) : undefined);
env.has = (name) => allowedEnv.has(name) && realGet(name) !== undefined;
env.toObject = () => Object.fromEntries([...allowedEnv].map((name) => [name, realGet(name)]).filter(([, v]) => v !== undefined));

// `Deno.serve(handler)` in the function's code: remember the handler, serve nothing.
let served = null;
const realServe = Deno.serve;
const fakeServer = { finished: new Promise(() => {}), shutdown: async () => {}, ref() {}, unref() {}, addr: { transport: "unix", path: "" } };
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

// InsForge's self-hosted globals: CommonJS `module.exports`, `createClient`, base64 helpers.
globalThis.module = { exports: {} };
globalThis.exports = globalThis.module.exports;
globalThis.encodeBase64 = (data) => {
  const bytes = typeof data === "string" ? encoder.encode(data) : new Uint8Array(data instanceof ArrayBuffer ? data : data.buffer ?? data);
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
};
globalThis.decodeBase64 = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));

// Loaded only for code that names it (a literal specifier would be fetched for every function).
const SDK = "npm:@insforge/sdk@1.5.2";
let sdk = null;
let sdkError = null;
const source = Deno.readTextFileSync(new URL(codeUrl));
if (source.includes("createClient")) {
  try {
    sdk = await import(SDK);
  } catch (error) {
    sdkError = error;
  }
}
globalThis.createClient = (options = {}) => {
  if (sdk === null) throw new Error(`@insforge/sdk could not be loaded: ${sdkError?.message ?? "not imported"}`);
  return sdk.createClient({
    baseUrl: Deno.env.get("INSFORGE_INTERNAL_URL"),
    anonKey: Deno.env.get("ANON_KEY"),
    edgeFunctionToken: context.getStore()?.token,
    ...options,
  });
};

function fail(message) {
  write(JSON.stringify({ t: "fatal", msg: message.slice(0, MAX_MESSAGE) }));
  Deno.exit(3);
}

let handler = null;
try {
  const mod = await import(codeUrl);
  const exported = mod.default;
  const commonjs = globalThis.module.exports;
  if (served) handler = served;
  else if (typeof exported === "function") handler = exported;
  else if (exported && typeof exported.fetch === "function") handler = (req, info) => exported.fetch(req, info);
  else if (typeof commonjs === "function") handler = commonjs;
  else if (commonjs && typeof commonjs.default === "function") handler = commonjs.default;
  else if (commonjs && typeof commonjs.fetch === "function") handler = (req, info) => commonjs.fetch(req, info);
} catch (error) {
  fail(`The function failed to load: ${text(error)}`);
}
if (handler === null) {
  fail(
    "No handler found. Export one: `export default async function (req) {...}`, `export default { fetch }`, " +
      "`module.exports = async function (req) {...}`, or call `Deno.serve(handler)`.",
  );
}

// From here on, an error nobody caught is logged, not fatal: the worker keeps serving.
globalThis.addEventListener("unhandledrejection", (event) => {
  event.preventDefault();
  emit("error", ["Unhandled promise rejection:", event.reason]);
});
globalThis.addEventListener("error", (event) => {
  event.preventDefault();
  emit("error", ["Uncaught error:", event.error ?? event.message]);
});

function errorResponse(status, code, message) {
  return new Response(JSON.stringify({ error: code, message, statusCode: status }), {
    status,
    headers: { "content-type": "application/json" },
  });
}

realServe(
  {
    path: socketPath,
    onListen() {
      write(JSON.stringify({ t: "ready" }));
    },
    onError(error) {
      emit("error", ["Uncaught error:", error]);
      return errorResponse(500, "FUNCTION_ERROR", error?.message ?? String(error));
    },
  },
  (req, info) => {
    if (req.headers.get("x-kilnbase-probe") === "1") return new Response("ok");
    const rid = req.headers.get("x-kilnbase-request-id");
    const authorization = req.headers.get("authorization") ?? "";
    const token = authorization.toLowerCase().startsWith("bearer ") ? authorization.slice(7).trim() : undefined;
    return context.run({ rid, token }, async () => {
      try {
        const response = await handler(req, info);
        if (!(response instanceof Response)) {
          emit("error", ["The handler returned", typeof response, "instead of a Response"]);
          return errorResponse(500, "FUNCTION_ERROR", "The function did not return a Response.");
        }
        return response;
      } catch (error) {
        if (error instanceof Response) return error;
        emit("error", ["Uncaught error:", error]);
        return errorResponse(500, "FUNCTION_ERROR", error?.message ?? String(error));
      }
    });
  },
);
