// A real OpenID Connect provider (panva's oidc-provider) for the SSO tests,
// on loopback: clients for Myelin, the development login/consent pages, and
// accounts whose claims derive from the login name (`outsider*` is not in
// the `staff` group). Prints one JSON line once listening: its port and the
// private key (PEM) of the `myelin-jwt` client.
//
// Clients:
// - `myelin`: client_secret_basic, with back-channel logout to Myelin;
// - `myelin-jwt`: private_key_jwt (ES256), the key printed at start.
//
// Test-only routes under /test/ (never in a real provider):
// - POST /test/misbehave?mode=aud|nonce|off: the next token responses carry
//   an ID token re-signed with a wrong audience or nonce;
// - POST /test/logout_token (JSON claims; ?foreign=1 signs with a key
//   that is not in the JWKS): a logout token signed as the provider would;
// - GET /test/picture.png: the accounts' `picture`.
//
// Usage: MYELIN_NPM_DIR=<npm prefix> node provider.js <myelin callback URL>
// (scripts/test.sh installs oidc-provider under that prefix.)
import crypto from "node:crypto";
import http from "node:http";
import { pathToFileURL } from "node:url";

const { default: Provider } = await import(
  pathToFileURL(`${process.env.MYELIN_NPM_DIR}/node_modules/oidc-provider/lib/index.js`).href
);

const redirectUri = process.argv[2];
const myelinBase = new URL(redirectUri).origin;

// The provider's signing key, ours so that the test routes can sign too.
const signingKey = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
const signingJwk = { ...signingKey.export({ format: "jwk" }), kid: "provider-key", alg: "RS256", use: "sig" };
const foreignKey = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
// The `myelin-jwt` client's key: the provider knows the public half.
const clientKey = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
const clientPublicJwk = { ...clientKey.publicKey.export({ format: "jwk" }), kid: "client-key", alg: "ES256", use: "sig" };

// A 1x1 PNG.
const PICTURE = Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==",
  "base64",
);

const b64url = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

function signRs256(claims, key, kid) {
  const input = `${b64url({ alg: "RS256", typ: "JWT", kid })}.${b64url(claims)}`;
  return `${input}.${crypto.sign("sha256", Buffer.from(input), key).toString("base64url")}`;
}

let misbehave = "off";

const server = http.createServer();
server.listen(0, "127.0.0.1", () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    jwks: { keys: [signingJwk] },
    clients: [
      {
        client_id: "myelin",
        client_secret: "myelin-secret",
        redirect_uris: [redirectUri],
        grant_types: ["authorization_code"],
        response_types: ["code"],
        token_endpoint_auth_method: "client_secret_basic",
        backchannel_logout_uri: `${myelinBase}/_synapse/client/oidc/backchannel_logout`,
        backchannel_logout_session_required: true,
      },
      {
        client_id: "myelin-jwt",
        redirect_uris: [redirectUri],
        grant_types: ["authorization_code"],
        response_types: ["code"],
        token_endpoint_auth_method: "private_key_jwt",
        token_endpoint_auth_signing_alg: "ES256",
        jwks: { keys: [clientPublicJwk] },
      },
    ],
    scopes: ["openid", "profile", "email", "groups"],
    claims: {
      openid: ["sub"],
      profile: ["name", "preferred_username", "picture"],
      email: ["email"],
      groups: ["groups"],
    },
    // Claims in the ID token too, as Keycloak and Authentik send them.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: true },
      backchannelLogout: { enabled: true },
    },
    // Myelin is on loopback: without this, oidc-provider refuses to call
    // its back-channel logout URI (SSRF protection).
    fetch: (url, options) => {
      delete options.dispatcher;
      return globalThis.fetch(url, options);
    },
    findAccount: (ctx, id) => ({
      accountId: id,
      claims: () => ({
        sub: `subject-${id}`,
        preferred_username: id,
        name: `Display ${id}`,
        email: `${id}@example.org`,
        picture: `${issuer}/test/picture.png`,
        groups: id.startsWith("outsider") ? ["guests"] : ["staff", "users"],
      }),
    }),
  });

  // A misbehaving token endpoint, for the tests of Myelin's checks.
  provider.use(async (ctx, next) => {
    await next();
    if (misbehave === "off" || ctx.path !== "/token" || !ctx.body?.id_token) return;
    const [, payload] = ctx.body.id_token.split(".");
    const claims = JSON.parse(Buffer.from(payload, "base64url"));
    if (misbehave === "aud") claims.aud = "someone-else";
    if (misbehave === "nonce") claims.nonce = "not-the-nonce";
    ctx.body = { ...ctx.body, id_token: signRs256(claims, signingKey, "provider-key") };
  });

  const handle = provider.callback();
  server.on("request", (req, res) => {
    const url = new URL(req.url, issuer);
    if (!url.pathname.startsWith("/test/")) return handle(req, res);
    if (url.pathname === "/test/picture.png") {
      res.writeHead(200, { "content-type": "image/png" });
      return res.end(PICTURE);
    }
    if (req.method === "POST" && url.pathname === "/test/misbehave") {
      misbehave = url.searchParams.get("mode") ?? "off";
      res.writeHead(204);
      return res.end();
    }
    if (req.method === "POST" && url.pathname === "/test/logout_token") {
      let body = "";
      req.on("data", (chunk) => { body += chunk; });
      req.on("end", () => {
        const claims = JSON.parse(body);
        const foreign = url.searchParams.get("foreign") === "1";
        const token = signRs256(claims, foreign ? foreignKey : signingKey, "provider-key");
        res.writeHead(200, { "content-type": "text/plain" });
        res.end(token);
      });
      return undefined;
    }
    res.writeHead(404);
    return res.end();
  });

  console.log(JSON.stringify({
    port: server.address().port,
    client_key_pem: clientKey.privateKey.export({ type: "pkcs8", format: "pem" }),
  }));
});
