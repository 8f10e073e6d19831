// A real OpenID Connect provider (panva's oidc-provider) for the SSO tests,
// on loopback: one confidential client for Myelin, the development
// login/consent pages, and accounts whose claims derive from the login name
// (`outsider*` is not in the `staff` group). Prints its port once listening.
//
// Usage: MYELIN_NPM_DIR=<npm prefix> node provider.js <myelin callback URL>
// (scripts/test.sh installs oidc-provider under that prefix.)
import http from "node:http";
import { pathToFileURL } from "node:url";

const { default: Provider } = await import(
  pathToFileURL(`${process.env.MYELIN_NPM_DIR}/node_modules/oidc-provider/lib/index.js`).href
);

const redirectUri = process.argv[2];
const server = http.createServer();
server.listen(0, "127.0.0.1", () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: "myelin",
        client_secret: "myelin-secret",
        redirect_uris: [redirectUri],
        grant_types: ["authorization_code"],
        response_types: ["code"],
        token_endpoint_auth_method: "client_secret_basic",
      },
    ],
    scopes: ["openid", "profile", "email", "groups"],
    claims: {
      openid: ["sub"],
      profile: ["name", "preferred_username"],
      email: ["email"],
      groups: ["groups"],
    },
    // Claims in the ID token too, as Keycloak and Authentik send them.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    features: { devInteractions: { enabled: true } },
    findAccount: (ctx, id) => ({
      accountId: id,
      claims: () => ({
        sub: `subject-${id}`,
        preferred_username: id,
        name: `Display ${id}`,
        email: `${id}@example.org`,
        groups: id.startsWith("outsider") ? ["guests"] : ["staff", "users"],
      }),
    }),
  });
  server.on("request", provider.callback());
  console.log(server.address().port);
});
