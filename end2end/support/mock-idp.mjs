// A scriptable OpenID provider for the negative sign-in suite (oauth2-mock-server): every
// authorization is granted at once, and POST {control}/mode chooses how the next ID tokens are
// spoiled. Prints one JSON line {"issuer": ..., "control": ...} when ready.
import http from 'node:http';
import { OAuth2Server } from 'oauth2-mock-server';

const server = new OAuth2Server();
await server.issuer.keys.generate('RS256');
await server.start(0, '127.0.0.1');
server.issuer.url = `http://127.0.0.1:${server.address().port}`;

let mode = 'ok';
let claims = {};
const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');

server.service.on('beforeTokenSigning', (token) => {
  if (!('aud' in token.payload)) return; // the access token
  Object.assign(token.payload, claims);
  const now = Math.floor(Date.now() / 1000);
  switch (mode) {
    case 'wrong_aud': token.payload.aud = 'someone-else'; break;
    case 'extra_aud': token.payload.aud = [token.payload.aud, 'someone-else']; break;
    case 'wrong_azp': token.payload.azp = 'someone-else'; break;
    case 'wrong_iss': token.payload.iss = 'http://127.0.0.1:1/impostor'; break;
    case 'expired': token.payload.iat = now - 7200; token.payload.exp = now - 3600; break;
    case 'future_iat': token.payload.iat = now + 3600; token.payload.exp = now + 7200; break;
    case 'nonce': token.payload.nonce = 'not-the-nonce-we-sent'; break;
    default: break;
  }
});

server.service.on('beforeResponse', (response) => {
  const idToken = response.body.id_token;
  if (!idToken) return;
  const [header, payload, signature] = idToken.split('.');
  if (mode === 'alg_none') {
    response.body.id_token = `${b64({ alg: 'none', typ: 'JWT' })}.${payload}.`;
  } else if (mode === 'bad_signature') {
    const flipped = (signature[0] === 'A' ? 'B' : 'A') + signature.slice(1);
    response.body.id_token = `${header}.${payload}.${flipped}`;
  } else if (mode === 'no_id_token') {
    delete response.body.id_token;
  }
});

const control = http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => { body += c; });
  req.on('end', () => {
    if (req.method === 'POST' && req.url === '/mode') {
      const parsed = JSON.parse(body || '{}');
      mode = parsed.mode ?? 'ok';
      claims = parsed.claims ?? {};
      res.writeHead(204).end();
    } else {
      res.writeHead(404).end();
    }
  });
});
control.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({
    issuer: server.issuer.url,
    control: `http://127.0.0.1:${control.address().port}`,
  }));
});
process.stdin.on('end', () => process.exit(0)); // exit with the test process
process.stdin.resume();
