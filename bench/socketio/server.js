'use strict';
// The seed's signaling server (webrtc-peerconnection-tutorial, part 二: express + socket.io,
// events join / leave / message) ported to socket.io v4 and scoped to rooms, so it can be
// load-tested side by side with icehub's hub by `go run ./bench signaling -server sio`.
//
// Differences from the seed, and why:
// - the seed broadcast "joined"/"leaved"/"message" to every socket on the server
//   (socket.broadcast.emit); here they go to the room only (socket.to(room)), which is what the
//   seed meant and what the hub does — broadcasting to all would make the baseline look worse;
// - the joiner gets "joined" itself (the seed's commented-out socket.emit line) so a client
//   knows when it is in the room; the others get "peer-joined";
// - no express/serve-index static pages and no HTTPS: only signaling is measured, on loopback;
// - no per-message logger.info: logging every message to stdout would measure the terminal.
// Usage: node server.js [port] [host]   (defaults 3000, 127.0.0.1)
const http = require('http');
const { Server } = require('socket.io');

const port = Number(process.argv[2] || process.env.PORT || 3000);
const host = process.argv[3] || process.env.HOST || '127.0.0.1';

const httpServer = http.createServer();
const io = new Server(httpServer, { serveClient: false });

io.on('connection', (socket) => {
  socket.on('join', (room) => {
    socket.join(room);
    const myRoom = io.sockets.adapter.rooms.get(room); // a Map of Sets in v4
    const users = myRoom ? myRoom.size : 0;
    socket.emit('joined', room, socket.id, users);
    socket.to(room).emit('peer-joined', room, socket.id);
  });
  socket.on('leave', (room) => {
    socket.leave(room);
    socket.to(room).emit('leaved', room, socket.id);
    socket.emit('left', room);
  });
  socket.on('message', (room, msg) => {
    socket.to(room).emit('message', room, socket.id, msg);
  });
});

httpServer.listen(port, host, () => console.log(`socket.io baseline listening on ${host}:${port}`));
process.on('SIGTERM', () => process.exit(0));
