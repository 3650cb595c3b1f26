// Kilnbase's function router: one warm Deno process serving one function's code on a Unix socket.
//
// Every code format behaves the same (function_globals.js). Console output and uncaught errors go to stdout
// as JSON lines, tagged with the request id, for the server to store. Usage:
// router.js <code file URL> <socket path> <env names>
import {
  context,
  errorResponse,
  guarded,
  installConsole,
  installEnv,
  installGlobals,
  keepServingOnErrors,
  loadHandler,
  MAX_MESSAGE,
  realServe,
  writeOut,
} from "./function_globals.js";

const [codeUrl, socketPath, envNames] = Deno.args;
const write = (line) => writeOut(line + "\n");
const emit = installConsole(write);

// The environment is the function's secrets and the platform's values (`--allow-env` names them).
const allowedEnv = [...new Set((envNames ?? "").split(",").filter(Boolean))];
const allowed = new Set(allowedEnv);
const realGet = Deno.env.get.bind(Deno.env);
installEnv((name) => (allowed.has(name) ? realGet(name) : undefined), () => allowedEnv);
installGlobals();

let handler;
try {
  handler = await loadHandler(codeUrl);
} catch (error) {
  write(JSON.stringify({ t: "fatal", msg: String(error?.message ?? error).slice(0, MAX_MESSAGE) }));
  Deno.exit(3);
}
keepServingOnErrors(emit);

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
    return context.run({ rid, token }, guarded, handler, req, info, emit);
  },
);
