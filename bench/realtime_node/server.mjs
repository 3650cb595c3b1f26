// The anchor: a Node socket.io server doing the broadcast InsForge's SocketManager does (subscribe joins the
// room `realtime:<channel>`, publish emits `{...payload, meta}` to the room), without a database in between.
import { createServer } from 'node:http';
import { randomUUID } from 'node:crypto';
import { Server } from 'socket.io';

const port = Number(process.argv[2] ?? 7399);
const http = createServer();
const io = new Server(http, { cors: { origin: true, credentials: true } });
io.on('connection', (socket) => {
  socket.on('realtime:subscribe', async ({ channel }, ack) => {
    await socket.join(`realtime:${channel}`);
    ack?.({ ok: true, channel, presence: { members: [] } });
  });
  socket.on('realtime:publish', ({ channel, event, payload }) => {
    const room = `realtime:${channel}`;
    const meta = { channel: room, messageId: randomUUID(), senderType: 'user', timestamp: new Date().toISOString() };
    io.to(room).emit(event, { ...payload, meta });
  });
});
http.listen(port, '127.0.0.1', () => console.log(`listening ${port}`));
