// Load for bench/realtime.py: N subscribers on one channel (spread over the given URLs), one publisher.
//   fanout:     ROUNDS messages, each sent once every subscriber has the previous one; latency per delivery.
//   throughput: MESSAGES sent back to back; how long until every subscriber has every one.
// Prints one JSON line.
import { readFileSync } from 'node:fs';
import { io } from 'socket.io-client';

const cfg = JSON.parse(process.argv[2]);
const now = () => performance.timeOrigin + performance.now();
// The servers' CPU time (user + system, µs) from /proc: the steady figure on a shared machine. Clock ticks are
// 1/100 s on Linux, so a phase must run for seconds to be read well.
const cpuMicros = () => (cfg.serverPids ?? []).reduce((sum, pid) => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return sum + (Number(fields[11]) + Number(fields[12])) * 10000;
}, 0);

function connect(url, auth) {
  return new Promise((resolve, reject) => {
    const socket = io(url, { transports: ['websocket'], auth, reconnection: false, forceNew: true, timeout: 120000 });
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', (error) => reject(error));
  });
}

async function subscribe(socket, channel) {
  const ack = await socket.timeout(30000).emitWithAck('realtime:subscribe', { channel });
  if (!ack.ok) throw new Error(`subscribe refused: ${JSON.stringify(ack)}`);
}

const subscribers = [];
for (let i = 0; i < cfg.subscribers; i += 50) {
  const batch = [];
  for (let j = i; j < Math.min(i + 50, cfg.subscribers); j++) {
    batch.push(connect(cfg.urls[j % cfg.urls.length], cfg.subscriberAuth).then(async (socket) => {
      await subscribe(socket, cfg.channel);
      return socket;
    }));
  }
  subscribers.push(...(await Promise.all(batch)));
}
const publisher = await connect(cfg.urls[cfg.urls.length - 1], cfg.publisherAuth);
await subscribe(publisher, cfg.channel);

const latencies = [];
let received = 0;
let waiting = null;
for (const socket of subscribers) {
  socket.on('bench', (message) => {
    latencies.push(now() - message.sentAt);
    received += 1;
    if (waiting && received >= waiting.count) { const done = waiting.resolve; waiting = null; done(); }
  });
}
const until = (count) => new Promise((resolve, reject) => {
  if (received >= count) return resolve();
  const timer = setTimeout(() => reject(new Error(`only ${received} of ${count} deliveries`)), 120000);
  waiting = { count, resolve: () => { clearTimeout(timer); resolve(); } };
});

// Joining is work for the servers after the acks (each join is announced to the room; with Redis, later
// still), so the timed part starts once their CPU has been quiet for half a second.
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
async function quiet() {
  const deadline = now() + 300000;
  for (let before = cpuMicros(); now() < deadline; ) {
    await sleep(500);
    const after = cpuMicros();
    if (after - before < 25000 * Math.max(1, (cfg.serverPids ?? []).length)) return;
    before = after;
  }
}
await quiet();

const out = { subscribers: cfg.subscribers };
if (cfg.mode === 'fanout') {
  let cpuAtStart = 0;
  // Five warm-up rounds: the first few broadcasts to a new room are slower on every server (Kilnbase's
  // statements are prepared on a connection's fifth use, for one), and the figure is the steady one.
  const warmUp = 5;
  for (let round = 1; round <= cfg.rounds + warmUp; round++) {
    if (round === warmUp + 1) { latencies.length = 0; cpuAtStart = cpuMicros(); }
    publisher.emit('realtime:publish', { channel: cfg.channel, event: 'bench', payload: { sentAt: now(), round } });
    await until(round * cfg.subscribers);
  }
  latencies.sort((a, b) => a - b);
  const at = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
  out.deliveries = latencies.length;
  out.serverCpuMicrosPerDelivery = (cpuMicros() - cpuAtStart) / latencies.length;
  out.p50 = at(0.5);
  out.p99 = at(0.99);
} else {
  const started = now();
  const cpuAtStart = cpuMicros();
  for (let i = 0; i < cfg.messages; i++) {
    publisher.emit('realtime:publish', { channel: cfg.channel, event: 'bench', payload: { sentAt: now(), i } });
    if (i % 200 === 199) await new Promise((resolve) => setImmediate(resolve));
  }
  await until(cfg.messages * cfg.subscribers);
  const seconds = (now() - started) / 1000;
  out.serverCpuMicrosPerDelivery = (cpuMicros() - cpuAtStart) / (cfg.messages * cfg.subscribers);
  out.messages = cfg.messages;
  out.seconds = seconds;
  out.messagesPerSecond = cfg.messages / seconds;
  out.deliveriesPerSecond = (cfg.messages * cfg.subscribers) / seconds;
}
for (const socket of [...subscribers, publisher]) socket.disconnect();
console.log(JSON.stringify(out));
process.exit(0);
