// Sends one text frame of SIZE bytes with one ws.send call (Node's ws
// hands it to the socket in one write) and prints the close code and
// reason as JSON: {"code":1009,"reason":"..."}. 1006 means no close frame.
const WebSocket = require('ws');
const [url, token, size] = process.argv.slice(2);
const ws = new WebSocket(url, { headers: { Authorization: 'Bearer ' + token } });
ws.on('open', () => ws.send('a'.repeat(Number(size))));
ws.on('error', () => {}); // the close event still reports the code
ws.on('close', (code, reason) => {
  console.log(JSON.stringify({ code, reason: reason.toString() }));
  process.exit(0);
});
setTimeout(() => { console.log(JSON.stringify({ code: -1, reason: 'timeout' })); process.exit(0); }, 20000);
