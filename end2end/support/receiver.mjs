// A webhook receiver for the browser suite: records every POST (path, signature check, JSON
// body) and answers 200; GET /received lists them, GET /healthz answers when it is up.
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";

const port = Number(process.env.RECEIVER_PORT ?? 3192);
const secret = process.env.E2E_HOOK_SECRET ?? "";
const received = [];

function signed(body, header) {
  if (!secret || !header?.startsWith("sha256=")) return false;
  const want = Buffer.from(createHmac("sha256", secret).update(body).digest("hex"));
  const got = Buffer.from(header.slice("sha256=".length));
  return want.length === got.length && timingSafeEqual(want, got);
}

createServer((req, res) => {
  if (req.method === "GET") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(req.url === "/received" ? JSON.stringify(received) : '"ok"');
    return;
  }
  let body = "";
  req.on("data", (chunk) => (body += chunk));
  req.on("end", () => {
    let json = null;
    try {
      json = JSON.parse(body);
    } catch {}
    received.push({ path: req.url, signed: signed(body, req.headers["x-tidemark-signature"]), body: json });
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("ok");
  });
}).listen(port, "127.0.0.1");
