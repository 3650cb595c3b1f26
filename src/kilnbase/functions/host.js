// Kilnbase's functions host: one Deno process serving many functions at `/<slug>[/*]` on one TCP port, each
// invocation run in this isolate, with no process in between. It is what `@insforge/sdk` calls first when
// `functionsUrl` points at it (and it answers 404 for a function it does not host, which the SDK takes as
// "use /functions/<slug> on the API instead").
//
// The API process that owns the host sends its configuration as JSON lines on stdin:
//   {"t":"config","functions":[{"slug","url","error"?}],"env":{...},"timeoutMs","maxConcurrency",
//    "maxBodyBytes","logPerSecond"} -> loads what is new (saying {"t":"loading","slug"} first), drops what is
//    gone, then {"t":"configured","failed":{slug: message}}; a function sent with an error is answered 502
//    ({"configured"} also says how many loaded versions are `stale`: replaced or removed, yet in memory)
//   {"t":"ping","n":N} -> {"t":"pong","n":N,"rss":bytes} (an isolate stuck in a loop cannot answer: the owner
//    restarts it)
//   {"t":"listen"} -> {"t":"listening"} or {"t":"listen-failed","msg"} (a host started as `standby`)
//   {"t":"drain","handoffMs"} -> answers with `connection: close` for `handoffMs` (clients between two
//    requests on a kept-alive connection open a new one, which reaches the host that replaces this one),
//    then stops listening, lets the invocations in flight finish and exits
// and reads JSON lines on stdout: {"t":"ready","nonce"} first, then console output {"t":"log"} and
// invocations {"t":"inv"}, each line after the first prefixed with the nonce, which the functions cannot
// know: a function that writes to stdout itself cannot pass for the host. Exit code 4: the port is taken.
//
// The port is bound with SO_REUSEPORT (`reusePort`, behind `--unstable-net`): the host that replaces this
// one (started as `standby`: it listens only once told to, after it has loaded every function) listens on
// the same port beside it, and new connections go to it from then on (see port_group.py); this one then
// drains. Only the API process that owns the host starts one on the port (see host.py).
// Usage: host.js <hostname> <port> [standby]
import process from "node:process";
import {
  context,
  errorResponse,
  guarded,
  installConsole,
  installEnv,
  installGlobals,
  keepServingOnErrors,
  loadHandler,
  realServe,
  stringify,
  writeOut,
} from "./function_globals.js";

const [hostname, port, mode] = Deno.args;
const standby = mode === "standby";
const NONCE = crypto.randomUUID().replaceAll("-", "");

// --- output: lines are batched (one write per 20 ms), so that logging costs an invocation next to nothing --

let pending = "";
let flushTimer = null;
function flush() {
  flushTimer = null;
  const out = pending;
  pending = "";
  if (out) writeOut(out);
}
function write(line) {
  pending += NONCE + line + "\n";
  if (pending.length > 65536) flush();
  else if (flushTimer === null) flushTimer = setTimeout(flush, 20);
}
const emit = installConsole(write);

// --- configuration -----------------------------------------------------------------------------------------

let env = {};
installEnv((name) => (Object.hasOwn(env, name) ? env[name] : undefined), () => Object.keys(env));
installGlobals();
// A function cannot end the process every other function runs in (the permissions refuse killing others).
const exit = Deno.exit;
const refuse = (what) => () => {
  throw new Error(`${what} is not available to functions.`);
};
Deno.exit = refuse("Deno.exit");
Deno.kill = refuse("Deno.kill");
process.kill = refuse("process.kill");
process.abort = refuse("process.abort");

/** slug -> {url, generation, handler, contextual} or {url, error}. A version replaced stays in the
 * isolate's memory (modules cannot be unloaded): the owner counts them (`stale` in each `configured` line) and
 * replaces this process with a fresh one past a bound (host.py). */
const functions = new Map();
/** Versions that loaded, served, and are no longer their function's: replaced (by another version or a
 * failure) or removed. A load that failed is not counted, now or once replaced: it holds next to nothing,
 * and it is tried again every half minute (a fresh process would hold its latest attempt too). */
let stale = 0;
/** `functions.set`, or `functions.delete` without `entry`, counting a served version dropped as stale. */
function replace(slug, entry) {
  if (functions.get(slug)?.handler !== undefined) stale += 1;
  if (entry === undefined) functions.delete(slug);
  else functions.set(slug, entry);
}
/** Code that logs or calls back into the API runs each invocation in its own async context (what tags a
 * console line, or gives `createClient` the caller's token, however many awaits later). That context costs
 * a third of a trivial invocation's time, so code that does neither runs without it: its uncaught errors are
 * still tagged, but console output of a library it imports is not. */
const CONTEXTUAL = /\bconsole\b|\bcreateClient\b/;
let limits = { timeoutMs: 60000, maxConcurrency: 64, maxBodyBytes: 10 * 1024 * 1024, logPerSecond: 100, loadTimeoutMs: 30000 };
/** Every load gets a module specifier of its own: the same file loaded again (a function deleted and created
 * again with the same code, a load that failed) must be evaluated again, not answered from the module map. */
let loads = 0;

/** Bumped when the environment changes: every function is then loaded again (a module may have read
 * `Deno.env` at its top level), as the workers of a function start again. */
let generation = 0;

async function configure(config) {
  const nextEnv = config.env ?? {};
  if (stringify(nextEnv) !== stringify(env)) generation += 1;
  env = nextEnv;
  limits = { ...limits, ...pick(config, Object.keys(limits)) };
  const wanted = new Map(config.functions.map((f) => [f.slug, f]));
  for (const slug of [...functions.keys()]) if (!wanted.has(slug)) replace(slug);
  const failed = {};
  for (const [slug, { url, error }] of wanted) {
    if (error !== undefined) {
      replace(slug, { url, error });
      failed[slug] = error;
      continue;
    }
    const current = functions.get(slug);
    if (current?.url === url && current.generation === generation && current.error === undefined) continue;
    // Said first: if loading never ends (a loop at the top level), the owner knows which function to leave out.
    write(stringify({ t: "loading", slug }));
    flush();
    try {
      // Invocations in flight keep the handler they started with; the next one gets the new version.
      loads += 1;
      const handler = await withTimeout(
        context.run({ slug }, loadHandler, url, `${url}?g=${generation}&n=${loads}`),
        limits.loadTimeoutMs,
        `Loading the function did not finish within ${limits.loadTimeoutMs} ms (a top-level await that never settles?).`,
      );
      const contextual = CONTEXTUAL.test(Deno.readTextFileSync(new URL(url)));
      replace(slug, { url, generation, handler, contextual });
    } catch (error) {
      const message = String(error?.message ?? error);
      replace(slug, { url, error: message });
      failed[slug] = message;
    }
  }
  write(stringify({ t: "configured", failed, stale }));
}

/** `promise`, or a rejection with `message` after `ms`. */
function withTimeout(promise, ms, message) {
  let timer;
  const expired = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

function pick(object, keys) {
  return Object.fromEntries(keys.filter((key) => typeof object[key] === "number").map((key) => [key, object[key]]));
}

async function readCommands() {
  let buffered = "";
  let queue = Promise.resolve();
  for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      let command;
      try {
        command = JSON.parse(line);
      } catch {
        continue;
      }
      if (command.t === "ping") {
        write(stringify({ t: "pong", n: command.n, rss: Deno.memoryUsage().rss }));
        flush();
      } else if (command.t === "config") {
        queue = queue.then(() => configure(command)).then(flush);
      } else if (command.t === "listen") {
        listen();
      } else if (command.t === "drain") {
        drain(Number(command.handoffMs) || 0);
      }
    }
  }
  exit(0); // the owner is gone
}

// --- invocation ------------------------------------------------------------------------------------------

const inflight = new Map();
/** Invocations waiting for their handler, with their deadline: one sweep a tenth of a second times them
 * out, rather than a timer each; the sweep runs only while one waits (an idle host wakes for nothing). */
const waiting = new Set();
let sweeping = null;
function awaitHandler(wait) {
  waiting.add(wait);
  if (sweeping === null) sweeping = setInterval(sweep, 100);
}
function sweep() {
  const now = performance.now();
  for (const wait of waiting) {
    if (wait.deadline <= now) {
      waiting.delete(wait);
      wait.expire();
    }
  }
  if (waiting.size === 0) {
    clearInterval(sweeping);
    sweeping = null;
  }
}

/** Invocation lines: each one up to `logPerSecond` per function, then one summary a second (by a timer that
 * runs while invocations come, and stops a second after the last). */
const logged = new Map();
let summarising = null;
function summarise() {
  if (logged.size === 0) {
    clearInterval(summarising);
    summarising = null;
    return;
  }
  for (const [slug, count] of logged) {
    if (count.skipped) {
      const statuses = Object.entries(count.statuses).map(([status, n]) => `${n} x ${status}`).join(", ");
      write(stringify({ t: "log", slug, rid: null, level: "info", msg: `${count.skipped} more invocations in the last second (${statuses}), the slowest ${count.slowest.toFixed(1)} ms` }));
    }
  }
  logged.clear();
}

function logInvocation(slug, rid, method, path, status, ms) {
  let count = logged.get(slug);
  if (count === undefined) {
    count = { lines: 0, skipped: 0, statuses: {}, slowest: 0 };
    logged.set(slug, count);
    if (summarising === null) summarising = setInterval(summarise, 1000);
  }
  if (count.lines < limits.logPerSecond || status >= 500) {
    count.lines += 1;
    write(`{"t":"inv","slug":"${slug}","rid":"${rid}","status":${status},"ms":${ms.toFixed(3)},"msg":${stringify(`${method} ${path} -> ${status}`)}}`);
  } else {
    count.skipped += 1;
    count.statuses[status] = (count.statuses[status] ?? 0) + 1;
    if (ms > count.slowest) count.slowest = ms;
  }
}

// CORS as the API answers it: any origin, reflected, with credentials.
const PREFLIGHT_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/** `response` after `change(headers)`; a copy of it when its headers are immutable (a fetched response's). */
function withHeaders(response, change) {
  try {
    change(response.headers);
    return response;
  } catch {
    const copy = new Response(response.body, response);
    change(copy.headers);
    return copy;
  }
}

// Response headers a browser's script may read without being told (the CORS-safelisted ones), and the one it
// never may.
const READABLE_ANYWAY = new Set([
  "cache-control", "content-language", "content-length", "content-type", "expires", "last-modified", "pragma",
  "set-cookie",
]);

/** The response's other headers, for `access-control-expose-headers`: with credentials, `*` there means a
 * header named "*", so a function's own headers (a total count, a Location, the request id) would be hidden
 * from the page that called it unless named. A function that names its own list keeps it. */
function exposable(headers) {
  const names = [];
  for (const name of headers.keys()) {
    if (!READABLE_ANYWAY.has(name) && !name.startsWith("access-control-") && name !== "vary") names.push(name);
  }
  return names.join(", ");
}

function withCors(response, origin) {
  if (origin === null) return response;
  return withHeaders(response, (headers) => {
    headers.set("access-control-allow-origin", origin);
    headers.set("access-control-allow-credentials", "true");
    headers.append("vary", "Origin");
    const exposed = headers.has("access-control-expose-headers") ? "" : exposable(headers);
    if (exposed) headers.set("access-control-expose-headers", exposed);
  });
}

function tagged(response, rid) {
  return withHeaders(response, (headers) => headers.set("x-kilnbase-request-id", rid));
}

/** Request ids as the API's (32 hex digits): a random prefix per process and a counter, which costs less
 * than a random UUID per request. */
const idPrefix = crypto.randomUUID().replaceAll("-", "").slice(0, 20);
let idCounter = 0;
function nextRequestId() {
  idCounter += 1;
  return idPrefix + idCounter.toString(16).padStart(12, "0");
}

/** The invocation's context: the caller's token is read only if the function asks (`createClient`). */
class Invocation {
  constructor(rid, slug, req) {
    this.rid = rid;
    this.slug = slug;
    this.req = req;
    this.logged = false;
  }

  get token() {
    const authorization = this.req.headers.get("authorization");
    if (authorization === null || !authorization.toLowerCase().startsWith("bearer ")) return undefined;
    return authorization.slice(7).trim();
  }
}

/** The API's 413 for a body past the upload limit. */
function bodyTooLarge() {
  const size = limits.maxBodyBytes;
  const shown = size >= 1048576 ? `${Number((size / 1048576).toPrecision(6))} MB` : `${size} bytes`;
  return errorResponse(413, "PAYLOAD_TOO_LARGE", `The request body is larger than ${shown}.`, "Send a smaller body, or raise KILNBASE_MAX_UPLOAD_BODY_BYTES.");
}

/** `req` with a body that fails once more than the limit has been read (and says so in `overLimit`). */
function bounded(req, overLimit) {
  let seen = 0;
  const counted = req.body.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        seen += chunk.byteLength;
        if (seen > limits.maxBodyBytes) {
          overLimit.passed = true;
          controller.error(new Error("The request body is larger than the upload limit."));
        } else controller.enqueue(chunk);
      },
    }),
  );
  return new Request(req, { body: counted });
}

function slugAndPath(url) {
  const pathStart = url.indexOf("/", url.indexOf("//") + 2);
  const query = url.indexOf("?", pathStart);
  const path = url.slice(pathStart, query < 0 ? url.length : query);
  const slash = path.indexOf("/", 1);
  return [slash < 0 ? path.slice(1) : path.slice(1, slash), path];
}

function serve(request, info) {
  let req = request;
  const origin = req.headers.get("origin");
  if (req.method === "OPTIONS" && origin !== null && req.headers.has("access-control-request-method")) {
    return new Response("OK", {
      headers: {
        "access-control-allow-origin": origin,
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": PREFLIGHT_METHODS,
        "access-control-allow-headers": req.headers.get("access-control-request-headers") ?? "*",
        "access-control-max-age": "86400",
        vary: "Origin",
      },
    });
  }
  const [slug, path] = slugAndPath(req.url);
  if (slug === "health" && path === "/health") {
    return Response.json({ status: "ok", functions: [...functions.values()].filter((f) => f.handler).length });
  }
  const entry = functions.get(slug);
  if (entry === undefined) {
    return withCors(errorResponse(404, "FUNCTION_NOT_FOUND", `Function not found: ${slug}`, "Deploy it, or set it active."), origin);
  }
  if (entry.error !== undefined) {
    return withCors(errorResponse(502, "FUNCTION_LOAD_FAILED", entry.error, "Fix the function and deploy it again."), origin);
  }
  const length = req.headers.get("content-length");
  if (length !== null && Number(length) > limits.maxBodyBytes) return withCors(bodyTooLarge(), origin);
  let overLimit = null;
  if (length === null && req.body !== null) {
    // A body of unknown length (chunked) is counted as the function reads it.
    overLimit = { passed: false };
    req = bounded(req, overLimit);
  }
  const busy = inflight.get(slug) ?? 0;
  if (busy >= limits.maxConcurrency) {
    return withCors(
      errorResponse(429, "TOO_MANY_REQUESTS", `Function ${slug} already has ${busy} invocations in flight.`, "Retry shortly (KILNBASE_FUNCTIONS_MAX_CONCURRENCY sets the limit).", { "retry-after": "1" }),
      origin,
    );
  }
  inflight.set(slug, busy + 1);
  const rid = nextRequestId();
  const started = performance.now();
  const invocation = new Invocation(rid, slug, req);
  const done = () => inflight.set(slug, inflight.get(slug) - 1);
  const finish = (answer) => {
    const response = overLimit?.passed ? bodyTooLarge() : answer;
    const status = response.status;
    logInvocation(slug, rid, req.method, path, status, performance.now() - started);
    // The request id goes back when the logs hold more than the invocation's own line: a failure, or a line
    // the function wrote (a header set on every response would cost a fifth of a trivial invocation).
    return withCors(status >= 400 || invocation.logged ? tagged(response, rid) : response, origin);
  };
  const result = entry.contextual
    ? context.run(invocation, guarded, entry.handler, req, info, emit)
    : guarded(entry.handler, req, info, emit, invocation);
  if (result instanceof Response) {
    done();
    return finish(result);
  }
  return new Promise((resolve) => {
    const wait = {
      deadline: started + limits.timeoutMs,
      expire() {
        emit("error", ["The invocation passed its time limit."], invocation);
        resolve(finish(errorResponse(504, "FUNCTION_TIMEOUT", `The function did not answer within ${limits.timeoutMs} ms.`, "Make it faster, or raise WORKER_TIMEOUT_MS.")));
      },
    };
    awaitHandler(wait);
    // A handler past its time limit still holds its place under the concurrency cap until it settles: handlers
    // that never do end in 429s, not in a heap full of them.
    result.then((response) => {
      done();
      if (waiting.delete(wait)) resolve(finish(response));
    });
  });
}

// --- listening, and draining when replaced ------------------------------------------------------------------

/** Set once this host is being replaced: every response then closes its connection. */
let draining = false;
const closing = (response) => withHeaders(response, (headers) => headers.set("connection", "close"));

function answer(req, info) {
  if (!draining) return serve(req, info);
  const response = serve(req, info);
  return response instanceof Response ? closing(response) : response.then(closing);
}

const serving = {
  hostname,
  port: Number(port),
  reusePort: true,
  onListen() {
    if (standby) {
      write(stringify({ t: "listening" }));
      flush();
    } else writeOut(stringify({ t: "ready", nonce: NONCE }) + "\n");
  },
  onError(error) {
    emit("error", ["Uncaught error:", error]);
    return errorResponse(500, "FUNCTION_ERROR", error?.message ?? String(error));
  },
};
let server = null;

function listen() {
  if (server !== null) return;
  try {
    server = realServe(serving, answer);
  } catch (error) {
    const message = `The functions host cannot listen on ${hostname}:${port}: ${error?.message ?? error}`;
    if (standby) {
      write(stringify({ t: "listen-failed", msg: message }));
      flush();
      return;
    }
    Deno.stderr.writeSync(new TextEncoder().encode(message + "\n"));
    exit(error instanceof Deno.errors.AddrInUse ? 4 : 1);
  }
}

async function drain(handoffMs) {
  if (draining) return;
  draining = true;
  await new Promise((resolve) => setTimeout(resolve, handoffMs));
  await server?.shutdown(); // (stops listening; resolves once the invocations in flight have answered)
  summarise(); // (the last second's "N more invocations" line, which its timer would have written)
  flush();
  exit(0);
}

if (standby) writeOut(stringify({ t: "ready", nonce: NONCE }) + "\n");
else listen();
keepServingOnErrors(emit);
readCommands();
