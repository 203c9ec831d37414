// A dashboard client on the Node ws library, offering permessage-deflate:
// subscribes, prints "ready", collects messages until `count` readings have
// arrived, then prints what it got as one JSON line.
// Usage: node deflate.js <ws-url> <token> <count>
const WebSocket = require("ws");
const [url, token, count] = process.argv.slice(2);
const ws = new WebSocket(url, { headers: { Authorization: "Bearer " + token }, perMessageDeflate: true });
const messages = [];
let readings = 0;
let payloadBytes = 0;
ws.on("open", () => ws.send(JSON.stringify({ op: "subscribe", id: "z", devices: ["zip-dev"] })));
ws.on("message", (data) => {
  const text = data.toString("utf8");
  const m = JSON.parse(text);
  payloadBytes += Buffer.byteLength(text);
  if (m.type === "snapshot") {
    console.log("ready");
    return;
  }
  messages.push(text);
  if (m.type === "readings") readings += m.readings.length;
  if (readings >= Number(count)) {
    console.log(JSON.stringify({ extensions: ws.extensions, bytesRead: ws._socket.bytesRead, payloadBytes, messages }));
    ws.close(1000);
  }
});
ws.on("error", (err) => {
  console.error(String(err));
  process.exit(1);
});
