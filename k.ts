try { Deno.kill(22731, "SIGKILL"); console.log("killed other"); } catch (e) { console.log("other:", e.name); }
import process from "node:process";
try { process.kill(22731); console.log("pkilled other"); } catch (e) { console.log("process.kill other:", e.name); }
